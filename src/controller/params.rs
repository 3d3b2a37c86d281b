//! StorageClass parameters of CreateVolume: parsed, validated the way EC2
//! validates them, and turned into what the cloud layer and the node need.
//!
//! Keys are matched case-insensitively (the reference driver does), and an
//! unknown key is refused naming it: a typo must not silently create a volume
//! of the wrong kind.

use std::collections::HashMap;

use super::tags::{self, PvMeta};
use crate::cloud::{IopsLimits, TypeLimits, VolumeType};
use crate::contract::FS_TYPE_CONTEXT_KEY;
use crate::contract::format::{FormatKey, FormatOptions, FsType, Origin, parse_go_bool};
use crate::contract::tags as ctags;
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
    /// Raise the IOPS to the type's minimum when below it.
    pub allow_iops_increase: bool,
    /// `allowAutoIOPSIncreaseOnModify`: scale IOPS by `iopsPerGB` when the
    /// volume is modified or grows (kept in a tag on the volume).
    pub allow_iops_increase_on_modify: Option<bool>,
    /// Throughput, MiB/s.
    pub throughput: Option<i64>,
    /// Encrypt.
    pub encrypted: bool,
    /// Whether `encrypted` was given (a clone refuses an explicit false).
    pub encrypted_given: bool,
    /// KMS key.
    pub kms_key_id: Option<String>,
    /// `volumeInitializationRate`, MiB/s, for volumes from snapshots.
    pub initialization_rate: Option<i64>,
    /// Filesystem type.
    pub fs_type: FsType,
    /// Whether the parameters named the filesystem type.
    pub fs_type_given: bool,
    /// Format options for the node.
    pub format: FormatOptions,
    /// `tagSpecification…` parameters, (parameter, `key=value` template),
    /// in key order.
    pub tag_specs: Vec<(String, String)>,
    /// The PV metadata of the request.
    pub meta: PvMeta,
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
        let mut format: Vec<(FormatKey, &str)> = Vec::new();
        // Sorted for deterministic errors and tag order.
        let mut keys: Vec<_> = parameters.iter().collect();
        keys.sort();
        for (key, value) in keys {
            let lower = key.to_ascii_lowercase();
            match lower.as_str() {
                "type" => p.volume_type = parse_type(key, value)?,
                "iops" => p.iops = Some(parse_int(key, value)?),
                "iopspergb" => p.iops_per_gb = Some(parse_int(key, value)?),
                "allowautoiopspergbincrease" => p.allow_iops_increase = parse_bool(key, value)?,
                "allowautoiopsincreaseonmodify" => {
                    p.allow_iops_increase_on_modify = Some(parse_bool(key, value)?)
                }
                "throughput" => p.throughput = Some(parse_int(key, value)?),
                "encrypted" => {
                    p.encrypted = parse_bool(key, value)?;
                    p.encrypted_given = true;
                }
                "kmskeyid" => {
                    if !value.is_empty() {
                        p.kms_key_id = Some(value.clone());
                    }
                }
                "volumeinitializationrate" => p.initialization_rate = Some(parse_int(key, value)?),
                "blockexpress" => {
                    // A deprecated no-op in the reference, on any type: io2
                    // is Block Express everywhere now.
                    parse_bool(key, value)?;
                    tracing::info!("parameter blockExpress is deprecated and has no effect");
                }
                "outpostarn" => return Err(outposts(key)),
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
                k if p.meta.take(k, value) => {}
                _ if tags::is_tag_spec_key(key) => p.tag_specs.push((key.clone(), value.clone())),
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
        p.format = FormatOptions::parse(format, p.fs_type, Origin::Parameter)?;
        Ok(p)
    }

    /// Tags the driver adds for these parameters: the reference's
    /// `ebs.csi.aws.com/IOPSPerGb` and `…/AllowAutoIOPSIncreaseOnModify`,
    /// which later modifications read.
    pub fn driver_tags(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(n) = self.iops_per_gb {
            out.push((ctags::IOPS_PER_GB.to_string(), n.to_string()));
        }
        if let Some(allow) = self.allow_iops_increase_on_modify {
            out.push((
                ctags::ALLOW_AUTO_IOPS_INCREASE_ON_MODIFY.to_string(),
                allow.to_string(),
            ));
        }
        out
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

    /// The IOPS to provision, from `iops` or `iopsPerGB`, capped the way
    /// the reference driver caps them ([`cap_iops`]).
    fn iops(&self, limits: Option<IopsLimits>, size_gib: i64) -> Result<Option<i64>> {
        let t = &self.volume_type;
        let Some(lim) = limits else {
            if self.iops.is_some() || self.iops_per_gb.is_some() {
                return Err(Error::InvalidArgument(format!(
                    "volume type {t} has no provisioned IOPS; remove iops/iopsPerGB"
                )));
            }
            return Ok(None);
        };
        let wanted = match (self.iops, self.iops_per_gb) {
            (None, None) if *t == VolumeType::Gp3 => return Ok(None),
            (None, None) => {
                return Err(Error::InvalidArgument(format!(
                    "volume type {t} needs parameter iops or iopsPerGB"
                )));
            }
            (Some(fixed), _) => fixed,
            (None, Some(per_gb)) => per_gb * size_gib,
        };
        let iops = cap_iops(wanted, size_gib, lim, self.allow_iops_increase);
        if iops != wanted {
            tracing::info!(requested = wanted, provisioned = iops, size_gib, volume_type = %t, "IOPS capped to the type's limits");
        }
        check_iops(t, iops, size_gib, lim)?;
        Ok(Some(iops))
    }

    /// The throughput to provision (gp3), checked against the IOPS.
    pub(super) fn throughput(
        &self,
        limits: Option<(i64, i64)>,
        iops: Option<i64>,
    ) -> Result<Option<i64>> {
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

/// The reference driver's `capIOPS`: raised to the type's minimum when
/// allowed, then lowered to its maximum, then to its per-GiB limit unless
/// that limit is below the minimum (gp3 under 6 GiB keeps its baseline).
pub fn cap_iops(iops: i64, size_gib: i64, lim: IopsLimits, allow_increase: bool) -> i64 {
    let mut iops = iops;
    if allow_increase && iops < lim.min {
        iops = lim.min;
    }
    iops = iops.min(lim.max);
    let by_size = lim.per_gib * size_gib;
    if iops > by_size && by_size >= lim.min {
        iops = by_size;
    }
    iops
}

/// Refuses IOPS EC2 would refuse, naming the limit: below the type's
/// minimum (the reference sends them and EC2 fails the call), or above the
/// per-GiB limit where capping could not apply.
pub fn check_iops(t: &VolumeType, iops: i64, size_gib: i64, lim: IopsLimits) -> Result<()> {
    let IopsLimits { min, max, per_gib } = lim;
    if iops < min || iops > max {
        return Err(Error::InvalidArgument(format!(
            "{iops} IOPS is outside the {t} range of {min}..={max} (set allowAutoIOPSPerGBIncrease to raise it)"
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
    Ok(())
}

/// The refusal of an Outposts request.
pub fn outposts(what: &str) -> Error {
    Error::InvalidArgument(format!(
        "Outposts are not supported by this driver ({what} was given); use the reference driver \
         on Outposts"
    ))
}

#[cfg(test)]
mod tests;
