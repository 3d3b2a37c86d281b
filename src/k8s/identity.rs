//! Who the node is, from its Node object — the reference driver's
//! `kubernetes` metadata source, for nodes whose pods cannot reach IMDS:
//!
//! - instance id from `spec.providerID` (`aws:///us-east-1a/i-0123…`);
//! - zone, region and instance type from the well-known labels
//!   `topology.kubernetes.io/zone`, `topology.kubernetes.io/region` and
//!   `node.kubernetes.io/instance-type` (an `ml.` prefix, as SageMaker
//!   HyperPod nodes carry, is dropped);
//! - network interfaces and boot-time EBS mappings from the labels
//!   `sagemaker.amazonaws.com/num-eni-attachments` and
//!   `…/num-block-device-mappings` where the Node carries them; otherwise 1
//!   and 0, the reference's defaults.

use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::Api;

use super::{K8sError, bounded};
use crate::metadata::InstanceInfo;

/// Label: the zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// Label: the region.
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";
/// Label: the instance type.
pub const INSTANCE_TYPE_LABEL: &str = "node.kubernetes.io/instance-type";
/// Label: attached network interfaces (set on SageMaker HyperPod nodes).
pub const ENI_COUNT_LABEL: &str = "sagemaker.amazonaws.com/num-eni-attachments";
/// Label: boot-time EBS mappings (set on SageMaker HyperPod nodes).
pub const BDM_COUNT_LABEL: &str = "sagemaker.amazonaws.com/num-block-device-mappings";

/// The EC2 instance id in a providerID: the last path segment of an
/// `aws://` id, `i-<hex>` (or the reference's HyperPod form
/// `hyperpod-<cluster>-i-<hex>`, kept whole as the reference keeps it).
pub fn instance_id_of(provider_id: &str) -> Option<String> {
    if !provider_id.starts_with("aws://") {
        return None;
    }
    let segment = provider_id.rsplit('/').next()?;
    let at = segment.rfind("i-")?;
    let (prefix, hex) = (&segment[..at], &segment[at + 2..]);
    let prefix_ok = prefix.is_empty() || (prefix.starts_with("hyperpod-") && prefix.ends_with('-'));
    (prefix_ok && !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit()))
        .then(|| segment.to_string())
}

/// The identity a Node describes.
pub fn from_node(node: &Node) -> Result<InstanceInfo, K8sError> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let bad = |why: String| K8sError::Node {
        node: name.clone(),
        why,
    };
    let provider = node
        .spec
        .as_ref()
        .and_then(|s| s.provider_id.clone())
        .unwrap_or_default();
    let instance_id = instance_id_of(&provider).ok_or_else(|| {
        bad(format!(
            "spec.providerID {provider:?} does not name an EC2 instance (aws:///<zone>/i-…)"
        ))
    })?;
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let label = |key: &str| {
        labels
            .get(key)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| bad(format!("has no label {key}")))
    };
    let count = |key: &str, default: u32| {
        match labels.get(key) {
        None => default,
        Some(v) => v.trim().parse().unwrap_or_else(|_| {
            tracing::warn!(node = %name, label = key, value = %v, default, "not a count; using the default");
            default
        }),
    }
    };
    let instance_type = label(INSTANCE_TYPE_LABEL)?;
    Ok(InstanceInfo {
        instance_id,
        availability_zone: label(ZONE_LABEL)?,
        region: label(REGION_LABEL)?,
        instance_type: instance_type
            .strip_prefix("ml.")
            .unwrap_or(&instance_type)
            .to_string(),
        enis: count(ENI_COUNT_LABEL, 1).max(1),
        extra_mappings: count(BDM_COUNT_LABEL, 0),
    })
}

/// Reads the Node `name` and the identity it describes.
pub async fn load(
    client: kube::Client,
    name: &str,
    limit: Duration,
) -> Result<InstanceInfo, K8sError> {
    let nodes: Api<Node> = Api::all(client);
    let node = bounded(&format!("get node {name}"), limit, nodes.get(name)).await?;
    from_node(&node)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_ids() {
        for (id, want) in [
            (
                "aws:///us-east-1a/i-0123456789abcdef0",
                Some("i-0123456789abcdef0"),
            ),
            (
                "aws:///us-east-1a/hyperpod-abc123-i-0123456789abcdef0",
                Some("hyperpod-abc123-i-0123456789abcdef0"),
            ),
            ("gce://project/us-central1-a/node-1", None),
            ("aws:///us-east-1a/", None),
            ("", None),
            ("kind://docker/kind/kind-worker", None),
        ] {
            assert_eq!(instance_id_of(id).as_deref(), want, "{id}");
        }
    }
}
