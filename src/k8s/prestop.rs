//! `ebs-csi-driver pre-stop-hook`: the node container's preStop hook, with
//! the reference driver's semantics (its `cmd/hooks/prestop.go`).
//!
//! When a node is drained, its driver pod may be stopped before kubelet has
//! unmounted the pods' volumes and the attach/detach controller has
//! detached them; the volumes then stay attached until the controller's
//! six-minute force-detach (reference issues #1302, #833). So, when the
//! Node carries a drain taint — `node.kubernetes.io/unschedulable`
//! (`kubectl drain`), `ToBeDeletedByClusterAutoscaler`,
//! `karpenter.sh/disrupted` or `karpenter.sh/disruption` — or is already
//! gone, the hook waits until no VolumeAttachment names the node. Otherwise
//! (a rolling update of the driver, say) it returns at once. The pod's
//! `terminationGracePeriodSeconds` bounds the wait.

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::storage::v1::VolumeAttachment;
use kube::Api;
use kube::api::{ListParams, WatchEvent, WatchParams};

use super::{K8sError, bounded};

/// Taints that mean the node is being drained.
pub const DRAIN_TAINTS: [&str; 4] = [
    "node.kubernetes.io/unschedulable",
    "ToBeDeletedByClusterAutoscaler",
    "karpenter.sh/disrupted",
    "karpenter.sh/disruption",
];

/// What the hook did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreStop {
    /// The node is not being drained: returned at once.
    NotDraining,
    /// Waited until no VolumeAttachment named the node (`was_gone`: the
    /// Node object no longer existed).
    Detached {
        /// Whether the Node was already deleted.
        was_gone: bool,
    },
}

/// Whether the Node carries a drain taint.
pub fn is_draining(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|taints| {
            taints
                .iter()
                .any(|t| DRAIN_TAINTS.contains(&t.key.as_str()))
        })
}

/// Runs the hook for Node `name`; `limit` bounds each request.
pub async fn run(client: kube::Client, name: &str, limit: Duration) -> Result<PreStop, K8sError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let was_gone = match bounded(&format!("get node {name}"), limit, nodes.get_opt(name)).await? {
        None => {
            tracing::info!(
                node = name,
                "the Node is gone (terminating); waiting for its VolumeAttachments"
            );
            true
        }
        Some(node) if !is_draining(&node) => {
            tracing::info!(
                node = name,
                "the node is not being drained; nothing to wait for"
            );
            return Ok(PreStop::NotDraining);
        }
        Some(_) => {
            tracing::info!(
                node = name,
                "the node is being drained; waiting for its VolumeAttachments"
            );
            false
        }
    };
    wait_for_detach(Api::all(client), name, limit).await?;
    tracing::info!(
        node = name,
        "no VolumeAttachment names the node; pre-stop hook done"
    );
    Ok(PreStop::Detached { was_gone })
}

/// Lists VolumeAttachments and watches them until none names `node`. The
/// API has no field selector on `spec.nodeName`, so every one is read and
/// filtered here, as the reference's informer does.
async fn wait_for_detach(
    api: Api<VolumeAttachment>,
    node: &str,
    limit: Duration,
) -> Result<(), K8sError> {
    let on_node = |va: &VolumeAttachment| va.spec.node_name == node;
    let name_of = |va: &VolumeAttachment| va.metadata.name.clone().unwrap_or_default();
    loop {
        let list = bounded(
            "list volumeattachments",
            limit,
            api.list(&ListParams::default()),
        )
        .await?;
        let mut remaining: BTreeSet<String> = list
            .items
            .iter()
            .filter(|va| on_node(va))
            .map(name_of)
            .collect();
        if remaining.is_empty() {
            return Ok(());
        }
        tracing::info!(node, attachments = ?remaining, "waiting for VolumeAttachments to go");
        let version = list.metadata.resource_version.unwrap_or_default();
        let params = WatchParams::default().timeout(290);
        let mut stream = bounded(
            "watch volumeattachments",
            limit,
            api.watch(&params, &version),
        )
        .await?
        .boxed();
        while let Some(event) = stream.next().await {
            match event {
                Ok(WatchEvent::Added(va)) | Ok(WatchEvent::Modified(va)) if on_node(&va) => {
                    remaining.insert(name_of(&va));
                }
                Ok(WatchEvent::Deleted(va)) => {
                    if remaining.remove(&name_of(&va)) {
                        tracing::info!(node, attachment = %name_of(&va), left = remaining.len(), "VolumeAttachment deleted");
                    }
                }
                Ok(WatchEvent::Added(_))
                | Ok(WatchEvent::Modified(_))
                | Ok(WatchEvent::Bookmark(_)) => {}
                // 410 Gone and other watch errors: list again.
                Ok(WatchEvent::Error(status)) => {
                    tracing::debug!(code = status.code, "watch ended: {}", status.message);
                    break;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "watch failed; listing again");
                    break;
                }
            }
            if remaining.is_empty() {
                return Ok(());
            }
        }
        // The watch ended (its timeout, a 410, a broken stream): list again,
        // after a pause so a failing watch cannot spin.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
