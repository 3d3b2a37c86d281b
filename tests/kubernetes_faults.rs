//! The node's Kubernetes features under API faults the real server cannot be
//! made to produce on cue, against `tests/k8sapi`, a local stand-in for the
//! API server that answers in the real wire format and injects them: a JSON
//! patch whose `test` went stale between the driver's read and its write (a
//! 422 at exactly that moment), and an API that answers every request 5 s
//! late. Everything else the node does with the API is tested against the
//! real kube-apiserver in `tests/kubernetes.rs`.

mod support;

use std::time::{Duration, Instant};

use ebs_csi_driver::csi;
use serde_json::json;
use support::Driver;
use support::k8sapi::{KubeApi, fixture};
use support::kube_node::{self, eventually, taint_keys};

const NODE: &str = "ip-192-168-1-10.ec2.internal";

/// A node driver using the stand-in, IMDS pointed at a closed port.
async fn node_driver(api: &KubeApi, args: &[&str], env: &[(&str, &str)]) -> Driver {
    kube_node::node_driver(&api.kubeconfig, NODE, args, env).await
}

/// The identity flags, so taint tests need neither IMDS nor the Node.
const IDENTITY: [&str; 4] = [
    "--instance-id=i-0123456789abcdef0",
    "--availability-zone=us-east-1a",
    "--instance-type=m5.large",
    "--region=us-east-1",
];

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
