//! StorageClass parameters of CreateVolume: parsed, validated the way EC2
//! validates them, and turned into what the cloud layer and the node need.
//!
//! Keys are matched case-insensitively (the reference driver does), and an
//! unknown key is refused naming it: a typo must not silently create a volume
//! of the wrong kind.

use std::collections::HashMap;

use super::tags::{self, TagContext};
use crate::error::{Error, Result};

/// Volume context keys carrying format options to the node.
pub const FORMAT_KEYS: [&str; 6] = [
    "blockSize",
    "inodeSize",
    "bytesPerInode",
    "numberOfInodes",
    "ext4BigAlloc",
    "ext4ClusterSize",
];

/// Volume context key carrying the StorageClass's filesystem type, for COs
/// whose capabilities name none (Kubernetes always names one).
pub const FS_TYPE_CONTEXT_KEY: &str = "csi.storage.k8s.io/fstype";

/// Filesystems the node can make.
pub const FS_TYPES: [&str; 4] = ["ext4", "ext3", "ext2", "xfs"];

/// Limits EC2 enforces per volume type.
#[derive(Debug, Clone, Copy)]
pub struct TypeLimits {
    /// Smallest size, GiB.
    pub min_gib: i64,
    /// Largest size, GiB.
    pub max_gib: i64,
    /// IOPS range and the IOPS-per-GiB cap, for types with provisioned IOPS.
    pub iops: Option<(i64, i64, i64)>,
    /// Whether throughput is provisioned (gp3 only).
    pub throughput: Option<(i64, i64)>,
}

/// EC2's limits per type (AWS EBS volume types documentation; gp3 as
/// raised in 2025 to 64 TiB, 80,000 IOPS and 2,000 MiB/s).
pub fn limits(volume_type: &str) -> Option<TypeLimits> {
    let l = |min_gib, max_gib, iops, throughput| {
        Some(TypeLimits {
            min_gib,
            max_gib,
            iops,
            throughput,
        })
    };
    match volume_type {
        "gp2" => l(1, 16384, None, None),
        "gp3" => l(1, 65536, Some((3000, 80000, 500)), Some((125, 2000))),
        "io1" => l(4, 16384, Some((100, 64000, 50)), None),
        "io2" => l(4, 65536, Some((100, 256000, 1000)), None),
        "st1" | "sc1" => l(125, 16384, None, None),
        "standard" => l(1, 1024, None, None),
        _ => None,
    }
}

/// Parsed StorageClass parameters.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VolumeParams {
    /// EBS type.
    pub volume_type: String,
    /// Fixed IOPS.
    pub iops: Option<i64>,
    /// IOPS per GiB.
    pub iops_per_gb: Option<i64>,
    /// Raise iopsPerGB × size to the type's minimum when below it.
    pub allow_iops_increase: bool,
    /// Throughput, MiB/s.
    pub throughput: Option<i64>,
    /// Encrypt.
    pub encrypted: bool,
    /// KMS key.
    pub kms_key_id: Option<String>,
    /// io2 Block Express requested.
    pub block_express: bool,
    /// Filesystem type.
    pub fs_type: String,
    /// Volume context for the node: format options, and the filesystem
    /// type when the parameters name one.
    pub format: Vec<(String, String)>,
    /// Tags from `tagSpecification_N`, templates filled in.
    pub tags: Vec<(String, String)>,
    /// `csi.storage.k8s.io/pvc/name`.
    pub pvc_name: Option<String>,
    /// `csi.storage.k8s.io/pvc/namespace`.
    pub pvc_namespace: Option<String>,
    /// `csi.storage.k8s.io/pv/name`.
    pub pv_name: Option<String>,
}

/// Parses a boolean the way Go's strconv.ParseBool does (the reference
/// driver's users write "true", "True", "1", …).
pub fn parse_bool(key: &str, value: &str) -> Result<bool> {
    match value.trim() {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        other => Err(Error::InvalidArgument(format!(
            "parameter {key}: {other:?} is not a boolean (true or false)"
        ))),
    }
}

/// Parses a positive integer.
pub fn parse_int(key: &str, value: &str) -> Result<i64> {
    match value.trim().parse::<i64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(Error::InvalidArgument(format!(
            "parameter {key}: {value:?} is not a positive integer"
        ))),
    }
}

impl VolumeParams {
    /// Parses `parameters` of a CreateVolume request.
    pub fn parse(parameters: &HashMap<String, String>) -> Result<Self> {
        let mut p = VolumeParams {
            volume_type: "gp3".into(),
            fs_type: "ext4".into(),
            ..VolumeParams::default()
        };
        let mut tag_templates = Vec::new();
        let mut format: HashMap<&'static str, String> = HashMap::new();
        let mut fs_given = false;
        // Sorted for deterministic errors and tag order.
        let mut keys: Vec<_> = parameters.iter().collect();
        keys.sort();
        for (key, value) in keys {
            let lower = key.to_ascii_lowercase();
            match lower.as_str() {
                "type" => p.volume_type = value.trim().to_ascii_lowercase(),
                "iops" => p.iops = Some(parse_int(key, value)?),
                "iopspergb" => p.iops_per_gb = Some(parse_int(key, value)?),
                "allowautoiopspergbincrease" => p.allow_iops_increase = parse_bool(key, value)?,
                "throughput" => p.throughput = Some(parse_int(key, value)?),
                "encrypted" => p.encrypted = parse_bool(key, value)?,
                "kmskeyid" => {
                    if !value.is_empty() {
                        p.kms_key_id = Some(value.clone());
                    }
                }
                "blockexpress" => p.block_express = parse_bool(key, value)?,
                "csi.storage.k8s.io/fstype" | "fstype" => {
                    if !value.is_empty() {
                        p.fs_type = value.to_ascii_lowercase();
                        fs_given = true;
                    }
                }
                "csi.storage.k8s.io/pvc/name" => p.pvc_name = Some(value.clone()),
                "csi.storage.k8s.io/pvc/namespace" => p.pvc_namespace = Some(value.clone()),
                "csi.storage.k8s.io/pv/name" => p.pv_name = Some(value.clone()),
                k if k.starts_with("tagspecification_") => tag_templates.push((key, value)),
                k => match FORMAT_KEYS.iter().find(|f| f.to_ascii_lowercase() == k) {
                    Some(canonical) => {
                        format.insert(canonical, value.trim().to_string());
                    }
                    None => {
                        return Err(Error::InvalidArgument(format!(
                            "unknown StorageClass parameter {key:?} (value {value:?})"
                        )));
                    }
                },
            }
        }
        if !FS_TYPES.contains(&p.fs_type.as_str()) {
            return Err(Error::InvalidArgument(format!(
                "parameter csi.storage.k8s.io/fstype: {:?} is not supported (use ext4, xfs, ext3 or ext2)",
                p.fs_type
            )));
        }
        if limits(&p.volume_type).is_none() {
            return Err(Error::InvalidArgument(format!(
                "parameter type: {:?} is not an EBS volume type (gp3, gp2, io1, io2, st1, sc1, standard)",
                p.volume_type
            )));
        }
        if p.kms_key_id.is_some() {
            p.encrypted = true;
        }
        if p.iops.is_some() && p.iops_per_gb.is_some() {
            return Err(Error::InvalidArgument(
                "parameters iops and iopsPerGB are mutually exclusive".into(),
            ));
        }
        if p.block_express && p.volume_type != "io2" {
            return Err(Error::InvalidArgument(format!(
                "parameter blockExpress is only valid for type io2, not {}",
                p.volume_type
            )));
        }
        p.format = validate_format(&p.fs_type, &format)?;
        if fs_given {
            p.format
                .push((FS_TYPE_CONTEXT_KEY.to_string(), p.fs_type.clone()));
        }
        let context = TagContext::volume(&p.pvc_name, &p.pvc_namespace, &p.pv_name);
        p.tags = tags::parse_specifications(&tag_templates, &context)?;
        Ok(p)
    }

    /// The IOPS and throughput to request for a volume of `size_gib`,
    /// checked against the type's limits; errors name the broken limit.
    pub fn performance(&self, size_gib: i64) -> Result<(Option<i64>, Option<i64>)> {
        let t = &self.volume_type;
        let lim = limits(t).expect("type validated at parse");
        if size_gib < lim.min_gib || size_gib > lim.max_gib {
            return Err(Error::OutOfRange(format!(
                "size {size_gib} GiB is outside the {t} range of {}..={} GiB",
                lim.min_gib, lim.max_gib
            )));
        }
        let iops = match (lim.iops, self.iops, self.iops_per_gb) {
            (None, None, None) => None,
            (None, _, _) => {
                return Err(Error::InvalidArgument(format!(
                    "volume type {t} has no provisioned IOPS; remove iops/iopsPerGB"
                )));
            }
            (Some(_), None, None) if t == "gp3" => None,
            (Some(_), None, None) => {
                return Err(Error::InvalidArgument(format!(
                    "volume type {t} needs parameter iops or iopsPerGB"
                )));
            }
            (Some((min, max, per_gib)), fixed, per_gb) => {
                let mut iops = fixed.unwrap_or_else(|| per_gb.unwrap_or(0) * size_gib);
                if per_gb.is_some() {
                    // iopsPerGB follows the reference driver: capped at the
                    // type's maxima (io2 at 64,000 unless blockExpress asks
                    // for Block Express' 256,000), raised to its minimum
                    // only if allowed.
                    let cap = if t == "io2" && !self.block_express {
                        64_000
                    } else {
                        max
                    };
                    iops = iops.min(cap).min(per_gib * size_gib.max(1));
                    if iops < min && self.allow_iops_increase {
                        iops = min;
                    }
                }
                if iops < min || iops > max {
                    return Err(Error::InvalidArgument(format!(
                        "{iops} IOPS is outside the {t} range of {min}..={max}{}",
                        if per_gb.is_some() {
                            " (set allowAutoIOPSPerGBIncrease to raise it)"
                        } else {
                            ""
                        }
                    )));
                }
                // gp3's baseline of 3000 is free at any size; above it, and
                // for io1/io2 always, EC2 caps IOPS per GiB.
                let capped_from = if t == "gp3" { min } else { 0 };
                if iops > capped_from && iops > per_gib * size_gib {
                    return Err(Error::InvalidArgument(format!(
                        "{iops} IOPS exceeds the {t} limit of {per_gib} IOPS per GiB \
                         ({} for {size_gib} GiB)",
                        per_gib * size_gib
                    )));
                }
                Some(iops)
            }
        };
        let throughput = match (lim.throughput, self.throughput) {
            (_, None) => None,
            (None, Some(_)) => {
                return Err(Error::InvalidArgument(format!(
                    "parameter throughput is only valid for gp3, not {t}"
                )));
            }
            (Some((min, max)), Some(mbps)) => {
                if mbps < min || mbps > max {
                    return Err(Error::InvalidArgument(format!(
                        "throughput {mbps} MiB/s is outside the gp3 range of {min}..={max}"
                    )));
                }
                // gp3: at most 0.25 MiB/s per provisioned IOPS above baseline.
                let effective_iops = iops.unwrap_or(3000);
                if mbps > min && mbps * 4 > effective_iops {
                    return Err(Error::InvalidArgument(format!(
                        "throughput {mbps} MiB/s exceeds gp3's 0.25 MiB/s per IOPS \
                         ({effective_iops} IOPS allow {})",
                        effective_iops / 4
                    )));
                }
                Some(mbps)
            }
        };
        Ok((iops, throughput))
    }
}

fn power_of_two_in(key: &str, value: &str, min: i64, max: i64) -> Result<()> {
    let n = parse_int(key, value)?;
    if n < min || n > max || n & (n - 1) != 0 {
        return Err(Error::InvalidArgument(format!(
            "parameter {key}: {n} must be a power of two between {min} and {max}"
        )));
    }
    Ok(())
}

/// Checks the format options against the filesystem and returns them as
/// volume context entries.
fn validate_format(
    fs: &str,
    opts: &HashMap<&'static str, String>,
) -> Result<Vec<(String, String)>> {
    let ext = fs.starts_with("ext");
    for (key, value) in opts {
        let ext_only = matches!(*key, "bytesPerInode" | "numberOfInodes");
        let ext4_only = matches!(*key, "ext4BigAlloc" | "ext4ClusterSize");
        if (ext_only && !ext) || (ext4_only && fs != "ext4") {
            return Err(Error::InvalidArgument(format!(
                "parameter {key} cannot be used with fstype {fs}"
            )));
        }
        match *key {
            "blockSize" if ext => power_of_two_in(key, value, 1024, 65536)?,
            "blockSize" => power_of_two_in(key, value, 512, 65536)?,
            "inodeSize" if ext => power_of_two_in(key, value, 128, 65536)?,
            "inodeSize" => power_of_two_in(key, value, 256, 2048)?,
            "bytesPerInode" => {
                let n = parse_int(key, value)?;
                if !(1024..=67_108_864).contains(&n) {
                    return Err(Error::InvalidArgument(format!(
                        "parameter bytesPerInode: {n} must be between 1024 and 67108864"
                    )));
                }
            }
            "numberOfInodes" => {
                parse_int(key, value)?;
            }
            "ext4BigAlloc" => {
                parse_bool(key, value)?;
            }
            "ext4ClusterSize" => power_of_two_in(key, value, 1024, 1 << 29)?,
            _ => {}
        }
    }
    let bigalloc = match opts.get("ext4BigAlloc") {
        Some(v) => parse_bool("ext4BigAlloc", v)?,
        None => false,
    };
    if opts.contains_key("ext4ClusterSize") && !bigalloc {
        return Err(Error::InvalidArgument(
            "parameter ext4ClusterSize needs ext4BigAlloc=true".into(),
        ));
    }
    let mut out: Vec<(String, String)> = FORMAT_KEYS
        .iter()
        .filter_map(|k| opts.get(k).map(|v| (k.to_string(), v.clone())))
        .collect();
    // The node reads a canonical boolean.
    for (k, v) in out.iter_mut() {
        if k == "ext4BigAlloc" {
            *v = bigalloc.to_string();
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
