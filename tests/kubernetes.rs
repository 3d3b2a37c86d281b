//! The node's Kubernetes features against a real kube-apiserver v1.36.1
//! (with etcd, built from the Go module proxy by `tests/kube/build.sh`; no
//! controllers are needed): identity from the Node when IMDS is unreachable,
//! the startup taint's removal, and the pre-stop hook. RBAC is on and our
//! deploy/ RBAC is applied: the node plugin runs as `ebs-csi-node-sa` with a
//! TokenRequest token, so a permission it lacks fails here. What it asked of
//! the server is read back from the server's audit log. The cases share one
//! API server (each has its own Node) and run one after another.
//!
//! Two behaviours need faults the real server cannot produce on cue (a stale
//! JSON-patch `test` between the read and the write; every answer 5 s late):
//! those are in `tests/kubernetes_faults.rs`, against the API stand-in.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ebs_csi_driver::csi;
use serde_json::{Value, json};
use support::cluster::{Cluster, Tools};
use support::k8sapi::fixture;
use support::kube_node::{eventually, node_driver, taint_keys};
use support::{DRIVER_BIN, Driver, wait_bounded};

const SA_NS: &str = "kube-system";
const NODE_SA: &str = "ebs-csi-node-sa";

/// The identity flags, so taint tests need neither IMDS nor the Node.
const IDENTITY: [&str; 4] = [
    "--instance-id=i-0123456789abcdef0",
    "--availability-zone=us-east-1a",
    "--instance-type=m5.large",
    "--region=us-east-1",
];

/// Skips (saying why) without the Go-built API server; fails instead when
/// `KUBE_E2E_REQUIRED=1` (tests/run-all.sh sets it under CI).
fn tools_or_skip() -> Option<Tools> {
    match Tools::find() {
        Ok(t) => Some(t),
        Err(why) if std::env::var("KUBE_E2E_REQUIRED").as_deref() == Ok("1") => {
            panic!("kubernetes tests cannot run: {why}")
        }
        Err(why) => {
            eprintln!("SKIP kubernetes: {why}");
            None
        }
    }
}

/// The fixture Node renamed `name`, without what the server assigns.
fn node_object(name: &str) -> Value {
    let mut node = fixture("node.json");
    let meta = node["metadata"].as_object_mut().unwrap();
    for k in ["uid", "resourceVersion", "creationTimestamp"] {
        meta.remove(k);
    }
    node["metadata"]["name"] = json!(name);
    node["metadata"]["labels"]["kubernetes.io/hostname"] = json!(name);
    node.as_object_mut().unwrap().remove("status");
    node
}

/// The fixture CSINode for `node`, with or without our driver registered.
fn csinode_object(node: &str, registered: bool) -> Value {
    let mut c = fixture(if registered {
        "csinode.json"
    } else {
        "csinode-no-drivers.json"
    });
    let meta = c["metadata"].as_object_mut().unwrap();
    for k in [
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "ownerReferences",
    ] {
        meta.remove(k);
    }
    c["metadata"]["name"] = json!(node);
    if !registered {
        // kubelet's CSINode before any driver registers: an empty list.
        c["spec"] = json!({"drivers": []});
    }
    c
}

/// A VolumeAttachment named `name` for `node` (made by the test as the
/// attach/detach controller would; no attacher runs here).
fn attachment(name: &str, node: &str) -> Value {
    let mut va = fixture("volumeattachment.json");
    let meta = va["metadata"].as_object_mut().unwrap();
    for k in ["uid", "resourceVersion", "creationTimestamp", "finalizers"] {
        meta.remove(k);
    }
    va["metadata"]["name"] = json!(name);
    va["spec"]["nodeName"] = json!(node);
    va.as_object_mut().unwrap().remove("status");
    va
}

/// The audit events of `sa` whose request path names `needle`.
fn requests_about(c: &Cluster, sa: &str, needle: &str) -> Vec<Value> {
    c.audit(SA_NS, sa)
        .into_iter()
        .filter(|e| e["requestURI"].as_str().is_some_and(|u| u.contains(needle)))
        .collect()
}

/// The cluster with our deploy/ RBAC and the service accounts it names.
struct Api {
    cluster: Cluster,
    /// Kubeconfig of ebs-csi-node-sa.
    node_sa: PathBuf,
}

impl Api {
    fn node(&self, name: &str) -> Value {
        self.cluster.get_json(&["node", name]).expect("node")
    }

    /// Starts `pre-stop-hook` as ebs-csi-node-sa for `node`.
    fn pre_stop(&self, node: &str) -> (std::process::Child, tempfile::NamedTempFile) {
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = std::process::Command::new(DRIVER_BIN)
            .arg("pre-stop-hook")
            .arg(format!("--kubeconfig={}", self.node_sa.display()))
            .env("CSI_NODE_NAME", node)
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        (child, log)
    }
}

async fn node_info(d: &Driver) -> Result<csi::NodeGetInfoResponse, tonic::Status> {
    let mut node = d.node().await;
    let start = Instant::now();
    loop {
        match node.node_get_info(csi::NodeGetInfoRequest {}).await {
            Ok(r) => return Ok(r.into_inner()),
            Err(e)
                if e.code() == tonic::Code::Unavailable
                    && start.elapsed() < Duration::from_secs(20) =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_features_against_the_real_api_server() {
    let Some(tools) = tools_or_skip() else { return };
    let cluster = Cluster::start_api(tools.clone()).await;
    let base = std::process::Command::new(&tools.kubectl)
        .args([
            "kustomize",
            concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/kubernetes/base"),
        ])
        .output()
        .expect("kustomize");
    let ours: Vec<Value> =
        serde_saphyr::from_multiple::<Value>(&String::from_utf8_lossy(&base.stdout))
            .expect("YAML")
            .into_iter()
            .filter(|o| {
                matches!(
                    o["kind"].as_str(),
                    Some("ServiceAccount" | "ClusterRole" | "ClusterRoleBinding")
                )
            })
            .collect();
    cluster.apply(&ours);
    // An account with no role at all, and one bound like the node plugin's
    // whose requests are told apart in the audit log.
    cluster.apply(&[
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "e2e-nobody", "namespace": SA_NS}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "e2e-quiet", "namespace": SA_NS}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": "e2e-quiet"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "ebs-csi-node-role"},
               "subjects": [{"kind": "ServiceAccount", "name": "e2e-quiet", "namespace": SA_NS}]}),
    ]);
    let node_sa = cluster.kubeconfig_for(SA_NS, NODE_SA);
    let api = Api { cluster, node_sa };

    identity_from_the_node(&api).await;
    a_provider_id_that_is_not_aws(&api).await;
    the_metadata_labeler_source_is_refused(&api).await;
    the_startup_taint_is_removed_once_and_only_that_taint(&api).await;
    without_permissions_or_when_disabled_nothing_is_patched(&api).await;
    pre_stop_on_a_node_that_is_not_draining(&api).await;
    pre_stop_waits_for_the_nodes_attachments_while_draining(&api).await;
    pre_stop_on_a_node_already_gone(&api).await;
}

/// Identity from the Node (providerID, labels) when IMDS is unreachable, in
/// either order of `--metadata-sources`; only that Node is read.
async fn identity_from_the_node(api: &Api) {
    let name = "ip-192-168-1-10.ec2.internal";
    let mut node = node_object(name);
    node["metadata"]["labels"]["node.kubernetes.io/instance-type"] = json!("m7i.large");
    api.cluster.apply(&[node]);
    for sources in ["imds,kubernetes", "kubernetes,imds", "kubernetes"] {
        let d = node_driver(
            &api.node_sa,
            name,
            &[&format!("--metadata-sources={sources}")],
            &[("DISABLE_TAINT_WATCHER", "1")],
        )
        .await;
        let info = node_info(&d)
            .await
            .unwrap_or_else(|e| panic!("{sources}: {e:?}\n{}", d.log_text()));
        assert_eq!(
            info.node_id, "i-0123456789abcdef0",
            "{sources}: from spec.providerID"
        );
        let zone = &info.accessible_topology.unwrap().segments["topology.kubernetes.io/zone"];
        assert_eq!(zone, "us-east-1a", "{sources}");
        assert_eq!(
            info.max_volumes_per_node, 31,
            "{sources}: m7i.large, 32 dedicated − root"
        );
        if sources.starts_with("imds") {
            assert!(
                d.log_text().contains("metadata source failed"),
                "IMDS was tried first"
            );
        }
    }
    let asked = api.cluster.audit(SA_NS, NODE_SA);
    assert!(!asked.is_empty(), "the audit log has the driver's requests");
    for e in &asked {
        assert_eq!(e["verb"], "get", "{e}");
        assert_eq!(e["requestURI"], format!("/api/v1/nodes/{name}"), "{e}");
        assert_eq!(e["responseStatus"]["code"], 200, "{e}");
    }
}

/// A providerID that is not AWS's: the node is not ready and says why.
async fn a_provider_id_that_is_not_aws(api: &Api) {
    let name = "gce-node-1";
    let mut node = node_object(name);
    node["spec"]["providerID"] = json!("gce://project/us-central1-a/node-1");
    api.cluster.apply(&[node]);
    let d = node_driver(
        &api.node_sa,
        name,
        &["--metadata-sources=kubernetes"],
        &[("DISABLE_TAINT_WATCHER", "1")],
    )
    .await;
    let err = node_info(&d).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(err.message().contains("gce://project"), "{}", err.message());
    let ready = d
        .identity()
        .await
        .probe(csi::ProbeRequest {})
        .await
        .unwrap()
        .into_inner()
        .ready;
    assert_eq!(
        ready,
        Some(false),
        "Probe is not ready while the identity is unknown"
    );
}

async fn the_metadata_labeler_source_is_refused(api: &Api) {
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = std::process::Command::new(DRIVER_BIN)
        .args([
            "node",
            "--metadata-sources=imds,metadata-labeler",
            "--endpoint=unix:///tmp/never.sock",
        ])
        .arg(format!("--kubeconfig={}", api.node_sa.display()))
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let status = wait_bounded(&mut child, Duration::from_secs(10)).expect("exits");
    assert!(!status.success());
    let text = std::fs::read_to_string(log.path()).unwrap();
    assert!(
        text.contains("metadata-labeler") && text.contains("not supported"),
        "{text}"
    );
}

/// The taint stays until the CSINode lists the driver with a count, then
/// goes in one JSON patch (`test` then `replace`), the other taint kept.
async fn the_startup_taint_is_removed_once_and_only_that_taint(api: &Api) {
    let name = "ip-192-168-1-11.ec2.internal";
    api.cluster
        .apply(&[node_object(name), csinode_object(name, false)]);
    let d = node_driver(&api.node_sa, name, &IDENTITY, &[]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let patches = |c: &Cluster| -> Vec<Value> {
        requests_about(c, NODE_SA, &format!("/nodes/{name}"))
            .into_iter()
            .filter(|e| e["verb"] == "patch")
            .collect()
    };
    assert!(
        patches(&api.cluster).is_empty(),
        "no patch before the CSINode lists the driver"
    );
    assert!(taint_keys(&api.node(name)).contains(&"ebs.csi.aws.com/agent-not-ready".into()));
    // kubelet registers the driver with its count.
    api.cluster.apply(&[csinode_object(name, true)]);
    eventually("the taint to go", Duration::from_secs(15), || {
        !taint_keys(&api.node(name)).contains(&"ebs.csi.aws.com/agent-not-ready".into())
    })
    .await;
    // The API server itself taints a Node that has no Ready condition
    // (node.kubernetes.io/not-ready, the TaintNodesByCondition admission);
    // that one is not the driver's business either way.
    let left: Vec<String> = taint_keys(&api.node(name))
        .into_iter()
        .filter(|k| k != "node.kubernetes.io/not-ready")
        .collect();
    assert_eq!(left, ["dedicated"], "only that taint");
    let p = patches(&api.cluster);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0]["responseStatus"]["code"], 200, "{}", p[0]);
    let body = &p[0]["requestObject"];
    assert_eq!(body[0]["op"], "test", "{body}");
    assert_eq!(body[0]["path"], "/spec/taints");
    assert_eq!(body[1]["op"], "replace");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        patches(&api.cluster).len(),
        1,
        "removed once, then left alone"
    );
    assert!(d.log_text().contains("removed the startup taint"));
}

/// Without RBAC for Nodes the driver gives up on the taint and still serves;
/// with DISABLE_TAINT_WATCHER it asks the API nothing at all.
async fn without_permissions_or_when_disabled_nothing_is_patched(api: &Api) {
    let name = "ip-192-168-1-12.ec2.internal";
    api.cluster
        .apply(&[node_object(name), csinode_object(name, true)]);
    let nobody = api.cluster.kubeconfig_for(SA_NS, "e2e-nobody");
    let d = node_driver(&nobody, name, &IDENTITY, &[]).await;
    d.wait_ready().await;
    eventually("the driver to give up", Duration::from_secs(10), || {
        d.log_text()
            .contains("no permission to remove the startup taint")
    })
    .await;
    let asked = api.cluster.audit(SA_NS, "e2e-nobody");
    assert!(
        asked.iter().all(|e| e["responseStatus"]["code"] == 403),
        "RBAC refused it: {asked:?}"
    );
    assert!(asked.iter().all(|e| e["verb"] != "patch"), "{asked:?}");
    assert_eq!(node_info(&d).await.unwrap().node_id, "i-0123456789abcdef0");
    assert!(taint_keys(&api.node(name)).contains(&"ebs.csi.aws.com/agent-not-ready".into()));
    drop(d);

    let quiet = api.cluster.kubeconfig_for(SA_NS, "e2e-quiet");
    let d = node_driver(
        &quiet,
        name,
        &IDENTITY,
        &[("DISABLE_TAINT_WATCHER", "true")],
    )
    .await;
    d.wait_ready().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let asked = api.cluster.audit(SA_NS, "e2e-quiet");
    assert!(
        asked.is_empty(),
        "DISABLE_TAINT_WATCHER: not a single API request: {asked:?}"
    );
}

/// Not draining: the hook reads the Node and returns at once, although a
/// VolumeAttachment names the node.
async fn pre_stop_on_a_node_that_is_not_draining(api: &Api) {
    let name = "ip-192-168-1-13.ec2.internal";
    api.cluster
        .apply(&[node_object(name), attachment("csi-not-draining", name)]);
    let started = Instant::now();
    let (mut child, log) = api.pre_stop(name);
    let status = wait_bounded(&mut child, Duration::from_secs(10)).expect("returns");
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(log.path()).unwrap()
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let asked = requests_about(&api.cluster, NODE_SA, "volumeattachments");
    assert!(asked.is_empty(), "only the Node is read: {asked:?}");
    api.cluster
        .kubectl(&["delete", "volumeattachment", "csi-not-draining"], None)
        .unwrap();
}

/// Draining (the unschedulable taint `kubectl drain` brings): the hook waits
/// until no VolumeAttachment names the node, whatever names other nodes.
async fn pre_stop_waits_for_the_nodes_attachments_while_draining(api: &Api) {
    let name = "ip-192-168-1-14.ec2.internal";
    let mut node = node_object(name);
    node["spec"]["taints"]
        .as_array_mut()
        .unwrap()
        .push(json!({"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}));
    api.cluster.apply(&[
        node,
        attachment("csi-draining", name),
        attachment("csi-elsewhere", "ip-10-0-0-9.ec2.internal"),
    ]);
    let (mut child, log) = api.pre_stop(name);
    assert!(
        wait_bounded(&mut child, Duration::from_secs(3)).is_none(),
        "waits while a VolumeAttachment names the node: {}",
        std::fs::read_to_string(log.path()).unwrap()
    );
    api.cluster
        .kubectl(&["delete", "volumeattachment", "csi-draining"], None)
        .unwrap();
    let status =
        wait_bounded(&mut child, Duration::from_secs(10)).expect("returns once it is gone");
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(log.path()).unwrap()
    );
    api.cluster
        .kubectl(&["delete", "volumeattachment", "csi-elsewhere"], None)
        .unwrap();
}

/// A Node already deleted: the hook waits only for the attachments that
/// still name it.
async fn pre_stop_on_a_node_already_gone(api: &Api) {
    let name = "ip-192-168-1-15.ec2.internal";
    let (mut child, log) = api.pre_stop(name);
    let status = wait_bounded(&mut child, Duration::from_secs(10)).expect("returns");
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(log.path()).unwrap()
    );
    assert!(
        std::fs::read_to_string(log.path())
            .unwrap()
            .contains("gone")
    );

    api.cluster.apply(&[attachment("csi-gone-node", name)]);
    let (mut child, _log) = api.pre_stop(name);
    assert!(
        wait_bounded(&mut child, Duration::from_secs(3)).is_none(),
        "waits for the attachment"
    );
    api.cluster
        .kubectl(&["delete", "volumeattachment", "csi-gone-node"], None)
        .unwrap();
    assert!(
        wait_bounded(&mut child, Duration::from_secs(10))
            .expect("returns")
            .success()
    );
}
