//! The driver in a real Kubernetes control plane, driven by the real CSI
//! sidecars: etcd, kube-apiserver (RBAC on), kube-controller-manager (PV
//! binder, attach/detach, StatefulSet, node lifecycle…) and kube-scheduler
//! v1.36.1, external-provisioner v6.3.0, external-attacher v4.12.0,
//! external-resizer v1.14.0, csi-snapshotter and snapshot-controller v8.6.0,
//! all built from the Go module proxy (`tests/kube/build.sh`), run as local
//! processes on loopback; the EC2 emulator and, as root, real loop devices.
//!
//! Our deploy/ RBAC is applied and every part of ours runs as its own
//! service account with a TokenRequest token (the controller sidecars as
//! `ebs-csi-controller-sa`, the node plugin and its pre-stop hook as
//! `ebs-csi-node-sa`), so a missing permission fails here. The sidecars run
//! with the flags the Helm chart gives them. No kubelet can run here (no
//! container runtime), so the test plays kubelet (`support/kubelet.rs`) and
//! makes the node's CSI calls itself.
//!
//! What it walks through: the startup taint removed by the node plugin once
//! the CSINode carries the driver; the examples' StatefulSets (MySQL,
//! Elasticsearch with its own xfs class, ZooKeeper and Kafka with two claims
//! each) and an in-tree style io1 `iopsPerGB` class provisioned on
//! WaitForFirstConsumer, attached, staged and published; EC2 holding the
//! parameters and the tags from the provisioner's metadata; an online xfs
//! expansion through external-resizer; a snapshot through the snapshot
//! controller and its restore with the data intact; the pre-stop hook of a
//! cordoned node waiting until the volumes are detached; and nothing left in
//! EC2, the API or the host at the end.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::cluster::{Cluster, Tools};
use support::kubelet::{Kubelet, quantity_bytes};
use support::node::skip_without_root;
use support::{DRIVER_BIN, Ec2Sim, SimOptions, connect};
use tokio::sync::Mutex;

const NODE: &str = "ip-10-0-7-21.ec2.internal";
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The StatefulSets of examples/ and the claims each replica gets.
const STATEFULSETS: &[(&str, &str, u32, &[&str])] = &[
    ("examples/mysql/mysql.yaml", "mysql", 1, &["data"]),
    (
        "examples/elasticsearch/elasticsearch.yaml",
        "elasticsearch",
        3,
        &["data"],
    ),
    (
        "examples/kafka/zookeeper.yaml",
        "zookeeper",
        3,
        &["data", "datalog"],
    ),
    (
        "examples/kafka/kafka.yaml",
        "kafka",
        3,
        &["data-0", "data-1"],
    ),
];

/// The in-tree style class the issue's users still have.
const IO1_CLASS: &str = r#"{"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
  "metadata": {"name": "io1-legacy"}, "provisioner": "ebs.csi.aws.com",
  "volumeBindingMode": "WaitForFirstConsumer", "allowVolumeExpansion": true,
  "parameters": {"type": "io1", "iopsPerGB": "10", "fsType": "ext4"}}"#;

/// Skips (saying why) when this machine cannot run the test; fails
/// instead when `KUBE_E2E_REQUIRED=1` (tests/run-all.sh in CI sets it).
fn tools_or_skip() -> Option<Tools> {
    let required = std::env::var("KUBE_E2E_REQUIRED").as_deref() == Ok("1");
    let why = if skip_without_root("kube_e2e") {
        Some("needs root".to_string())
    } else {
        Tools::find().err()
    };
    match why {
        None => Tools::find().ok(),
        Some(why) if required => panic!("kube_e2e cannot run: {why}"),
        Some(why) => {
            eprintln!("SKIP kube_e2e: {why}");
            None
        }
    }
}

/// The test's world: the cluster, the emulator, kubelet, and what to print
/// when a wait times out.
struct World {
    cluster: Cluster,
    sim: Ec2Sim,
    kubelet: Arc<Mutex<Kubelet>>,
    /// The last errors of kubelet's passes (steps it could not make yet).
    kubelet_errors: Arc<Mutex<Vec<String>>>,
    controller_log: std::path::PathBuf,
    node_log: std::path::PathBuf,
    started: Instant,
}

impl World {
    fn phase(&self, what: &str) {
        eprintln!(
            "kube_e2e [{:6.1} s] {what}",
            self.started.elapsed().as_secs_f64()
        );
    }

    async fn diagnostics(&self) -> String {
        let tail = |p: &Path| {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(30)..].join("\n")
        };
        let k = self.kubelet.lock().await;
        format!(
            "{}\n---- driver (controller):\n{}\n---- driver (node):\n{}\n---- kubelet events:\n{}\n\
             ---- kubelet errors of its last pass:\n{}\n---- pods, claims, attachments:\n{}",
            self.cluster.logs(),
            tail(&self.controller_log),
            tail(&self.node_log),
            k.events[k.events.len().saturating_sub(30)..].join("\n"),
            self.kubelet_errors.lock().await.join("\n"),
            self.cluster
                .kubectl(
                    &[
                        "get",
                        "pods,pvc,pv,volumeattachments,volumesnapshots",
                        "-A",
                        "-o",
                        "wide"
                    ],
                    None
                )
                .unwrap_or_else(|e| e),
        )
    }

    /// Polls `done` until it gives a value; panics with every log after `limit`.
    async fn until<T>(
        &mut self,
        what: &str,
        limit: Duration,
        mut done: impl AsyncFnMut(&World) -> Option<T>,
    ) -> T {
        let start = Instant::now();
        loop {
            if let Some(v) = done(self).await {
                self.phase(&format!("{what}: {:.1} s", start.elapsed().as_secs_f64()));
                return v;
            }
            self.cluster.assert_alive();
            if start.elapsed() > limit {
                panic!(
                    "timed out after {limit:?} waiting for {what}\n{}",
                    self.diagnostics().await
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn json(&self, args: &[&str]) -> Option<Value> {
        self.cluster.get_json(args)
    }

    fn kubectl(&self, args: &[&str]) -> String {
        self.cluster
            .kubectl(args, None)
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Drop for World {
    /// Whatever kubelet still has mounted (a failed run) is unmounted before
    /// the emulator, dropped next, detaches the loop devices under it.
    fn drop(&mut self) {
        let root = self
            .cluster
            .dir
            .path()
            .join("kubelet")
            .display()
            .to_string();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut paths: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|p| p.starts_with(&root))
            .collect();
        paths.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in paths {
            let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Objects of a multi-document YAML text, nulls left out.
fn yaml_objects(text: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(text)
        .expect("YAML")
        .into_iter()
        .filter(|v| !v.is_null())
        .collect()
}

fn output(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `args` of the chart's container `name` with `$(VAR)` replaced.
fn container_args(deployment: &Value, name: &str, vars: &[(&str, &str)]) -> Vec<String> {
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers");
    let c = containers
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("the chart has no container {name}"));
    c["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| {
            let mut a = a.as_str().expect("arg").to_string();
            for (k, v) in vars {
                a = a.replace(&format!("$({k})"), v);
            }
            a
        })
        .collect()
}

fn tag(v: &aws_sdk_ec2::types::Volume, key: &str) -> Option<String> {
    v.tags()
        .iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value().map(str::to_string))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_through_the_real_control_plane_and_sidecars() {
    let Some(tools) = tools_or_skip() else { return };
    let started = Instant::now();
    let sim = tokio::task::spawn_blocking(|| Ec2Sim::start_with(SimOptions::default()))
        .await
        .expect("ec2sim");
    assert!(sim.devices, "the emulator makes loop devices as root");
    let mut cluster = Cluster::start(tools.clone()).await;
    eprintln!(
        "kube_e2e [{:6.1} s] control plane ready",
        started.elapsed().as_secs_f64()
    );

    // ---- our objects: the snapshot CRDs, deploy/ RBAC and CSIDriver, classes
    for crd in std::fs::read_dir(tools.bin.join("crds")).expect("crds dir") {
        let text = std::fs::read_to_string(crd.expect("crd").path()).expect("crd");
        cluster.apply(&yaml_objects(&text));
    }
    let base = output(
        std::process::Command::new(&tools.kubectl)
            .args(["kustomize", &format!("{ROOT}/deploy/kubernetes/base")]),
    );
    let ours: Vec<Value> = yaml_objects(&base)
        .into_iter()
        .filter(|o| {
            !matches!(
                o["kind"].as_str(),
                Some("Deployment" | "DaemonSet" | "PodDisruptionBudget")
            )
        })
        .collect();
    assert!(
        ours.iter().any(|o| o["kind"] == "ClusterRole"),
        "deploy/ has RBAC"
    );
    cluster.apply(&ours);
    cluster
        .wait_for("the snapshot CRDs", Duration::from_secs(30), |c| {
            c.kubectl(&["get", "volumesnapshotclasses"], None).is_ok()
        })
        .await;
    for f in [
        "examples/storageclass.yaml",
        "examples/volumesnapshotclass.yaml",
    ] {
        cluster.apply(&yaml_objects(
            &std::fs::read_to_string(format!("{ROOT}/{f}")).unwrap(),
        ));
    }
    cluster.apply(&[serde_json::from_str(IO1_CLASS).unwrap()]);

    // ---- the controller: our driver and the sidecars with the chart's flags
    let helm_home = cluster.dir.path().join("helm");
    let chart = output(
        std::process::Command::new(&tools.helm)
            .args([
                "template",
                "ebs-csi-driver",
                &format!("{ROOT}/charts/ebs-csi-driver"),
                "--namespace",
                "kube-system",
            ])
            .env("HELM_CACHE_HOME", helm_home.join("cache"))
            .env("HELM_CONFIG_HOME", helm_home.join("config"))
            .env("HELM_DATA_HOME", helm_home.join("data")),
    );
    let deployment = yaml_objects(&chart)
        .into_iter()
        .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == "ebs-csi-controller")
        .expect("the chart's controller Deployment");
    let socket_dir = cluster.dir.path().join("pluginproxy");
    std::fs::create_dir_all(&socket_dir).unwrap();
    let socket = socket_dir.join("csi.sock");
    let endpoint = format!("unix://{}", socket.display());
    let controller_log = cluster.dir.path().join("driver-controller.log");
    let args = container_args(&deployment, "ebs-plugin", &[("CSI_ENDPOINT", &endpoint)]);
    let mut env = sim.driver_env();
    env.push(("CSI_NODE_NAME".into(), NODE.into()));
    cluster.spawn("driver-controller", Path::new(DRIVER_BIN), &args, &env);
    let sa = cluster.kubeconfig_for("kube-system", "ebs-csi-controller-sa");
    let address = socket.display().to_string();
    for sidecar in [
        "csi-provisioner",
        "csi-attacher",
        "csi-snapshotter",
        "csi-resizer",
    ] {
        let mut args = container_args(&deployment, sidecar, &[("ADDRESS", &address)]);
        args.push(format!("--kubeconfig={}", sa.display()));
        // In a pod the namespace comes from the service account's mount.
        args.push("--leader-election-namespace=kube-system".into());
        let bin = tools.bin.join(sidecar);
        cluster.spawn(sidecar, &bin, &args, &[]);
    }
    // The snapshot controller is the cluster's, not ours: it runs as admin.
    let admin = cluster.admin.display().to_string();
    let bin = tools.bin.join("snapshot-controller");
    cluster.spawn(
        "snapshot-controller",
        &bin,
        &[
            format!("--kubeconfig={admin}"),
            "--leader-election=false".into(),
        ],
        &[],
    );

    // ---- the node: the Node object, our node plugin, driver registration
    let node_socket = cluster.dir.path().join("node.sock");
    let node_sa = cluster.kubeconfig_for("kube-system", "ebs-csi-node-sa");
    let chart_node = yaml_objects(&chart)
        .into_iter()
        .find(|o| o["kind"] == "DaemonSet" && o["metadata"]["name"] == "ebs-csi-node")
        .expect("the chart's node DaemonSet");
    let mut args = container_args(
        &chart_node,
        "ebs-plugin",
        &[("CSI_ENDPOINT", &format!("unix:{}", node_socket.display()))],
    );
    args.extend([
        format!("--kubeconfig={}", node_sa.display()),
        format!("--device-dir={}", sim.device_dir.display()),
    ]);
    let mut node_env = sim.driver_env();
    node_env.push(("CSI_NODE_NAME".into(), NODE.into()));
    let labels: BTreeMap<String, String> = [
        ("kubernetes.io/hostname", NODE),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", "amd64"),
        ("node.kubernetes.io/instance-type", "m5.large"),
        ("topology.kubernetes.io/region", sim.region.as_str()),
        ("topology.kubernetes.io/zone", sim.zone.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    // Nodes start with the driver's startup taint (the reference's advice for
    // node groups): pods stay off them until the node plugin is ready.
    let taints = json!([{"key": "ebs.csi.aws.com/agent-not-ready", "effect": "NoExecute"}]);
    let provider_id = format!("aws:///{}/{}", sim.zone, sim.instance_id);
    // The Node exists before the plugin starts, as on a real node.
    let kube_root = cluster.dir.path().join("kubelet");
    cluster.spawn("driver-node", Path::new(DRIVER_BIN), &args, &node_env);
    let node_log = cluster.dir.path().join("driver-node.log");
    cluster
        .wait_for("the node plugin's socket", Duration::from_secs(30), |_| {
            node_socket.exists()
        })
        .await;
    let channel = connect(&node_socket).await;
    let kubelet = Kubelet::register_node(
        cluster.client.clone(),
        channel,
        NODE,
        &provider_id,
        labels,
        taints,
        &kube_root,
    )
    .await;
    let mut world = World {
        cluster,
        sim,
        kubelet: Arc::new(Mutex::new(kubelet)),
        kubelet_errors: Arc::new(Mutex::new(Vec::new())),
        controller_log,
        node_log,
        started,
    };
    world.phase("controller, sidecars, node plugin and Node up");
    let info = world
        .until(
            "the node plugin knows its instance",
            Duration::from_secs(60),
            async |w| {
                let mut k = w.kubelet.lock().await;
                let ready = std::fs::read_to_string(&w.node_log)
                    .unwrap_or_default()
                    .contains("instance identity loaded");
                if ready {
                    Some(k.register_driver().await)
                } else {
                    None
                }
            },
        )
        .await;
    assert_eq!(info.node_id, world.sim.instance_id);

    // The node plugin removes its startup taint once the CSINode has it.
    world
        .until(
            "the startup taint removed by the node plugin",
            Duration::from_secs(60),
            async |w| {
                let node = w.json(&["node", NODE])?;
                let tainted = node["spec"]["taints"].as_array().is_some_and(|t| {
                    t.iter()
                        .any(|t| t["key"] == "ebs.csi.aws.com/agent-not-ready")
                });
                (!tainted).then_some(())
            },
        )
        .await;

    // kubelet's loops run from here on.
    let (k, errs) = (world.kubelet.clone(), world.kubelet_errors.clone());
    let kubelet_task = tokio::spawn(async move {
        loop {
            let errors = k.lock().await.sync().await;
            *errs.lock().await = errors;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });

    workloads(&mut world).await;
    expansion(&mut world).await;
    snapshot_and_restore(&mut world).await;
    pre_stop_and_teardown(&mut world).await;
    kubelet_task.abort();
    world.phase("done");
}

/// The StatefulSets and the io1 claim: provisioned, attached, mounted, with
/// the class's parameters and the provisioner's tags in EC2.
async fn workloads(w: &mut World) {
    for (file, _, _, _) in STATEFULSETS {
        w.kubectl(&["apply", "-f", &format!("{ROOT}/{file}")]);
    }
    let io1 = json!([
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "legacy-io1", "namespace": "default"},
         "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "io1-legacy",
                  "resources": {"requests": {"storage": "10Gi"}}}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "legacy-io1", "namespace": "default"},
         "spec": {"containers": [{"name": "app", "image": "busybox", "volumeMounts": [{"name": "d", "mountPath": "/d"}]}],
                  "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "legacy-io1"}}]}}
    ]);
    w.cluster.apply(io1.as_array().unwrap());
    let replicas: u32 = STATEFULSETS.iter().map(|s| s.2).sum();
    w.until(
        &format!("{replicas} StatefulSet pods and the io1 pod Running on published volumes"),
        Duration::from_secs(600),
        async |w| {
            let pods = w.json(&["pods", "-n", "default"])?;
            let ready = pods["items"]
                .as_array()?
                .iter()
                .filter(|p| p["status"]["phase"] == "Running")
                .count();
            (ready as u32 == replicas + 1).then_some(())
        },
    )
    .await;

    let volumes = w.sim.all_volumes().await;
    let k = w.kubelet.lock().await;
    let published = k.published();
    drop(k);
    let claims: u32 = STATEFULSETS
        .iter()
        .map(|s| s.2 * s.3.len() as u32)
        .sum::<u32>()
        + 1;
    assert_eq!(
        published.len() as u32,
        claims,
        "every claim published: {published:#?}"
    );
    assert_eq!(volumes.len() as u32, claims, "one EBS volume per claim");
    for p in &published {
        let v = volumes
            .iter()
            .find(|v| v.volume_id() == Some(p.volume_id.as_str()))
            .unwrap_or_else(|| panic!("{} has no EBS volume", p.pv));
        let pvc_name = p.claim.as_str();
        assert_eq!(
            tag(v, "CSIVolumeName").as_deref(),
            Some(p.pv.as_str()),
            "{pvc_name}"
        );
        assert_eq!(
            tag(v, "kubernetes.io/created-for/pvc/name").as_deref(),
            Some(pvc_name)
        );
        assert_eq!(
            tag(v, "kubernetes.io/created-for/pvc/namespace").as_deref(),
            Some("default")
        );
        assert_eq!(
            tag(v, "kubernetes.io/created-for/pv/name").as_deref(),
            Some(p.pv.as_str())
        );
        assert_eq!(tag(v, "ebs.csi.aws.com/cluster").as_deref(), Some("true"));
        assert_eq!(
            v.availability_zone(),
            Some(w.sim.zone.as_str()),
            "{pvc_name}: the node's zone"
        );
        let pv = w.json(&["pv", &p.pv]).expect("pv");
        let class = pv["spec"]["storageClassName"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let size = pv["spec"]["capacity"]["storage"]
            .as_str()
            .map(quantity_bytes)
            .unwrap()
            >> 30;
        assert_eq!(v.size(), Some(size as i32), "{pvc_name}");
        let (ty, iops, throughput, encrypted, fs) = match class.as_str() {
            "ebs-sc" => ("gp3", 3000, Some(125), true, "ext4"),
            "ebs-gp3-search" => ("gp3", 6000, Some(500), true, "xfs"),
            "io1-legacy" => ("io1", 10 * size as i32, None, false, "ext4"),
            other => panic!("{pvc_name}: unexpected class {other}"),
        };
        assert_eq!(v.volume_type().map(|t| t.as_str()), Some(ty), "{pvc_name}");
        assert_eq!(v.iops(), Some(iops), "{pvc_name} ({class})");
        if let Some(t) = throughput {
            assert_eq!(v.throughput(), Some(t), "{pvc_name} ({class})");
        }
        assert_eq!(v.encrypted(), Some(encrypted), "{pvc_name} ({class})");
        let mounted = support::node::mounted_fs(&p.target);
        assert_eq!(
            mounted.as_deref(),
            Some(fs),
            "{pvc_name} mounted at {}",
            p.target.display()
        );
        if class == "ebs-gp3-search" {
            // The class's tagSpecification templates, rendered from the
            // provisioner's metadata.
            assert_eq!(tag(v, "app").as_deref(), Some("elasticsearch"));
            assert_eq!(tag(v, "claim"), Some(format!("default/{pvc_name}")));
        }
        // PV's topology: the zone the volume was made in.
        let terms = pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"].to_string();
        assert!(terms.contains(&w.sim.zone), "{}: {terms}", p.pv);
    }
    w.phase(&format!("{claims} claims checked against EC2: type, IOPS, throughput, encryption, zone, tags, filesystem"));
}

/// An Elasticsearch claim (xfs) grown online through external-resizer and
/// kubelet's NodeExpandVolume.
async fn expansion(w: &mut World) {
    let claim = "data-elasticsearch-0";
    w.kubectl(&[
        "patch",
        "pvc",
        claim,
        "-n",
        "default",
        "--type=merge",
        "-p",
        r#"{"spec":{"resources":{"requests":{"storage":"120Gi"}}}}"#,
    ]);
    w.until(
        "the claim's capacity at 120Gi after ControllerExpand and NodeExpand",
        Duration::from_secs(180),
        async |w| {
            let pvc = w.json(&["pvc", claim, "-n", "default"])?;
            (pvc["status"]["capacity"]["storage"] == "120Gi").then_some(())
        },
    )
    .await;
    let p = w
        .kubelet
        .lock()
        .await
        .find("default/elasticsearch-0", "data-elasticsearch-0")
        .expect("published");
    let vol = w
        .sim
        .all_volumes()
        .await
        .into_iter()
        .find(|v| v.volume_id() == Some(&p.volume_id))
        .unwrap();
    assert_eq!(vol.size(), Some(120), "EC2 grew the volume");
    let st = nix::sys::statvfs::statvfs(&p.target).expect("statvfs");
    let bytes = st.blocks() as u64 * st.fragment_size() as u64;
    assert!(bytes > 115 << 30, "the mounted xfs grew: {bytes} bytes");
}

/// examples/snapshot: data written in the source claim, a VolumeSnapshot
/// made ready by the snapshot controller and csi-snapshotter, restored into
/// a new claim that holds the same bytes.
async fn snapshot_and_restore(w: &mut World) {
    w.kubectl(&[
        "apply",
        "-f",
        &format!("{ROOT}/examples/snapshot/1-source.yaml"),
    ]);
    let source = w
        .until(
            "the snapshot example's source pod on its volume",
            Duration::from_secs(180),
            async |w| {
                let k = w.kubelet.lock().await;
                k.published().into_iter().find(|p| p.claim == "source-data")
            },
        )
        .await;
    let data: Vec<u8> = (0..1 << 20)
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    {
        use std::io::Write;
        let path = source.target.join("snapshot-check.bin");
        let mut f = std::fs::File::create(&path).expect("create");
        f.write_all(&data).expect("write");
        f.sync_all().expect("fsync");
        nix::unistd::syncfs(&f).expect("syncfs");
    }
    w.kubectl(&[
        "apply",
        "-f",
        &format!("{ROOT}/examples/snapshot/2-snapshot.yaml"),
    ]);
    let snap = w
        .until(
            "the VolumeSnapshot readyToUse",
            Duration::from_secs(180),
            async |w| {
                let snaps = w.json(&["volumesnapshots", "-n", "default"])?;
                let s = snaps["items"].as_array()?.first()?.clone();
                (s["status"]["readyToUse"] == true).then_some(s)
            },
        )
        .await;
    let content = snap["status"]["boundVolumeSnapshotContentName"]
        .as_str()
        .unwrap()
        .to_string();
    let snaps = w
        .sim
        .sdk()
        .describe_snapshots()
        .owner_ids("self")
        .send()
        .await
        .expect("DescribeSnapshots");
    let ours: Vec<_> = snaps
        .snapshots()
        .iter()
        .filter(|s| {
            s.tags()
                .iter()
                .any(|t| t.key() == Some("CSIVolumeSnapshotName"))
        })
        .collect();
    assert_eq!(ours.len(), 1, "one EBS snapshot");
    let stag = |k: &str| {
        ours[0]
            .tags()
            .iter()
            .find(|t| t.key() == Some(k))
            .and_then(|t| t.value().map(str::to_string))
    };
    // csi-snapshotter names the snapshot "snapshot-" + the VolumeSnapshot's uid.
    let uid = snap["metadata"]["uid"].as_str().unwrap();
    assert_eq!(
        stag("CSIVolumeSnapshotName"),
        Some(format!("snapshot-{uid}"))
    );
    // The reference tags snapshots with these two only; the snapshotter's
    // metadata (--extra-create-metadata) feeds tagSpecification templates.
    assert_eq!(stag("ebs.csi.aws.com/cluster").as_deref(), Some("true"));
    assert_eq!(
        ours[0].volume_id(),
        Some(source.volume_id.as_str()),
        "the snapshot is of the source claim's volume ({content})"
    );

    w.kubectl(&[
        "apply",
        "-f",
        &format!("{ROOT}/examples/snapshot/3-restore.yaml"),
    ]);
    let restored = w
        .until(
            "the restored claim's pod on its volume",
            Duration::from_secs(180),
            async |w| {
                let k = w.kubelet.lock().await;
                k.published()
                    .into_iter()
                    .find(|p| p.claim == "restored-data")
            },
        )
        .await;
    let back = std::fs::read(restored.target.join("snapshot-check.bin"))
        .expect("the file is in the restored volume");
    assert!(
        back == data,
        "the restored volume holds the bytes written before the snapshot"
    );
}

/// The node is cordoned while volumes are attached: the pre-stop hook waits;
/// the workloads go, kubelet unmounts, the attach/detach controller and
/// external-attacher detach, and the hook returns. Then every claim and the
/// snapshot are deleted: nothing is left in EC2, the API or the host.
async fn pre_stop_and_teardown(w: &mut World) {
    w.kubectl(&["cordon", NODE]);
    w.until(
        "the node-lifecycle controller's unschedulable taint",
        Duration::from_secs(60),
        async |w| {
            let node = w.json(&["node", NODE])?;
            node["spec"]["taints"]
                .as_array()?
                .iter()
                .any(|t| t["key"] == "node.kubernetes.io/unschedulable")
                .then_some(())
        },
    )
    .await;
    let node_sa = w.cluster.kubeconfig_for("kube-system", "ebs-csi-node-sa");
    let hook_log = w.cluster.dir.path().join("pre-stop-hook.log");
    let mut hook = std::process::Command::new(DRIVER_BIN)
        .arg("pre-stop-hook")
        .arg(format!("--kubeconfig={}", node_sa.display()))
        .env("CSI_NODE_NAME", NODE)
        .stderr(std::fs::File::create(&hook_log).unwrap())
        .spawn()
        .expect("pre-stop-hook");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        hook.try_wait().unwrap().is_none(),
        "the hook waits while volumes are attached: {}",
        std::fs::read_to_string(&hook_log).unwrap_or_default()
    );
    let hook_started = Instant::now();
    for (file, _, _, _) in STATEFULSETS.iter().rev() {
        w.kubectl(&["delete", "-f", &format!("{ROOT}/{file}"), "--wait=false"]);
    }
    w.kubectl(&[
        "delete",
        "pod",
        "legacy-io1",
        "source-pod",
        "restore-pod",
        "-n",
        "default",
        "--wait=false",
        "--ignore-not-found",
    ]);
    w.kubectl(&["delete", "pod", "--all", "-n", "default", "--wait=false"]);
    let status = w
        .until(
            "the pre-stop hook to return after the last detach",
            Duration::from_secs(300),
            async |_| hook.try_wait().unwrap(),
        )
        .await;
    assert!(
        status.success(),
        "pre-stop hook: {status}\n{}",
        std::fs::read_to_string(&hook_log).unwrap_or_default()
    );
    assert!(
        w.json(&["volumeattachments"])
            .is_some_and(|l| l["items"].as_array().is_some_and(|i| i.is_empty()))
    );
    w.phase(&format!(
        "pre-stop hook returned {:.1} s after the workloads were deleted",
        hook_started.elapsed().as_secs_f64()
    ));
    {
        let k = w.kubelet.lock().await;
        assert!(
            k.staged().is_empty(),
            "kubelet unstaged everything: {:?}",
            k.staged()
        );
    }

    w.kubectl(&[
        "delete",
        "volumesnapshots",
        "--all",
        "-n",
        "default",
        "--wait=false",
    ]);
    w.kubectl(&["delete", "pvc", "--all", "-n", "default", "--wait=false"]);
    w.until(
        "no PV, no EBS volume, no EBS snapshot left",
        Duration::from_secs(300),
        async |w| {
            let pvs = w.json(&["pv"])?;
            let snaps = w
                .sim
                .sdk()
                .describe_snapshots()
                .owner_ids("self")
                .send()
                .await
                .ok()?;
            let leftover_snaps = snaps
                .snapshots()
                .iter()
                .filter(|s| {
                    s.tags()
                        .iter()
                        .any(|t| t.key() == Some("CSIVolumeSnapshotName"))
                })
                .count();
            (pvs["items"].as_array()?.is_empty()
                && w.sim.all_volumes().await.is_empty()
                && leftover_snaps == 0)
                .then_some(())
        },
    )
    .await;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root = w.kubelet.lock().await.root.display().to_string();
    assert!(
        !mounts.contains(&root),
        "nothing mounted under kubelet's dir"
    );
}
