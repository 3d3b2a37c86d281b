//! How many EBS volumes the CO may attach to this node (NodeGetInfo's
//! max_volumes_per_node), from EC2's published attachment limits.
//!
//! Three kinds of instance types (EC2 user guide, "Amazon EBS volume limits"):
//! - Xen types: 39 EBS volumes besides the root (40 names with it);
//! - Nitro types with a *dedicated* EBS limit (M7i, C7a, R8g, …): the limit
//!   depends on the size and is not shared with anything else;
//! - all other Nitro types: 28 attachments *shared* between EBS volumes,
//!   network interfaces and NVMe instance-store disks (31 on most `.metal`).
//!
//! From the limit the driver subtracts, on shared types, the attached ENIs
//! and the instance-store disks, and always the volumes that are not the
//! CSI driver's (root and other boot-time mappings; `--reserved-volume-attachments`
//! overrides that count). `--volume-attach-limit` replaces the whole sum.
//! The answer is never below 1: Kubernetes reads 0 as "no limit".

/// Xen-based families: 39 EBS attachments, no sharing with ENIs.
const XEN_FAMILIES: &[&str] = &[
    "c1", "c3", "c4", "cc2", "cr1", "d2", "f1", "g2", "g3", "g3s", "h1", "hs1", "i2", "i3", "m1",
    "m2", "m3", "m4", "p2", "p3", "r3", "r4", "t1", "t2", "x1", "x1e",
];

/// Nitro families with a dedicated EBS volume limit that depends on size.
const DEDICATED_FAMILIES: &[&str] = &[
    "m7a", "m7i", "m7i-flex", "m8a", "m8g", "m8gd", "m8i", "m8i-flex", "c7a", "c7i", "c7i-flex",
    "c8a", "c8g", "c8gd", "c8gn", "c8i", "c8i-flex", "r7a", "r7i", "r7iz", "r8a", "r8g", "r8gd",
    "r8i", "r8i-flex", "x8g", "i7i", "i7ie", "i8g", "i8ge", "f2", "g6", "g6e", "gr6", "p5", "p5e",
    "p5en", "trn2", "u7i", "u7in",
];

/// Nitro families with the shared limit (a non-exhaustive list of the
/// common ones; an unlisted type falls back to [`UNKNOWN_TYPE_LIMIT`]).
const SHARED_FAMILIES: &[&str] = &[
    "a1", "c5", "c5a", "c5ad", "c5d", "c5n", "c6a", "c6g", "c6gd", "c6gn", "c6i", "c6id", "c6in",
    "c7g", "c7gd", "c7gn", "d3", "d3en", "g4ad", "g4dn", "g5", "g5g", "i3en", "i4g", "i4i",
    "im4gn", "inf1", "inf2", "is4gen", "m5", "m5a", "m5ad", "m5d", "m5dn", "m5n", "m5zn", "m6a",
    "m6g", "m6gd", "m6i", "m6id", "m6idn", "m6in", "m7g", "m7gd", "p3dn", "p4d", "r5", "r5a",
    "r5ad", "r5b", "r5d", "r5dn", "r5n", "r6a", "r6g", "r6gd", "r6i", "r6id", "r6idn", "r6in",
    "r7g", "r7gd", "t3", "t3a", "t4g", "trn1", "x2gd", "x2idn", "x2iedn", "x2iezn", "z1d",
];

/// Shared attachments on most Nitro types.
const NITRO_SHARED: u32 = 28;
/// Shared attachments on Nitro `.metal` types.
const NITRO_SHARED_METAL: u32 = 31;
/// EBS attachments on Xen types.
const XEN_LIMIT: u32 = 39;
/// Shared limit assumed for a type not in the tables: one below the usual
/// Nitro 28 to leave room for an instance-store disk we cannot know about.
pub const UNKNOWN_TYPE_LIMIT: u32 = 27;

/// An instance type's published EBS attachment limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachLimit {
    /// Shared between EBS volumes, ENIs and NVMe instance-store disks.
    Shared(u32),
    /// EBS volumes only.
    Dedicated(u32),
}

/// The published limit for `instance_type`, or None when the type is unknown.
pub fn attach_limit(instance_type: &str) -> Option<AttachLimit> {
    let (family, size) = instance_type.split_once('.')?;
    if family == "i3" && size == "metal" {
        return Some(AttachLimit::Shared(NITRO_SHARED_METAL));
    }
    if XEN_FAMILIES.contains(&family) {
        return Some(AttachLimit::Dedicated(XEN_LIMIT));
    }
    if DEDICATED_FAMILIES.contains(&family) {
        let limit = match size {
            "16xlarge" | "18xlarge" => 48,
            "24xlarge" => 64,
            "32xlarge" => 88,
            "48xlarge" | "96xlarge" => 128,
            "metal-16xl" | "metal-24xl" | "metal" => 39,
            "metal-32xl" | "metal-48xl" | "metal-96xl" => 79,
            _ => 32,
        };
        return Some(AttachLimit::Dedicated(limit));
    }
    if family == "hpc7a" {
        // Dedicated, but 27 at every size.
        return Some(AttachLimit::Dedicated(27));
    }
    if SHARED_FAMILIES.contains(&family) {
        let total = if size.starts_with("metal") {
            NITRO_SHARED_METAL
        } else {
            NITRO_SHARED
        };
        return Some(AttachLimit::Shared(
            total - instance_store_disks(family, size),
        ));
    }
    None
}

/// NVMe instance-store disks of a shared-limit type (they take attachment
/// slots). Families with local disks carry a `d` after the generation
/// (`m5d`, `c6id`, `r5dn`, `z1d`); counts follow the published sizes of the
/// common families, rounded up where families differ.
fn instance_store_disks(family: &str, size: &str) -> u32 {
    let has_disks = family.len() > 2 && family[2..].contains('d')
        || matches!(
            family,
            "z1d" | "d3" | "d3en" | "i3en" | "i4i" | "i4g" | "im4gn" | "is4gen"
        );
    if !has_disks {
        return 0;
    }
    match size {
        "metal" | "24xlarge" | "32xlarge" => 4,
        "12xlarge" | "16xlarge" | "18xlarge" => 2,
        "8xlarge" | "9xlarge" if family.starts_with('m') || family.starts_with('r') => 2,
        "4xlarge" if family == "m5d" || family == "r5d" => 2,
        _ => 1,
    }
}

/// What the volume limit is computed from.
#[derive(Debug, Clone, Default)]
pub struct LimitInputs<'a> {
    /// The instance type.
    pub instance_type: &'a str,
    /// Attached network interfaces (IMDS; 1 when unknown).
    pub enis: u32,
    /// EBS block-device mappings besides the root (IMDS).
    pub extra_mappings: u32,
    /// `--volume-attach-limit`.
    pub volume_attach_limit: Option<u32>,
    /// `--reserved-volume-attachments`.
    pub reserved_volume_attachments: Option<u32>,
}

/// max_volumes_per_node, and a warning to log when the type is unknown.
pub fn max_volumes(inputs: &LimitInputs<'_>) -> (u32, Option<String>) {
    if let Some(limit) = inputs.volume_attach_limit {
        return (limit, None);
    }
    let mut warning = None;
    let limit = attach_limit(inputs.instance_type).unwrap_or_else(|| {
        warning = Some(format!(
            "instance type {:?} is not in the attachment-limit table; assuming a shared limit \
             of {UNKNOWN_TYPE_LIMIT} (set --volume-attach-limit to override)",
            inputs.instance_type
        ));
        AttachLimit::Shared(UNKNOWN_TYPE_LIMIT)
    });
    // The root volume always takes a slot; other boot-time EBS mappings too.
    let reserved = inputs
        .reserved_volume_attachments
        .unwrap_or(inputs.extra_mappings + 1);
    let available = match limit {
        AttachLimit::Dedicated(n) => n,
        AttachLimit::Shared(n) => n.saturating_sub(inputs.enis),
    };
    (available.saturating_sub(reserved).max(1), warning)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(instance_type: &str, enis: u32) -> u32 {
        max_volumes(&LimitInputs {
            instance_type,
            enis,
            ..LimitInputs::default()
        })
        .0
    }

    #[test]
    fn shared_nitro_types_lose_slots_to_enis_root_and_disks() {
        assert_eq!(limit("m5.large", 1), 26);
        assert_eq!(limit("m6i.xlarge", 2), 25);
        assert_eq!(limit("c5d.large", 1), 25);
        assert_eq!(limit("m5d.24xlarge", 1), 22);
        assert_eq!(limit("m5.metal", 1), 29);
        assert_eq!(limit("t3.medium", 3), 24);
        assert_eq!(attach_limit("r6i.large"), Some(AttachLimit::Shared(28)));
    }

    #[test]
    fn dedicated_and_xen_types_ignore_enis() {
        assert_eq!(limit("m7i.large", 4), 31);
        assert_eq!(limit("c7a.48xlarge", 4), 127);
        assert_eq!(limit("r8g.16xlarge", 1), 47);
        assert_eq!(limit("m4.large", 2), 38);
        assert_eq!(limit("t2.micro", 1), 38);
    }

    #[test]
    fn flags_override_and_unknown_types_warn() {
        let (n, warning) = max_volumes(&LimitInputs {
            instance_type: "zz9.huge",
            enis: 1,
            ..LimitInputs::default()
        });
        assert_eq!(n, UNKNOWN_TYPE_LIMIT - 2);
        assert!(warning.unwrap().contains("zz9.huge"));
        let inputs = LimitInputs {
            instance_type: "m5.large",
            enis: 1,
            extra_mappings: 2,
            ..LimitInputs::default()
        };
        assert_eq!(max_volumes(&inputs).0, 24);
        let reserved = LimitInputs {
            reserved_volume_attachments: Some(0),
            ..inputs.clone()
        };
        assert_eq!(max_volumes(&reserved).0, 27);
        let fixed = LimitInputs {
            volume_attach_limit: Some(5),
            ..inputs
        };
        assert_eq!(max_volumes(&fixed), (5, None));
        let tiny = LimitInputs {
            instance_type: "m5.large",
            enis: 30,
            ..LimitInputs::default()
        };
        assert_eq!(
            max_volumes(&tiny).0,
            1,
            "never 0: Kubernetes reads 0 as unlimited"
        );
    }
}
