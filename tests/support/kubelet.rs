//! The test plays kubelet: no kubelet can run here (it needs a container
//! runtime), so this does kubelet's part for one node against the real API
//! server, and nothing more — the Node object and its heartbeats (status and
//! Lease), driver registration (NodeGetInfo → topology labels and the
//! CSINode, as kubelet's plugin watcher does with node-driver-registrar's
//! socket), and the volume manager: for each pod bound to the node, stage
//! and publish its claims once their VolumeAttachment says attached, report
//! them in `status.volumesInUse`, mark the pod Running and Ready, grow the
//! filesystem when the PV grew, and on deletion unpublish, unstage and
//! remove the pod. Each step is the CSI call kubelet makes, with the paths
//! and arguments kubelet uses.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ebs_csi_driver::csi;
use ebs_csi_driver::csi::node_client::NodeClient;
use ebs_csi_driver::csi::volume_capability::{
    AccessMode, AccessType, BlockVolume, MountVolume, access_mode::Mode,
};
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::VolumeAttachment;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tonic::transport::Channel;

/// The driver's name (CSIDriver, PV `spec.csi.driver`).
pub const DRIVER: &str = "ebs.csi.aws.com";

/// One claim of one pod, published at `target`.
#[derive(Clone, Debug)]
pub struct Published {
    /// The pod's namespace/name.
    pub pod: String,
    /// The claim's name.
    pub claim: String,
    /// The PV.
    pub pv: String,
    /// The EBS volume id.
    pub volume_id: String,
    /// Where the pod would see it.
    pub target: PathBuf,
}

/// kubelet for one node.
pub struct Kubelet {
    /// The Node's name.
    pub node: String,
    /// kubelet's root dir (`/var/lib/kubelet` on a real node).
    pub root: PathBuf,
    client: kube::Client,
    csi: NodeClient<Channel>,
    /// pod uid → its published claims.
    pods: HashMap<String, Vec<Published>>,
    /// PV → staging path.
    staged: BTreeMap<String, PathBuf>,
    /// Whether the driver takes SINGLE_NODE_MULTI_WRITER (kubelet then maps
    /// ReadWriteOnce to it).
    multi_writer: bool,
    last_heartbeat: Option<Instant>,
    /// What happened, one line per step, for failure messages.
    pub events: Vec<String>,
}

/// kubelet's staging path for a CSI volume.
fn staging_path(root: &Path, handle: &str) -> PathBuf {
    let hash = hex(&Sha256::digest(handle.as_bytes()));
    root.join("plugins/kubernetes.io/csi")
        .join(DRIVER)
        .join(hash)
        .join("globalmount")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes of a Kubernetes quantity such as `20Gi` or `1073741824`.
pub fn quantity_bytes(q: &str) -> i64 {
    let units = [
        ("Ki", 1i64 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
    ];
    for (suffix, mult) in units {
        if let Some(n) = q.strip_suffix(suffix) {
            return n.parse::<i64>().expect("quantity") * mult;
        }
    }
    q.parse().unwrap_or_else(|_| panic!("quantity {q}"))
}

fn now() -> String {
    // RFC 3339 with seconds, what the API's metav1.Time takes.
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .expect("date");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl Kubelet {
    /// Creates the Node (with `labels` and `taints`, Ready, the
    /// attach/detach controller in charge of its volumes) and its Lease.
    pub async fn register_node(
        client: kube::Client,
        csi: Channel,
        node: &str,
        provider_id: &str,
        labels: BTreeMap<String, String>,
        taints: Value,
        root: &Path,
    ) -> Kubelet {
        let nodes: Api<Node> = Api::all(client.clone());
        let object: Node = serde_json::from_value(json!({
            "metadata": {"name": node, "labels": labels, "annotations": {
                // kubelet's default: attach/detach is the controller's job.
                "volumes.kubernetes.io/controller-managed-attach-detach": "true"}},
            "spec": {"providerID": provider_id, "taints": taints},
        }))
        .expect("node object");
        nodes
            .create(&PostParams::default(), &object)
            .await
            .expect("create Node");
        let mut csi = NodeClient::new(csi);
        let caps = csi
            .node_get_capabilities(csi::NodeGetCapabilitiesRequest {})
            .await
            .expect("NodeGetCapabilities")
            .into_inner();
        let multi_writer = caps.capabilities.iter().any(|c| {
            matches!(&c.r#type, Some(csi::node_service_capability::Type::Rpc(r))
                if r.r#type == csi::node_service_capability::rpc::Type::SingleNodeMultiWriter as i32)
        });
        let mut kubelet = Kubelet {
            node: node.into(),
            root: root.to_path_buf(),
            client,
            csi,
            pods: HashMap::new(),
            staged: BTreeMap::new(),
            multi_writer,
            last_heartbeat: None,
            events: Vec::new(),
        };
        let status = json!({"status": {
            "capacity": {"cpu": "16", "memory": "64Gi", "pods": "110"},
            "allocatable": {"cpu": "16", "memory": "64Gi", "pods": "110"},
            "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux",
                "kubeletVersion": "v1.36.1", "containerRuntimeVersion": "none://e2e",
                "kernelVersion": "", "osImage": "", "kubeProxyVersion": "",
                "machineID": "", "systemUUID": "", "bootID": ""},
        }});
        nodes
            .patch_status(node, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .expect("node status");
        kubelet.heartbeat().await.expect("first heartbeat");
        kubelet
    }

    /// Renews the Ready condition and the node Lease, as kubelet does every
    /// 10 s; without them the node-lifecycle controller would taint the node.
    async fn heartbeat(&mut self) -> Result<(), String> {
        let t = now();
        let nodes: Api<Node> = Api::all(self.client.clone());
        let status = json!({"status": {"conditions": [{
            "type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "the e2e test plays kubelet", "lastHeartbeatTime": t,
            "lastTransitionTime": t}]}});
        nodes
            .patch_status(
                &self.node,
                &PatchParams::default(),
                &Patch::Strategic(&status),
            )
            .await
            .map_err(|e| format!("node heartbeat: {e}"))?;
        let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
            Api::namespaced(self.client.clone(), "kube-node-lease");
        let micro = t.replace('Z', ".000000Z");
        let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": self.node, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": self.node, "leaseDurationSeconds": 40, "renewTime": micro}});
        leases
            .patch(
                &self.node,
                &PatchParams::apply("kubelet").force(),
                &Patch::Apply(&lease),
            )
            .await
            .map_err(|e| format!("node lease: {e}"))?;
        self.last_heartbeat = Some(Instant::now());
        Ok(())
    }

    /// Driver registration as kubelet does it once node-driver-registrar
    /// has shown it the socket: NodeGetInfo, the topology segments as Node
    /// labels, the driver in the CSINode with its node id and attach limit.
    pub async fn register_driver(&mut self) -> csi::NodeGetInfoResponse {
        let info = self
            .csi
            .node_get_info(csi::NodeGetInfoRequest {})
            .await
            .expect("NodeGetInfo")
            .into_inner();
        let segments = info
            .accessible_topology
            .as_ref()
            .map(|t| t.segments.clone())
            .unwrap_or_default();
        let nodes: Api<Node> = Api::all(self.client.clone());
        nodes
            .patch(
                &self.node,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": segments}})),
            )
            .await
            .expect("topology labels");
        let uid = nodes.get(&self.node).await.expect("node").metadata.uid;
        let mut keys: Vec<&String> = segments.keys().collect();
        keys.sort();
        let csinode = json!({"apiVersion": "storage.k8s.io/v1", "kind": "CSINode",
            "metadata": {"name": self.node, "ownerReferences": [{"apiVersion": "v1",
                "kind": "Node", "name": self.node, "uid": uid}]},
            "spec": {"drivers": [{"name": DRIVER, "nodeID": info.node_id,
                "topologyKeys": keys, "allocatable": {"count": info.max_volumes_per_node}}]}});
        let csinodes: Api<k8s_openapi::api::storage::v1::CSINode> = Api::all(self.client.clone());
        csinodes
            .create(
                &PostParams::default(),
                &serde_json::from_value(csinode).expect("csinode"),
            )
            .await
            .expect("create CSINode");
        self.events
            .push(format!("registered {DRIVER} on {}: {info:?}", self.node));
        info
    }

    /// Every claim published now.
    pub fn published(&self) -> Vec<Published> {
        let mut all: Vec<Published> = self.pods.values().flatten().cloned().collect();
        all.sort_by(|a, b| a.pod.cmp(&b.pod).then(a.claim.cmp(&b.claim)));
        all
    }

    /// The claim `claim` of pod `namespace/pod`, if published.
    pub fn find(&self, pod: &str, claim: &str) -> Option<Published> {
        self.published()
            .into_iter()
            .find(|p| p.pod == pod && p.claim == claim)
    }

    /// What is staged now: PV → staging path.
    pub fn staged(&self) -> &BTreeMap<String, PathBuf> {
        &self.staged
    }

    /// One pass of kubelet's loops. Errors are steps that could not be made
    /// yet or failed; the next pass tries again.
    pub async fn sync(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        if self
            .last_heartbeat
            .is_none_or(|t| t.elapsed() > Duration::from_secs(10))
            && let Err(e) = self.heartbeat().await
        {
            errors.push(e);
        }
        let pods: Api<Pod> = Api::all(self.client.clone());
        let list = match pods
            .list(&ListParams::default().fields(&format!("spec.nodeName={}", self.node)))
            .await
        {
            Ok(l) => l.items,
            Err(e) => return vec![format!("list pods: {e}")],
        };
        let live: BTreeSet<String> = list
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| p.metadata.uid.clone())
            .collect();
        // Pods going away (or gone): unpublish, unstage, then remove.
        let leaving: Vec<String> = self
            .pods
            .keys()
            .filter(|uid| !live.contains(*uid))
            .cloned()
            .collect();
        for uid in leaving {
            if let Err(e) = self.tear_down(&uid).await {
                errors.push(e);
            }
        }
        if let Err(e) = self.report_in_use().await {
            errors.push(e);
        }
        for pod in &list {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            let name = pod.metadata.name.clone().unwrap_or_default();
            let ns = pod.metadata.namespace.clone().unwrap_or_default();
            if pod.metadata.deletion_timestamp.is_some() {
                if !self.pods.contains_key(&uid) {
                    let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
                    let dp = DeleteParams {
                        grace_period_seconds: Some(0),
                        ..DeleteParams::default()
                    };
                    match api.delete(&name, &dp).await {
                        Ok(_) => self.events.push(format!("removed pod {ns}/{name}")),
                        Err(kube::Error::Api(s)) if s.code == 404 => {}
                        Err(e) => errors.push(format!("delete pod {ns}/{name}: {e}")),
                    }
                }
                continue;
            }
            if self.pods.contains_key(&uid) {
                continue;
            }
            match self.set_up(pod).await {
                Ok(published) => {
                    self.pods.insert(uid, published);
                    if let Err(e) = self.report_in_use().await {
                        errors.push(e);
                    }
                    if let Err(e) = self.mark_ready(&ns, &name).await {
                        errors.push(e);
                    }
                }
                Err(e) => errors.push(format!("pod {ns}/{name}: {e}")),
            }
        }
        if let Err(e) = self.expand().await {
            errors.push(e);
        }
        errors
    }

    /// Stages (once per PV) and publishes every claim of `pod`; an error
    /// when one is not bound or attached yet (nothing is left half-done
    /// that the next pass would not finish).
    async fn set_up(&mut self, pod: &Pod) -> Result<Vec<Published>, String> {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let claims: Vec<(String, String)> = pod
            .spec
            .as_ref()
            .map(|s| {
                s.volumes
                    .iter()
                    .flatten()
                    .filter_map(|v| {
                        v.persistent_volume_claim
                            .as_ref()
                            .map(|c| (v.name.clone(), c.claim_name.clone()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut out = Vec::new();
        for (_volume, claim) in claims {
            let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &ns);
            let pvc = pvcs
                .get(&claim)
                .await
                .map_err(|e| format!("claim {claim}: {e}"))?;
            let pv_name = pvc
                .spec
                .as_ref()
                .and_then(|s| s.volume_name.clone())
                .filter(|_| pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"))
                .ok_or(format!("claim {claim} not bound yet"))?;
            let pvs: Api<PersistentVolume> = Api::all(self.client.clone());
            let pv = pvs
                .get(&pv_name)
                .await
                .map_err(|e| format!("pv {pv_name}: {e}"))?;
            let spec = pv.spec.clone().unwrap_or_default();
            let source = spec.csi.clone().ok_or(format!("pv {pv_name} is not CSI"))?;
            let publish_context = self.attachment(&pv_name).await?;
            let block = spec.volume_mode.as_deref() == Some("Block");
            let capability = self.capability(&spec, block, source.fs_type.clone());
            let context: HashMap<String, String> = source
                .volume_attributes
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect();
            let staging = staging_path(&self.root, &source.volume_handle);
            if !self.staged.contains_key(&pv_name) {
                std::fs::create_dir_all(&staging).map_err(|e| e.to_string())?;
                self.csi
                    .node_stage_volume(csi::NodeStageVolumeRequest {
                        volume_id: source.volume_handle.clone(),
                        publish_context: publish_context.clone(),
                        staging_target_path: staging.display().to_string(),
                        volume_capability: Some(capability.clone()),
                        secrets: Default::default(),
                        volume_context: context.clone(),
                    })
                    .await
                    .map_err(|e| format!("NodeStageVolume {pv_name}: {e:?}"))?;
                self.staged.insert(pv_name.clone(), staging.clone());
                self.events
                    .push(format!("staged {pv_name} ({})", source.volume_handle));
            }
            let target = self
                .root
                .join("pods")
                .join(&uid)
                .join("volumes/kubernetes.io~csi")
                .join(&pv_name)
                .join("mount");
            std::fs::create_dir_all(target.parent().expect("parent")).map_err(|e| e.to_string())?;
            self.csi
                .node_publish_volume(csi::NodePublishVolumeRequest {
                    volume_id: source.volume_handle.clone(),
                    publish_context,
                    staging_target_path: staging.display().to_string(),
                    target_path: target.display().to_string(),
                    volume_capability: Some(capability),
                    readonly: false,
                    secrets: Default::default(),
                    volume_context: context,
                })
                .await
                .map_err(|e| format!("NodePublishVolume {pv_name}: {e:?}"))?;
            self.events
                .push(format!("published {pv_name} for {ns}/{name}"));
            out.push(Published {
                pod: format!("{ns}/{name}"),
                claim,
                pv: pv_name,
                volume_id: source.volume_handle,
                target,
            });
        }
        Ok(out)
    }

    /// The publish context of the PV's attachment to this node, once the
    /// external-attacher has marked it attached.
    async fn attachment(&self, pv: &str) -> Result<HashMap<String, String>, String> {
        let vas: Api<VolumeAttachment> = Api::all(self.client.clone());
        let list = vas
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        let va = list
            .items
            .into_iter()
            .find(|va| {
                va.spec.node_name == self.node
                    && va.spec.source.persistent_volume_name.as_deref() == Some(pv)
            })
            .ok_or(format!("no VolumeAttachment for {pv} yet"))?;
        let status = va.status.unwrap_or_default();
        if !status.attached {
            return Err(format!("VolumeAttachment for {pv} not attached yet"));
        }
        Ok(status
            .attachment_metadata
            .unwrap_or_default()
            .into_iter()
            .collect())
    }

    /// The capability kubelet derives from the PV.
    fn capability(
        &self,
        spec: &k8s_openapi::api::core::v1::PersistentVolumeSpec,
        block: bool,
        fs_type: Option<String>,
    ) -> csi::VolumeCapability {
        let modes = spec.access_modes.clone().unwrap_or_default();
        let mode = if modes.iter().any(|m| m == "ReadWriteOncePod") {
            Mode::SingleNodeSingleWriter
        } else if modes.iter().any(|m| m == "ReadWriteMany") {
            Mode::MultiNodeMultiWriter
        } else if self.multi_writer {
            Mode::SingleNodeMultiWriter
        } else {
            Mode::SingleNodeWriter
        };
        csi::VolumeCapability {
            access_mode: Some(AccessMode { mode: mode as i32 }),
            access_type: Some(if block {
                AccessType::Block(BlockVolume {})
            } else {
                AccessType::Mount(MountVolume {
                    fs_type: fs_type.unwrap_or_default(),
                    mount_flags: spec.mount_options.clone().unwrap_or_default(),
                    ..Default::default()
                })
            }),
        }
    }

    /// Unpublishes a leaving pod's claims and unstages what no pod uses.
    async fn tear_down(&mut self, uid: &str) -> Result<(), String> {
        let published = self.pods.get(uid).cloned().unwrap_or_default();
        for p in &published {
            self.csi
                .node_unpublish_volume(csi::NodeUnpublishVolumeRequest {
                    volume_id: p.volume_id.clone(),
                    target_path: p.target.display().to_string(),
                })
                .await
                .map_err(|e| format!("NodeUnpublishVolume {}: {e:?}", p.pv))?;
            self.events
                .push(format!("unpublished {} for {}", p.pv, p.pod));
        }
        self.pods.remove(uid);
        let in_use: BTreeSet<String> = self.pods.values().flatten().map(|p| p.pv.clone()).collect();
        for p in published {
            if in_use.contains(&p.pv) {
                continue;
            }
            if let Some(staging) = self.staged.get(&p.pv).cloned() {
                self.csi
                    .node_unstage_volume(csi::NodeUnstageVolumeRequest {
                        volume_id: p.volume_id.clone(),
                        staging_target_path: staging.display().to_string(),
                    })
                    .await
                    .map_err(|e| format!("NodeUnstageVolume {}: {e:?}", p.pv))?;
                self.staged.remove(&p.pv);
                self.events.push(format!("unstaged {}", p.pv));
            }
        }
        Ok(())
    }

    /// `status.volumesInUse`: what kubelet has mounted, so the attach/detach
    /// controller does not detach it under a mounted filesystem.
    async fn report_in_use(&self) -> Result<(), String> {
        let pvs: Api<PersistentVolume> = Api::all(self.client.clone());
        let mut in_use = Vec::new();
        for pv in self.staged.keys() {
            if let Ok(pv) = pvs.get(pv).await
                && let Some(csi) = pv.spec.and_then(|s| s.csi)
            {
                in_use.push(format!("kubernetes.io/csi/{DRIVER}^{}", csi.volume_handle));
            }
        }
        in_use.sort();
        let nodes: Api<Node> = Api::all(self.client.clone());
        nodes
            .patch_status(
                &self.node,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"volumesInUse": in_use}})),
            )
            .await
            .map_err(|e| format!("volumesInUse: {e}"))?;
        Ok(())
    }

    /// The pod's containers would run now: Running and Ready.
    async fn mark_ready(&mut self, ns: &str, name: &str) -> Result<(), String> {
        let t = now();
        let cond = |ty: &str| json!({"type": ty, "status": "True", "lastTransitionTime": t});
        let status = json!({"status": {"phase": "Running", "startTime": t, "conditions": [
            cond("PodReadyToStartContainers"), cond("Initialized"), cond("ContainersReady"),
            cond("Ready"), cond("PodScheduled")]}});
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        api.patch_status(name, &PatchParams::default(), &Patch::Strategic(&status))
            .await
            .map_err(|e| format!("pod {ns}/{name} status: {e}"))?;
        self.events.push(format!("pod {ns}/{name} running"));
        Ok(())
    }

    /// Node-side expansion: a staged PV whose capacity outgrew its claim's
    /// status gets NodeExpandVolume, then the claim's status is brought up
    /// to date, as kubelet's volume manager does.
    async fn expand(&mut self) -> Result<(), String> {
        let pvs: Api<PersistentVolume> = Api::all(self.client.clone());
        for p in self.published() {
            let Some(staging) = self.staged.get(&p.pv).cloned() else {
                continue;
            };
            let pv = pvs.get(&p.pv).await.map_err(|e| e.to_string())?;
            let spec = pv.spec.clone().unwrap_or_default();
            let want = spec
                .capacity
                .as_ref()
                .and_then(|c| c.get("storage"))
                .map(|q| quantity_bytes(&q.0))
                .unwrap_or(0);
            let (ns, _) = p.pod.split_once('/').expect("ns/name");
            let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), ns);
            let pvc = pvcs.get(&p.claim).await.map_err(|e| e.to_string())?;
            let status = pvc.status.clone().unwrap_or_default();
            let have = status
                .capacity
                .as_ref()
                .and_then(|c| c.get("storage"))
                .map(|q| quantity_bytes(&q.0))
                .unwrap_or(0);
            let resizing = status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "FileSystemResizePending");
            if want <= have || !resizing {
                continue;
            }
            let fs = spec.csi.as_ref().and_then(|c| c.fs_type.clone());
            let block = spec.volume_mode.as_deref() == Some("Block");
            let reply = self
                .csi
                .node_expand_volume(csi::NodeExpandVolumeRequest {
                    volume_id: p.volume_id.clone(),
                    volume_path: p.target.display().to_string(),
                    capacity_range: Some(csi::CapacityRange {
                        required_bytes: want,
                        limit_bytes: 0,
                    }),
                    staging_target_path: staging.display().to_string(),
                    volume_capability: Some(self.capability(&spec, block, fs)),
                    secrets: Default::default(),
                })
                .await
                .map_err(|e| format!("NodeExpandVolume {}: {e:?}", p.pv))?
                .into_inner();
            self.events.push(format!(
                "expanded {} to {} bytes",
                p.pv, reply.capacity_bytes
            ));
            let conditions: Vec<Value> = status
                .conditions
                .iter()
                .flatten()
                .filter(|c| c.type_ != "FileSystemResizePending")
                .map(|c| serde_json::to_value(c).expect("condition"))
                .collect();
            let storage = spec
                .capacity
                .as_ref()
                .and_then(|c| c.get("storage"))
                .map(|q| q.0.clone());
            let patch = json!({"status": {"capacity": {"storage": storage},
                "conditions": conditions, "allocatedResourceStatuses": {"storage": null}}});
            pvcs.patch_status(&p.claim, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|e| format!("claim {} status: {e}", p.claim))?;
        }
        Ok(())
    }
}
