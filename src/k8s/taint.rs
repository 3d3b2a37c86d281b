//! Removing the `ebs.csi.aws.com/agent-not-ready` startup taint, with the
//! reference driver's semantics (its `startNotReadyTaintWatcher`):
//!
//! - node groups may start with that taint (`NoExecute`) so that no pod
//!   with an EBS volume lands before the driver can serve it;
//! - once the node's CSINode lists this driver with an allocatable count
//!   (kubelet writes it after registration, from NodeGetInfo), the node
//!   removes exactly that taint with a JSON patch whose `test` op checks the
//!   taints it read, so a concurrent change to the taints fails the patch
//!   (422) instead of being overwritten; it then reads the Node again and
//!   retries;
//! - it keeps trying for a bounded time (10 minutes), polling its Node and
//!   CSINode with backoff up to 5 s (the reference's informer resync), stops
//!   at once without permission, and is skipped when
//!   `DISABLE_TAINT_WATCHER` is set.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Taint};
use k8s_openapi::api::storage::v1::CSINode;
use kube::Api;
use kube::api::PatchParams;

use super::{K8sError, bounded};
use crate::contract::DRIVER_NAME;

/// The taint this removes.
pub const NOT_READY_TAINT: &str = "ebs.csi.aws.com/agent-not-ready";
/// Set (to anything) to skip taint removal.
pub const DISABLE_ENV: &str = "DISABLE_TAINT_WATCHER";

/// How the removal runs.
#[derive(Debug, Clone)]
pub struct TaintOptions {
    /// How long to keep watching for the chance to remove the taint.
    pub max_watch: Duration,
    /// Bound on each API request.
    pub request_timeout: Duration,
    /// Longest wait between attempts.
    pub recheck: Duration,
}

impl Default for TaintOptions {
    fn default() -> Self {
        TaintOptions {
            // The reference driver's taintWatcherDuration.
            max_watch: Duration::from_secs(600),
            request_timeout: Duration::from_secs(10),
            // The reference's informer resyncs every 5 s.
            recheck: Duration::from_secs(5),
        }
    }
}

/// How the removal ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaintOutcome {
    /// The taint was removed by this call.
    Removed,
    /// The Node had no such taint (or someone else removed it).
    NotTainted,
    /// The driver may not read or patch its Node: nothing more to do.
    Forbidden(String),
    /// The bound passed with the taint still there; the last reason.
    GaveUp(String),
}

fn has_taint(node: &Node) -> bool {
    taints(node).iter().any(|t| t.key == NOT_READY_TAINT)
}

fn taints(node: &Node) -> Vec<Taint> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
}

/// Whether kubelet has registered the driver on the node with its
/// attachment count (what the scheduler then uses).
async fn driver_registered(
    csinodes: &Api<CSINode>,
    name: &str,
    limit: Duration,
) -> Result<bool, K8sError> {
    let csinode = bounded(
        &format!("get csinode {name}"),
        limit,
        csinodes.get_opt(name),
    )
    .await?;
    Ok(csinode.is_some_and(|c| {
        c.spec.drivers.iter().any(|d| {
            d.name == DRIVER_NAME && d.allocatable.as_ref().is_some_and(|a| a.count.is_some())
        })
    }))
}

/// The JSON patch that removes the taint from exactly the taints `node`
/// had: `test` them, then `replace` them without it.
pub fn removal_patch(node: &Node) -> serde_json::Value {
    let current = taints(node);
    let keep: Vec<&Taint> = current
        .iter()
        .filter(|t| t.key != NOT_READY_TAINT)
        .collect();
    serde_json::json!([
        {"op": "test", "path": "/spec/taints", "value": current},
        {"op": "replace", "path": "/spec/taints", "value": keep},
    ])
}

/// Removes the taint from Node `name` (see the module docs).
pub async fn remove_not_ready_taint(
    client: kube::Client,
    name: &str,
    opts: &TaintOptions,
) -> TaintOutcome {
    let nodes: Api<Node> = Api::all(client.clone());
    let csinodes: Api<CSINode> = Api::all(client);
    let deadline = Instant::now() + opts.max_watch;
    let limit = opts.request_timeout;
    let mut last: String;
    let mut delay = opts.recheck.min(Duration::from_secs(1));
    loop {
        let node = match bounded(&format!("get node {name}"), limit, nodes.get(name)).await {
            Ok(n) => n,
            Err(e) if matches!(e.code(), Some(403) | Some(401)) => {
                return TaintOutcome::Forbidden(e.to_string());
            }
            Err(e) => {
                last = e.to_string();
                if Instant::now() >= deadline {
                    return TaintOutcome::GaveUp(last);
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 3 / 2).min(opts.recheck);
                continue;
            }
        };
        if !has_taint(&node) {
            return TaintOutcome::NotTainted;
        }
        match driver_registered(&csinodes, name, limit).await {
            Ok(true) => {
                let patch = removal_patch(&node);
                let patch: json_patch::Patch =
                    serde_json::from_value(patch).expect("a valid JSON patch");
                let sent = bounded(
                    &format!("patch node {name}"),
                    limit,
                    nodes.patch(
                        name,
                        &PatchParams::default(),
                        &kube::api::Patch::Json::<()>(patch),
                    ),
                )
                .await;
                match sent {
                    Ok(_) => {
                        tracing::info!(
                            node = name,
                            taint = NOT_READY_TAINT,
                            "removed the startup taint"
                        );
                        return TaintOutcome::Removed;
                    }
                    Err(e) if matches!(e.code(), Some(403) | Some(401)) => {
                        return TaintOutcome::Forbidden(e.to_string());
                    }
                    // The taints changed since we read them (the `test`
                    // failed), or the Node is gone or stale: read it again.
                    Err(e) if matches!(e.code(), Some(400) | Some(404) | Some(409) | Some(422)) => {
                        tracing::info!(node = name, error = %e, "the Node changed under the patch; reading it again");
                        continue;
                    }
                    Err(e) => last = e.to_string(),
                }
            }
            Ok(false) => {
                last = format!(
                    "CSINode {name} does not list {DRIVER_NAME} with an allocatable count yet"
                );
            }
            Err(e) if matches!(e.code(), Some(403) | Some(401)) => {
                return TaintOutcome::Forbidden(e.to_string());
            }
            Err(e) => last = e.to_string(),
        }
        if Instant::now() >= deadline {
            return TaintOutcome::GaveUp(last);
        }
        tracing::debug!(node = name, reason = %last, "startup taint stays for now");
        // Polled, not watched: the node's RBAC grants get and patch on
        // nodes, not watch (the least privilege; the reference
        // also grants list/watch for an informer).
        tokio::time::sleep(delay).await;
        delay = (delay * 3 / 2).min(opts.recheck);
    }
}
