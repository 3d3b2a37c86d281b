//! A node driver talking to a Kubernetes API (the real kube-apiserver in
//! `tests/kubernetes.rs`, the stand-in in `tests/kubernetes_faults.rs`),
//! and what those tests read back from the Node.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Driver, DriverConfig};

/// A node driver using `kubeconfig` for Node `node`, with IMDS pointed at
/// a closed port (nothing listens there: IMDS is unreachable, as with a hop
/// limit of 1), plus `args` and `env`.
pub async fn node_driver(
    kubeconfig: &Path,
    node: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Driver {
    let mut all_args = vec![
        format!("--kubeconfig={}", kubeconfig.display()),
        "--metadata-timeout=1".to_string(),
    ];
    all_args.extend(args.iter().map(|a| a.to_string()));
    let mut all_env = vec![
        ("CSI_NODE_NAME".to_string(), node.to_string()),
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

/// The keys of a Node object's taints.
pub fn taint_keys(node: &Value) -> Vec<String> {
    node["spec"]["taints"]
        .as_array()
        .map(|t| {
            t.iter()
                .map(|x| x["key"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until `done`, failing the test naming `what` after `limit`.
pub async fn eventually(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
