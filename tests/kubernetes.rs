//! The node's Kubernetes features against `tests/k8sapi`, a local stand-in
//! for the Kubernetes API server (none can run on these machines) that
//! answers in the real wire format: identity from the Node when IMDS is
//! unreachable, the startup taint's removal, and the pre-stop hook.

mod support;

use std::time::{Duration, Instant};

use ebs_csi_driver::csi;
use serde_json::{Value, json};
use support::k8sapi::{KubeApi, fixture};
use support::{DRIVER_BIN, Driver, DriverConfig, wait_bounded};

const NODE: &str = "ip-192-168-1-10.ec2.internal";

/// A node driver using the stand-in, IMDS pointed at a closed port.
async fn node_driver(api: &KubeApi, args: &[&str], env: &[(&str, &str)]) -> Driver {
    let mut all_args = vec![
        format!("--kubeconfig={}", api.kubeconfig.display()),
        "--metadata-timeout=1".to_string(),
    ];
    all_args.extend(args.iter().map(|a| a.to_string()));
    let mut all_env = vec![
        ("CSI_NODE_NAME".to_string(), NODE.to_string()),
        // Nothing listens there: IMDS is unreachable, as with hop limit 1.
        (
            "AWS_EC2_METADATA_SERVICE_ENDPOINT".to_string(),
            "http://127.0.0.1:9".to_string(),
        ),
        ("AWS_REGION".to_string(), "us-east-1".to_string()),
    ];
    all_env.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Driver::start_with(DriverConfig {
        mode: "node",
        args: all_args,
        env: all_env,
        socket: None,
    })
    .await
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

/// The identity flags, so taint tests need neither IMDS nor the Node.
const IDENTITY: [&str; 4] = [
    "--instance-id=i-0123456789abcdef0",
    "--availability-zone=us-east-1a",
    "--instance-type=m5.large",
    "--region=us-east-1",
];

fn taint_keys(node: &Value) -> Vec<String> {
    node["spec"]["taints"]
        .as_array()
        .map(|t| {
            t.iter()
                .map(|x| x["key"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

async fn eventually(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn identity_comes_from_the_node_when_imds_is_unreachable_in_either_order() {
    let mut node = fixture("node.json");
    node["metadata"]["labels"]["node.kubernetes.io/instance-type"] = json!("m7i.large");
    let api = KubeApi::start(&[node]);
    for sources in ["imds,kubernetes", "kubernetes,imds", "kubernetes"] {
        let d = node_driver(
            &api,
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
    let gets = api.requests(Some("GET"));
    assert!(
        gets.iter()
            .all(|r| r["path"] == format!("/api/v1/nodes/{NODE}")),
        "{gets:?}"
    );
}

#[tokio::test]
async fn a_provider_id_that_is_not_aws_keeps_the_node_unready_and_says_why() {
    let mut node = fixture("node.json");
    node["spec"]["providerID"] = json!("gce://project/us-central1-a/node-1");
    let api = KubeApi::start(&[node]);
    let d = node_driver(
        &api,
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

#[tokio::test]
async fn the_metadata_labeler_source_is_refused_clearly() {
    let api = KubeApi::start(&[]);
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = std::process::Command::new(DRIVER_BIN)
        .args([
            "node",
            "--metadata-sources=imds,metadata-labeler",
            "--endpoint=unix:///tmp/never.sock",
        ])
        .arg(format!("--kubeconfig={}", api.kubeconfig.display()))
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

#[tokio::test]
async fn the_startup_taint_is_removed_once_and_only_that_taint() {
    let mut csinode = fixture("csinode-no-drivers.json");
    let mut api = KubeApi::start(&[fixture("node.json"), csinode.clone()]);
    let d = node_driver(&api, &IDENTITY, &[]).await;
    // Not registered yet: the taint stays.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        api.requests(Some("PATCH")).is_empty(),
        "no patch before the CSINode lists the driver"
    );
    assert!(
        taint_keys(&api.get("nodes", NODE)).contains(&"ebs.csi.aws.com/agent-not-ready".into())
    );
    // kubelet registers the driver with its count.
    csinode = fixture("csinode.json");
    api.put(&csinode);
    eventually("the taint to go", Duration::from_secs(15), || {
        !taint_keys(&api.get("nodes", NODE)).contains(&"ebs.csi.aws.com/agent-not-ready".into())
    })
    .await;
    assert_eq!(
        taint_keys(&api.get("nodes", NODE)),
        ["dedicated"],
        "only that taint"
    );
    let patches = api.requests(Some("PATCH"));
    assert_eq!(patches.len(), 1, "{patches:?}");
    let p = &patches[0];
    assert_eq!(p["content_type"], "application/json-patch+json");
    assert_eq!(p["body"][0]["op"], "test");
    assert_eq!(p["body"][0]["path"], "/spec/taints");
    assert_eq!(p["body"][1]["op"], "replace");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        api.requests(Some("PATCH")).len(),
        1,
        "removed once, then left alone"
    );
    assert!(d.log_text().contains("removed the startup taint"));
}

#[tokio::test]
async fn a_stale_test_is_answered_422_and_retried_with_the_fresh_node() {
    let api = KubeApi::start(&[fixture("node.json"), fixture("csinode.json")]);
    api.configure(json!({"conflict_next_patches": 1}));
    let _d = node_driver(&api, &IDENTITY, &[]).await;
    eventually("the taint to go", Duration::from_secs(15), || {
        !taint_keys(&api.get("nodes", NODE)).contains(&"ebs.csi.aws.com/agent-not-ready".into())
    })
    .await;
    let patches = api.requests(Some("PATCH"));
    assert_eq!(patches.len(), 2, "{patches:?}");
    assert_eq!(patches[0]["status"], 422, "the first test saw old taints");
    assert_eq!(patches[1]["status"], 200);
    let mut left = taint_keys(&api.get("nodes", NODE));
    left.sort();
    assert_eq!(
        left,
        ["dedicated", "fake.k8s.io/concurrent-writer"],
        "the concurrent writer's taint kept"
    );
}

#[tokio::test]
async fn without_permissions_or_when_disabled_nothing_is_patched_and_the_node_serves() {
    let api = KubeApi::start(&[fixture("node.json"), fixture("csinode.json")]);
    api.configure(json!({"forbidden": [{"verb": "*", "resource": "nodes"}]}));
    let d = node_driver(&api, &IDENTITY, &[]).await;
    d.wait_ready().await;
    eventually("the driver to give up", Duration::from_secs(10), || {
        d.log_text()
            .contains("no permission to remove the startup taint")
    })
    .await;
    assert!(api.requests(Some("PATCH")).is_empty());
    assert_eq!(node_info(&d).await.unwrap().node_id, "i-0123456789abcdef0");
    drop(d);

    let api = KubeApi::start(&[fixture("node.json"), fixture("csinode.json")]);
    let d = node_driver(&api, &IDENTITY, &[("DISABLE_TAINT_WATCHER", "true")]).await;
    d.wait_ready().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        api.requests(None).is_empty(),
        "DISABLE_TAINT_WATCHER: not a single API request"
    );
}

/// Starts `pre-stop-hook` against the stand-in.
fn pre_stop(api: &KubeApi) -> (std::process::Child, tempfile::NamedTempFile) {
    let log = tempfile::NamedTempFile::new().unwrap();
    let child = std::process::Command::new(DRIVER_BIN)
        .arg("pre-stop-hook")
        .arg(format!("--kubeconfig={}", api.kubeconfig.display()))
        .env("CSI_NODE_NAME", NODE)
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    (child, log)
}

fn draining(mut node: Value) -> Value {
    node["spec"]["taints"]
        .as_array_mut()
        .unwrap()
        .push(json!({"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}));
    node
}

#[tokio::test]
async fn pre_stop_returns_at_once_on_a_node_that_is_not_draining() {
    let api = KubeApi::start(&[fixture("node.json"), fixture("volumeattachment.json")]);
    let started = Instant::now();
    let (mut child, log) = pre_stop(&api);
    let status = wait_bounded(&mut child, Duration::from_secs(10)).expect("returns");
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(log.path()).unwrap()
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let requests = api.requests(None);
    assert_eq!(requests.len(), 1, "only the Node is read: {requests:?}");
}

#[tokio::test]
async fn pre_stop_waits_for_the_nodes_volume_attachments_while_draining() {
    let va = fixture("volumeattachment.json");
    assert_eq!(va["spec"]["nodeName"], NODE);
    let va_name = va["metadata"]["name"].as_str().unwrap().to_string();
    let mut other = va.clone();
    other["metadata"]["name"] = json!("csi-elsewhere");
    other["spec"]["nodeName"] = json!("ip-10-0-0-9.ec2.internal");
    let api = KubeApi::start(&[draining(fixture("node.json")), va, other]);
    let (mut child, log) = pre_stop(&api);
    assert!(
        wait_bounded(&mut child, Duration::from_secs(3)).is_none(),
        "waits while a VolumeAttachment names the node: {}",
        std::fs::read_to_string(log.path()).unwrap()
    );
    api.delete("volumeattachments", &va_name);
    let status =
        wait_bounded(&mut child, Duration::from_secs(10)).expect("returns once it is gone");
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(log.path()).unwrap()
    );
}

#[tokio::test]
async fn pre_stop_on_a_node_already_gone_waits_only_for_its_attachments() {
    let api = KubeApi::start(&[]);
    let (mut child, log) = pre_stop(&api);
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

    let va = fixture("volumeattachment.json");
    let name = va["metadata"]["name"].as_str().unwrap().to_string();
    let api = KubeApi::start(&[va]);
    let (mut child, _log) = pre_stop(&api);
    assert!(
        wait_bounded(&mut child, Duration::from_secs(3)).is_none(),
        "waits for the attachment"
    );
    api.delete("volumeattachments", &name);
    assert!(
        wait_bounded(&mut child, Duration::from_secs(10))
            .expect("returns")
            .success()
    );
}

#[tokio::test]
async fn a_slow_api_bounds_startup_and_says_so() {
    let api = KubeApi::start(&[fixture("node.json")]);
    api.configure(json!({"delay_ms": 5000}));
    let d = node_driver(
        &api,
        &["--metadata-sources=kubernetes"],
        &[("DISABLE_TAINT_WATCHER", "1")],
    )
    .await;
    // The socket is served at once; the identity stays unknown, bounded.
    let mut node = d.node().await;
    let started = Instant::now();
    let err = node
        .node_get_info(csi::NodeGetInfoRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answers at once"
    );
    eventually(
        "the bounded attempt to be logged",
        Duration::from_secs(10),
        || d.log_text().contains("no answer within"),
    )
    .await;
}
