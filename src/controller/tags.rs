//! Tags on what the driver creates, with the reference driver's rules
//! (its docs/tagging.md and controller code, v1.64.0):
//!
//! - the driver's own tags: the name tag, `ebs.csi.aws.com/cluster=true`,
//!   the created-for tags, and with `--k8s-tag-cluster-id=X`
//!   `kubernetes.io/cluster/X=owned`, `Name=X-dynamic-<name>`,
//!   `ebs.csi.aws.com/cluster-name=X` (and `KubernetesCluster=X` on volumes);
//! - user tags from `tagSpecification…` parameters and `--extra-tags`, each
//!   `key=value` with the value rendered as a Go template
//!   ([`super::template`]) over the PV or VolumeSnapshot metadata;
//! - precedence, later wins: on volumes the driver's tags, then the
//!   StorageClass's, then the VolumeAttributesClass's, then `--extra-tags`;
//!   on snapshots the driver's tags, then `--extra-tags` (not templated),
//!   then the VolumeSnapshotClass's. Reserved keys cannot be set by users at
//!   all, so what a user can override is `Name` and `KubernetesCluster`;
//! - a tag that cannot be rendered or is invalid fails the request, or with
//!   `--warn-on-invalid-tag` is left out with a warning; a spec without `=`
//!   fails even then (as in the reference).

use std::collections::HashMap;

use super::template;
use crate::contract::tags;
use crate::error::{Error, Result};

/// The PV metadata the external-provisioner (and resizer) send with
/// `--extra-create-metadata` / `--extra-modify-metadata`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PvMeta {
    /// `csi.storage.k8s.io/pvc/name`.
    pub pvc_name: Option<String>,
    /// `csi.storage.k8s.io/pvc/namespace`.
    pub pvc_namespace: Option<String>,
    /// `csi.storage.k8s.io/pv/name`.
    pub pv_name: Option<String>,
}

impl PvMeta {
    /// Reads a metadata key (lowercased), returning whether it was one.
    pub fn take(&mut self, lower_key: &str, value: &str) -> bool {
        let slot = match lower_key {
            "csi.storage.k8s.io/pvc/name" => &mut self.pvc_name,
            "csi.storage.k8s.io/pvc/namespace" => &mut self.pvc_namespace,
            "csi.storage.k8s.io/pv/name" => &mut self.pv_name,
            _ => return false,
        };
        *slot = Some(value.to_string());
        true
    }

    /// The template variables (the reference's `PVProps`): missing ones
    /// render as "", as Go prints a zero field.
    fn vars(&self) -> HashMap<&'static str, String> {
        HashMap::from([
            ("PVCName", self.pvc_name.clone().unwrap_or_default()),
            (
                "PVCNamespace",
                self.pvc_namespace.clone().unwrap_or_default(),
            ),
            ("PVName", self.pv_name.clone().unwrap_or_default()),
        ])
    }
}

/// The VolumeSnapshot metadata the external-snapshotter sends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// `csi.storage.k8s.io/volumesnapshot/name`.
    pub name: Option<String>,
    /// `csi.storage.k8s.io/volumesnapshot/namespace`.
    pub namespace: Option<String>,
    /// `csi.storage.k8s.io/volumesnapshotcontent/name`.
    pub content: Option<String>,
}

impl SnapshotMeta {
    /// Reads a metadata key (lowercased), returning whether it was one.
    pub fn take(&mut self, lower_key: &str, value: &str) -> bool {
        let slot = match lower_key {
            "csi.storage.k8s.io/volumesnapshot/name" => &mut self.name,
            "csi.storage.k8s.io/volumesnapshot/namespace" => &mut self.namespace,
            "csi.storage.k8s.io/volumesnapshotcontent/name" => &mut self.content,
            _ => return false,
        };
        *slot = Some(value.to_string());
        true
    }

    /// The template variables (the reference's `VolumeSnapshotProps`).
    fn vars(&self) -> HashMap<&'static str, String> {
        HashMap::from([
            ("VolumeSnapshotName", self.name.clone().unwrap_or_default()),
            (
                "VolumeSnapshotNamespace",
                self.namespace.clone().unwrap_or_default(),
            ),
            (
                "VolumeSnapshotContentName",
                self.content.clone().unwrap_or_default(),
            ),
        ])
    }
}

/// Whether a parameter key holds a tag specification: the reference's
/// prefix `tagSpecification` followed by anything (`tagSpecification_1`,
/// `tagSpecificationDept`); matched without regard to case here, as every
/// other key is.
pub fn is_tag_spec_key(key: &str) -> bool {
    key.len() >= 16 && key[..16].eq_ignore_ascii_case("tagSpecification")
}

/// Whether a parameter key names a tag to delete (`tagDeletion…`).
pub fn is_tag_deletion_key(key: &str) -> bool {
    key.len() >= 11 && key[..11].eq_ignore_ascii_case("tagDeletion")
}

/// Why users may not set `key`, if they may not: the reference driver's
/// reserved keys and prefixes, and AWS's `aws:` prefix.
pub fn reserved(key: &str) -> Option<String> {
    if [tags::VOLUME_NAME, tags::SNAPSHOT_NAME, tags::CLUSTER_NAME].contains(&key) {
        return Some(format!("tag key '{key}' is reserved"));
    }
    for prefix in ["kubernetes.io", "ebs.csi.aws.com/"] {
        if key.starts_with(prefix) {
            return Some(format!("tag key prefix '{prefix}' is reserved"));
        }
    }
    if key.to_ascii_lowercase().starts_with("aws:") {
        return Some("tag key prefix 'aws:' is reserved for AWS".into());
    }
    None
}

/// Checks one user tag: not reserved, within EC2's limits (keys 1..=128
/// characters, values ≤ 256), so a bad tag fails here with its name
/// rather than as an EC2 error.
pub fn check_tag(key: &str, value: &str) -> std::result::Result<(), String> {
    if let Some(why) = reserved(key) {
        return Err(why);
    }
    if key.is_empty() || key.chars().count() > 128 || value.chars().count() > 256 {
        return Err(format!(
            "tag {key:?}={value:?} breaks EC2's limits (key 1..=128, value ≤ 256 characters)"
        ));
    }
    Ok(())
}

/// How user tags are handled.
#[derive(Debug, Clone, Copy, Default)]
pub struct TagPolicy {
    /// `--warn-on-invalid-tag`: leave bad tags out (logged) instead of
    /// failing the request.
    pub warn_on_invalid: bool,
}

impl TagPolicy {
    /// Renders and checks one `key=value` spec from `source`: the tag, or
    /// None when it is left out under `--warn-on-invalid-tag`.
    pub fn render(
        self,
        source: &str,
        spec: &str,
        vars: &HashMap<&str, String>,
    ) -> Result<Option<(String, String)>> {
        let (key, value) = spec.split_once('=').ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{source}: the key-value pair doesn't contain a value (string: {spec})"
            ))
        })?;
        let key = key.trim();
        let problem = match template::render(value.trim(), vars) {
            Err(e) => format!("Error interpolating tag value: {e}"),
            Ok(value) => match check_tag(key, &value) {
                Ok(()) => return Ok(Some((key.to_string(), value))),
                Err(why) => format!("Invalid tag value: {why}"),
            },
        };
        if self.warn_on_invalid {
            tracing::warn!(
                source,
                spec,
                "{problem}; tag left out (--warn-on-invalid-tag)"
            );
            Ok(None)
        } else {
            Err(Error::InvalidArgument(format!("{source}: {problem}")))
        }
    }
}

/// Parses `--extra-tags k=v,k2=v2` into its specs (values may be templates;
/// they are rendered per volume). Bad keys fail start-up.
pub fn parse_extra_tags(flag: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for item in flag.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some((key, _)) = item.split_once('=') else {
            return Err(Error::InvalidArgument(format!(
                "--extra-tags: {item:?} is not of the form key=value"
            )));
        };
        if let Some(why) = reserved(key.trim()) {
            return Err(Error::InvalidArgument(format!("--extra-tags: {why}")));
        }
        out.push(item.to_string());
    }
    Ok(out)
}

/// Tags every created object gets from the driver's flags.
#[derive(Debug, Clone, Default)]
pub struct DriverTags {
    /// `--extra-tags`, as `key=value` specs.
    pub extra: Vec<String>,
    /// `--k8s-tag-cluster-id`.
    pub cluster_id: Option<String>,
    /// `--warn-on-invalid-tag`.
    pub policy: TagPolicy,
}

/// Sets `key` to `value`, replacing an earlier value (later wins).
fn set(tags: &mut Vec<(String, String)>, key: String, value: String) {
    match tags.iter_mut().find(|(k, _)| *k == key) {
        Some(slot) => slot.1 = value,
        None => tags.push((key, value)),
    }
}

impl DriverTags {
    /// Tags of a new volume named `name`: the driver's, `driver_extra`
    /// (the IOPS tags a StorageClass asks for), then the user's (see the
    /// module docs for the order).
    pub fn volume(
        &self,
        name: &str,
        meta: &PvMeta,
        driver_extra: &[(String, String)],
        user: &[(String, String)],
    ) -> Result<Vec<(String, String)>> {
        let mut out = vec![
            (tags::VOLUME_NAME.to_string(), name.to_string()),
            (tags::CLUSTER.to_string(), "true".to_string()),
        ];
        out.extend(driver_extra.iter().cloned());
        for (key, value) in [
            (tags::PVC_NAME, &meta.pvc_name),
            (tags::PVC_NAMESPACE, &meta.pvc_namespace),
            (tags::PV_NAME, &meta.pv_name),
        ] {
            if let Some(v) = value {
                out.push((key.to_string(), v.clone()));
            }
        }
        if let Some(id) = &self.cluster_id {
            out.extend([
                (tags::cluster_id_key(id), "owned".to_string()),
                ("Name".to_string(), format!("{id}-dynamic-{name}")),
                (tags::KUBERNETES_CLUSTER.to_string(), id.clone()),
                (tags::CLUSTER_NAME.to_string(), id.clone()),
            ]);
        }
        let vars = meta.vars();
        let extra = self
            .extra
            .iter()
            .map(|s| ("--extra-tags".to_string(), s.clone()));
        for (source, spec) in user.iter().cloned().chain(extra) {
            if let Some((k, v)) =
                self.policy
                    .render(&format!("parameter {source}"), &spec, &vars)?
            {
                set(&mut out, k, v);
            }
        }
        Ok(out)
    }

    /// Tags of a new snapshot named `name` (see the module docs).
    pub fn snapshot(
        &self,
        name: &str,
        meta: &SnapshotMeta,
        user: &[(String, String)],
    ) -> Result<Vec<(String, String)>> {
        let mut out = vec![
            (tags::SNAPSHOT_NAME.to_string(), name.to_string()),
            (tags::CLUSTER.to_string(), "true".to_string()),
        ];
        if let Some(id) = &self.cluster_id {
            out.extend([
                (tags::cluster_id_key(id), "owned".to_string()),
                ("Name".to_string(), format!("{id}-dynamic-{name}")),
                (tags::CLUSTER_NAME.to_string(), id.clone()),
            ]);
        }
        // The reference copies --extra-tags onto snapshots as written.
        for spec in &self.extra {
            if let Some((k, v)) = spec.split_once('=') {
                set(&mut out, k.trim().to_string(), v.trim().to_string());
            }
        }
        let vars = meta.vars();
        for (source, spec) in user {
            if let Some((k, v)) = self
                .policy
                .render(&format!("parameter {source}"), spec, &vars)?
            {
                set(&mut out, k, v);
            }
        }
        Ok(out)
    }
}

/// Renders VolumeAttributesClass tag specs (always strict, as the
/// reference's modify path is).
pub fn modify_tags(specs: &[(String, String)], meta: &PvMeta) -> Result<Vec<(String, String)>> {
    let vars = meta.vars();
    let strict = TagPolicy::default();
    let mut out = Vec::new();
    for (source, spec) in specs {
        if let Some((k, v)) = strict.render(&format!("mutable parameter {source}"), spec, &vars)? {
            set(&mut out, k, v);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
