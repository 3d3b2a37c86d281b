//! Tags on what the driver creates: the standard ones the IAM policy keys
//! on, `--extra-tags` / `--k8s-tag-cluster-id`, and user tags from
//! `tagSpecification_N` parameters with their `{{ .Name }}` templates.

use crate::contract::tags;
use crate::error::{Error, Result};

/// Values the `{{ .X }}` templates of tagSpecification_N may use.
#[derive(Debug, Clone, Default)]
pub struct TagContext {
    vars: Vec<(&'static str, Option<String>, &'static str)>,
}

impl TagContext {
    /// Templates of a StorageClass: PVCName, PVCNamespace, PVName.
    pub fn volume(pvc: &Option<String>, namespace: &Option<String>, pv: &Option<String>) -> Self {
        TagContext {
            vars: vec![
                ("PVCName", pvc.clone(), "csi.storage.k8s.io/pvc/name"),
                (
                    "PVCNamespace",
                    namespace.clone(),
                    "csi.storage.k8s.io/pvc/namespace",
                ),
                ("PVName", pv.clone(), "csi.storage.k8s.io/pv/name"),
            ],
        }
    }

    /// Templates of a VolumeSnapshotClass.
    pub fn snapshot(
        name: &Option<String>,
        namespace: &Option<String>,
        content: &Option<String>,
    ) -> Self {
        TagContext {
            vars: vec![
                (
                    "VolumeSnapshotName",
                    name.clone(),
                    "csi.storage.k8s.io/volumesnapshot/name",
                ),
                (
                    "VolumeSnapshotNamespace",
                    namespace.clone(),
                    "csi.storage.k8s.io/volumesnapshot/namespace",
                ),
                (
                    "VolumeSnapshotContentName",
                    content.clone(),
                    "csi.storage.k8s.io/volumesnapshotcontent/name",
                ),
            ],
        }
    }

    /// Fills `{{ .X }}` placeholders in `text` (from parameter `key`).
    fn render(&self, key: &str, text: &str) -> Result<String> {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after.find("}}").ok_or_else(|| {
                Error::InvalidArgument(format!("parameter {key}: unclosed {{{{ in {text:?}"))
            })?;
            let var = after[..end].trim();
            let name = var.strip_prefix('.').unwrap_or(var);
            let (_, value, source) =
                self.vars
                    .iter()
                    .find(|(n, _, _)| *n == name)
                    .ok_or_else(|| {
                        let known: Vec<_> =
                            self.vars.iter().map(|(n, _, _)| format!(".{n}")).collect();
                        Error::InvalidArgument(format!(
                            "parameter {key}: unknown template {{{{ {var} }}}} (known: {})",
                            known.join(", ")
                        ))
                    })?;
            let value = value.as_ref().ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "parameter {key} uses {{{{ .{name} }}}} but the request has no {source} \
                     (run the sidecar with --extra-create-metadata)"
                ))
            })?;
            out.push_str(value);
            rest = &after[end + 2..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// Whether a tag key belongs to the driver or AWS and may not be set by users.
pub fn is_reserved(key: &str) -> bool {
    key == tags::VOLUME_NAME
        || key == tags::SNAPSHOT_NAME
        || key == tags::CLUSTER
        || key == tags::KUBERNETES_CLUSTER
        || key.starts_with(tags::CREATED_FOR_PREFIX)
        || key.starts_with(tags::CLUSTER_ID_PREFIX)
        || key.to_ascii_lowercase().starts_with("aws:")
}

/// Checks one user tag against EC2's and our rules.
pub fn check_tag(source: &str, key: &str, value: &str) -> Result<()> {
    if key.is_empty() || key.len() > 128 || value.len() > 256 {
        return Err(Error::InvalidArgument(format!(
            "{source}: tag {key:?}={value:?} breaks EC2's limits (key 1..=128, value ≤ 256 characters)"
        )));
    }
    if is_reserved(key) {
        return Err(Error::InvalidArgument(format!(
            "{source}: tag key {key:?} is reserved for the driver or AWS"
        )));
    }
    Ok(())
}

/// Parses `tagSpecification_N` parameters ("key=value", templated).
pub fn parse_specifications(
    specs: &[(&String, &String)],
    ctx: &TagContext,
) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (param, spec) in specs {
        let (key, value) = spec.split_once('=').ok_or_else(|| {
            Error::InvalidArgument(format!(
                "parameter {param}: {spec:?} is not of the form key=value"
            ))
        })?;
        let key = ctx.render(param, key.trim())?;
        let value = ctx.render(param, value.trim())?;
        check_tag(&format!("parameter {param}"), &key, &value)?;
        out.push((key, value));
    }
    Ok(out)
}

/// Parses `--extra-tags k=v,k2=v2`.
pub fn parse_extra_tags(flag: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for item in flag.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (k, v) = item.split_once('=').ok_or_else(|| {
            Error::InvalidArgument(format!(
                "--extra-tags: {item:?} is not of the form key=value"
            ))
        })?;
        check_tag("--extra-tags", k.trim(), v.trim())?;
        out.push((k.trim().to_string(), v.trim().to_string()));
    }
    Ok(out)
}

/// Tags every created object gets from the driver's flags.
#[derive(Debug, Clone, Default)]
pub struct DriverTags {
    /// `--extra-tags`.
    pub extra: Vec<(String, String)>,
    /// `--k8s-tag-cluster-id`.
    pub cluster_id: Option<String>,
}

impl DriverTags {
    /// The cluster tag, extra tags and cluster id tags, in that order.
    pub fn common(&self) -> Vec<(String, String)> {
        let mut out = vec![(tags::CLUSTER.to_string(), "true".to_string())];
        out.extend(self.extra.iter().cloned());
        if let Some(id) = &self.cluster_id {
            out.push((tags::cluster_id_key(id), "owned".into()));
            out.push((tags::KUBERNETES_CLUSTER.into(), id.clone()));
        }
        out
    }
}

/// Tags of a new volume: name, driver tags, created-for tags, user tags.
pub fn volume_tags(
    common: Vec<(String, String)>,
    name: &str,
    params: &super::params::VolumeParams,
) -> Vec<(String, String)> {
    let mut out = vec![(tags::VOLUME_NAME.to_string(), name.to_string())];
    out.extend(common);
    for (key, value) in [
        (tags::PVC_NAME, &params.pvc_name),
        (tags::PVC_NAMESPACE, &params.pvc_namespace),
        (tags::PV_NAME, &params.pv_name),
    ] {
        if let Some(v) = value {
            out.push((key.to_string(), v.clone()));
        }
    }
    for (k, v) in &params.tags {
        push_unique(&mut out, k.clone(), v.clone());
    }
    out
}

/// Tags of a new snapshot named `name`: name, driver tags, user tags.
pub fn snapshot_tags(
    common: Vec<(String, String)>,
    name: &str,
    user: &[(String, String)],
) -> Vec<(String, String)> {
    let mut out = vec![(tags::SNAPSHOT_NAME.to_string(), name.to_string())];
    out.extend(common);
    for (k, v) in user {
        push_unique(&mut out, k.clone(), v.clone());
    }
    out
}

/// Appends `(key, value)` unless the key is already present (earlier wins:
/// the driver's tags come first and cannot be overridden).
pub fn push_unique(tags: &mut Vec<(String, String)>, key: String, value: String) {
    if !tags.iter().any(|(k, _)| *k == key) {
        tags.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_fill_and_fail_clearly() {
        let ctx = TagContext::volume(&Some("data-mysql-0".into()), &Some("db".into()), &None);
        assert_eq!(
            ctx.render("t", "pvc-{{ .PVCName }}/{{.PVCNamespace}}")
                .unwrap(),
            "pvc-data-mysql-0/db"
        );
        let err = ctx
            .render("tagSpecification_1", "{{ .PVName }}")
            .unwrap_err();
        assert!(
            err.to_string().contains("csi.storage.k8s.io/pv/name"),
            "{err}"
        );
        let err = ctx.render("tagSpecification_1", "{{ .Nope }}").unwrap_err();
        assert!(err.to_string().contains(".Nope"), "{err}");
    }

    #[test]
    fn reserved_and_malformed_tags_are_refused() {
        let ctx = TagContext::default();
        for bad in [
            "CSIVolumeName=x",
            "ebs.csi.aws.com/cluster=false",
            "aws:foo=1",
            "novalue",
        ] {
            let (k, v) = (String::from("tagSpecification_1"), bad.to_string());
            assert!(parse_specifications(&[(&k, &v)], &ctx).is_err(), "{bad}");
        }
        let (k, v) = (
            String::from("tagSpecification_1"),
            String::from("team = storage=blue"),
        );
        assert_eq!(
            parse_specifications(&[(&k, &v)], &ctx).unwrap(),
            vec![("team".to_string(), "storage=blue".to_string())]
        );
    }

    #[test]
    fn volume_tags_in_order_and_user_tags_cannot_override() {
        let mut params = super::super::params::VolumeParams {
            pvc_name: Some("data-0".into()),
            ..Default::default()
        };
        params.tags = vec![
            ("team".into(), "db".into()),
            ("CSIVolumeName".into(), "x".into()),
        ];
        let out = volume_tags(
            vec![("ebs.csi.aws.com/cluster".into(), "true".into())],
            "pvc-1",
            &params,
        );
        assert_eq!(out[0], ("CSIVolumeName".into(), "pvc-1".into()));
        assert_eq!(out[1], ("ebs.csi.aws.com/cluster".into(), "true".into()));
        assert!(out.contains(&("kubernetes.io/created-for/pvc/name".into(), "data-0".into())));
        assert_eq!(out.last().unwrap(), &("team".to_string(), "db".to_string()));
    }

    #[test]
    fn extra_tags_and_cluster_id() {
        let t = DriverTags {
            extra: parse_extra_tags("a=1, b=2").unwrap(),
            cluster_id: Some("prod".into()),
        };
        let common = t.common();
        assert_eq!(common[0], (tags::CLUSTER.into(), "true".into()));
        assert!(common.contains(&("b".into(), "2".into())));
        assert!(common.contains(&("kubernetes.io/cluster/prod".into(), "owned".into())));
        assert!(parse_extra_tags("a").is_err());
    }
}
