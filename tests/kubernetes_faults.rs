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
use serde_json::{Value, json};
use support::k8sapi::{KubeApi, fixture};
use support::{Driver, DriverConfig};

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
