//! StorageClass parameters of CreateVolume: parsed, validated the way EC2
//! validates them, and turned into what the cloud layer and the node need.
//!
//! Keys are matched case-insensitively (the reference driver does), and an
//! unknown key is refused naming it: a typo must not silently create a volume
//! of the wrong kind.

use std::collections::HashMap;

use super::tags::{self, TagContext};
use crate::cloud::{IopsLimits, TypeLimits, VolumeType};
use crate::contract::FS_TYPE_CONTEXT_KEY;
use crate::contract::format::{FormatKey, FormatOptions, FsType, Origin, parse_go_bool};
use crate::error::{Error, Result};

/// Parsed StorageClass parameters.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VolumeParams {
    /// EBS type.
    pub volume_type: VolumeType,
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
    pub fs_type: FsType,
    /// Whether the parameters named the filesystem type.
    pub fs_type_given: bool,
    /// Format options for the node.
    pub format: FormatOptions,
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
    parse_go_bool(value).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "parameter {key}: {:?} is not a boolean (true or false)",
            value.trim()
        ))
    })
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

/// Parses a volume type named by parameter `key`.
pub fn parse_type(key: &str, value: &str) -> Result<VolumeType> {
    VolumeType::parse(value).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "parameter {key}: {:?} is not an EBS volume type ({})",
            value.trim().to_ascii_lowercase(),
            VolumeType::names()
        ))
    })
}

impl VolumeParams {
    /// Parses `parameters` of a CreateVolume request.
    pub fn parse(parameters: &HashMap<String, String>) -> Result<Self> {
        let mut p = VolumeParams::default();
        let mut tag_templates = Vec::new();
        let mut format: Vec<(FormatKey, &str)> = Vec::new();
        // Sorted for deterministic errors and tag order.
        let mut keys: Vec<_> = parameters.iter().collect();
        keys.sort();
        for (key, value) in keys {
            match key.to_ascii_lowercase().as_str() {
                "type" => p.volume_type = parse_type(key, value)?,
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
                        p.fs_type = FsType::parse(value).ok_or_else(|| {
                            Error::InvalidArgument(format!(
                                "parameter csi.storage.k8s.io/fstype: {:?} is not supported (use {})",
                                value.to_ascii_lowercase(),
                                FsType::names()
                            ))
                        })?;
                        p.fs_type_given = true;
                    }
                }
                "csi.storage.k8s.io/pvc/name" => p.pvc_name = Some(value.clone()),
                "csi.storage.k8s.io/pvc/namespace" => p.pvc_namespace = Some(value.clone()),
                "csi.storage.k8s.io/pv/name" => p.pv_name = Some(value.clone()),
                k if k.starts_with("tagspecification_") => tag_templates.push((key, value)),
                _ => match FormatKey::from_name(key) {
                    Some(format_key) => format.push((format_key, value.as_str())),
                    None => {
                        return Err(Error::InvalidArgument(format!(
                            "unknown StorageClass parameter {key:?} (value {value:?})"
                        )));
                    }
                },
            }
        }
        if p.kms_key_id.is_some() {
            p.encrypted = true;
        }
        if p.iops.is_some() && p.iops_per_gb.is_some() {
            return Err(Error::InvalidArgument(
                "parameters iops and iopsPerGB are mutually exclusive".into(),
            ));
        }
        if p.block_express && p.volume_type != VolumeType::Io2 {
            return Err(Error::InvalidArgument(format!(
                "parameter blockExpress is only valid for type io2, not {}",
                p.volume_type
            )));
        }
        p.format = FormatOptions::parse(format, p.fs_type, Origin::Parameter)?;
        let context = TagContext::volume(&p.pvc_name, &p.pvc_namespace, &p.pv_name);
        p.tags = tags::parse_specifications(&tag_templates, &context)?;
        Ok(p)
    }

    /// The volume context for the node: format options, and the
    /// filesystem type when the parameters named one.
    pub fn volume_context(&self) -> HashMap<String, String> {
        let mut context: HashMap<String, String> = self.format.to_context().into_iter().collect();
        if self.fs_type_given {
            context.insert(FS_TYPE_CONTEXT_KEY.to_string(), self.fs_type.to_string());
        }
        context
    }

    /// The type's limits (known: the type was parsed from a name).
    fn limits(&self) -> Result<TypeLimits> {
        self.volume_type.limits().ok_or_else(|| {
            Error::InvalidArgument(format!("volume type {} is not known", self.volume_type))
        })
    }

    /// The IOPS and throughput to request for a volume of `size_gib`,
    /// checked against the type's limits; errors name the broken limit.
    pub fn performance(&self, size_gib: i64) -> Result<(Option<i64>, Option<i64>)> {
        let lim = self.limits()?;
        let t = &self.volume_type;
        if size_gib < lim.min_gib || size_gib > lim.max_gib {
            return Err(Error::OutOfRange(format!(
                "size {size_gib} GiB is outside the {t} range of {}..={} GiB",
                lim.min_gib, lim.max_gib
            )));
        }
        let iops = self.iops(lim.iops, size_gib)?;
        let throughput = self.throughput(lim.throughput, iops)?;
        Ok((iops, throughput))
    }

    /// The IOPS to provision, from `iops` or `iopsPerGB`.
    fn iops(&self, limits: Option<IopsLimits>, size_gib: i64) -> Result<Option<i64>> {
        let t = &self.volume_type;
        let Some(IopsLimits { min, max, per_gib }) = limits else {
            if self.iops.is_some() || self.iops_per_gb.is_some() {
                return Err(Error::InvalidArgument(format!(
                    "volume type {t} has no provisioned IOPS; remove iops/iopsPerGB"
                )));
            }
            return Ok(None);
        };
        let iops = match (self.iops, self.iops_per_gb) {
            (None, None) if *t == VolumeType::Gp3 => return Ok(None),
            (None, None) => {
                return Err(Error::InvalidArgument(format!(
                    "volume type {t} needs parameter iops or iopsPerGB"
                )));
            }
            (Some(fixed), _) => fixed,
            (None, Some(per_gb)) => {
                // iopsPerGB follows the reference driver: capped at the
                // type's maxima (io2 at 64,000 unless blockExpress asks
                // for Block Express' 256,000), raised to its minimum only
                // if allowed.
                let cap = if *t == VolumeType::Io2 && !self.block_express {
                    64_000
                } else {
                    max
                };
                let iops = (per_gb * size_gib).min(cap).min(per_gib * size_gib.max(1));
                if iops < min && self.allow_iops_increase {
                    min
                } else {
                    iops
                }
            }
        };
        if iops < min || iops > max {
            return Err(Error::InvalidArgument(format!(
                "{iops} IOPS is outside the {t} range of {min}..={max}{}",
                if self.iops_per_gb.is_some() {
                    " (set allowAutoIOPSPerGBIncrease to raise it)"
                } else {
                    ""
                }
            )));
        }
        // gp3's baseline of 3000 is free at any size; above it, and for
        // io1/io2 always, EC2 caps IOPS per GiB.
        let capped_from = if *t == VolumeType::Gp3 { min } else { 0 };
        if iops > capped_from && iops > per_gib * size_gib {
            return Err(Error::InvalidArgument(format!(
                "{iops} IOPS exceeds the {t} limit of {per_gib} IOPS per GiB \
                 ({} for {size_gib} GiB)",
                per_gib * size_gib
            )));
        }
        Ok(Some(iops))
    }

    /// The throughput to provision (gp3), checked against the IOPS.
    fn throughput(&self, limits: Option<(i64, i64)>, iops: Option<i64>) -> Result<Option<i64>> {
        let Some(mbps) = self.throughput else {
            return Ok(None);
        };
        let Some((min, max)) = limits else {
            return Err(Error::InvalidArgument(format!(
                "parameter throughput is only valid for gp3, not {}",
                self.volume_type
            )));
        };
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
        Ok(Some(mbps))
    }
}

#[cfg(test)]
mod tests;
