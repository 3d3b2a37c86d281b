//! ControllerExpandVolume and ControllerModifyVolume, and the mutable
//! parameters of a VolumeAttributesClass. The ModifyVolume calls themselves
//! go through [`super::modifier::Modifier`], which merges them per volume.
//!
//! IOPS follow the reference driver on every modification and growth: a
//! volume created or modified with `iopsPerGB` and
//! `allowAutoIOPSIncreaseOnModify: "true"` (both kept in tags on the
//! volume) gets `iopsPerGB × new size` IOPS, and IOPS are capped to the
//! target type's limits with the minimum always allowed.

use std::collections::HashMap;

use super::Ctl;
use super::caps;
use super::params::{VolumeParams, cap_iops, check_iops, parse_bool, parse_int};
use super::tags::{self, PvMeta};
use super::topology::{gib_to_bytes, round_up_gib};
use crate::cloud::{ModifySpec, Volume, VolumeId, VolumeType};
use crate::contract::tags as ctags;
use crate::csi;
use crate::error::{Error, Result};

/// Parsed mutable parameters (VolumeAttributesClass).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MutableParams {
    /// `type` (or the deprecated `volumeType`).
    pub volume_type: Option<VolumeType>,
    /// `iops`.
    pub iops: Option<i64>,
    /// `iopsPerGB`.
    pub iops_per_gb: Option<i64>,
    /// `allowAutoIOPSIncreaseOnModify`.
    pub allow_iops_increase_on_modify: Option<bool>,
    /// `throughput`.
    pub throughput: Option<i64>,
    /// `tagSpecification…`: (parameter, `key=value` template).
    pub tag_specs: Vec<(String, String)>,
    /// `tagDeletion…`: tag keys to remove.
    pub delete_tags: Vec<String>,
    /// PV metadata from the resizer's `--extra-modify-metadata`.
    pub meta: PvMeta,
}

impl MutableParams {
    /// Parses `mutable_parameters`; unknown keys are InvalidArgument.
    pub fn parse(parameters: &HashMap<String, String>) -> Result<Self> {
        let mut p = MutableParams::default();
        let mut alias = None;
        let mut keys: Vec<_> = parameters.iter().collect();
        keys.sort();
        for (key, value) in keys {
            let lower = key.to_ascii_lowercase();
            match lower.as_str() {
                "type" => p.volume_type = Some(parse_mutable_type(key, value)?),
                "volumetype" => alias = Some(parse_mutable_type(key, value)?),
                "iops" => p.iops = Some(parse_int(key, value)?),
                "iopspergb" => p.iops_per_gb = Some(parse_int(key, value)?),
                "allowautoiopsincreaseonmodify" => {
                    p.allow_iops_increase_on_modify = Some(parse_bool(key, value)?)
                }
                "throughput" => p.throughput = Some(parse_int(key, value)?),
                k if p.meta.take(k, value) => {}
                _ if tags::is_tag_spec_key(key) => p.tag_specs.push((key.clone(), value.clone())),
                _ if tags::is_tag_deletion_key(key) => {
                    let victim = value.trim();
                    if let Some(why) = tags::reserved(victim) {
                        return Err(Error::InvalidArgument(format!(
                            "mutable parameter {key}: Cannot delete reserved tag: {why}"
                        )));
                    }
                    p.delete_tags.push(victim.to_string());
                }
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "unsupported mutable parameter {key:?} (value {value:?}); \
                         type, iops, iopsPerGB, allowAutoIOPSIncreaseOnModify, throughput, \
                         tagSpecification_N and tagDeletion_N can be modified"
                    )));
                }
            }
        }
        // `volumeType` is the deprecated spelling; `type` wins.
        if p.volume_type.is_none() {
            p.volume_type = alias;
        }
        if p.iops.is_some() && p.iops_per_gb.is_some() {
            return Err(Error::InvalidArgument(
                "mutable parameters iops and iopsPerGB are mutually exclusive".into(),
            ));
        }
        Ok(p)
    }

    /// The tags to add: the rendered `tagSpecification…` values and the
    /// IOPS settings later growth reads.
    pub fn add_tags(&self) -> Result<Vec<(String, String)>> {
        let mut out = tags::modify_tags(&self.tag_specs, &self.meta)?;
        if let Some(n) = self.iops_per_gb {
            out.push((ctags::IOPS_PER_GB.to_string(), n.to_string()));
        }
        if let Some(allow) = self.allow_iops_increase_on_modify {
            out.push((
                ctags::ALLOW_AUTO_IOPS_INCREASE_ON_MODIFY.to_string(),
                allow.to_string(),
            ));
        }
        Ok(out)
    }

    /// The modification of `v` these parameters ask for when it is to be
    /// `size_gib` GiB (its size, or more for an expansion): the target
    /// type, throughput, and IOPS from `iops` or from `iopsPerGB` when the
    /// volume allows increases on modify; checked against the target
    /// type's limits. Nothing that equals the volume's current value.
    pub fn plan(&self, v: &Volume, size_gib: i64) -> Result<ModifySpec> {
        let target = self
            .volume_type
            .clone()
            .unwrap_or_else(|| v.volume_type.clone());
        let tag = |key: &str| v.tags.get(key).map(|s| s.trim().to_string());
        let allow = self.allow_iops_increase_on_modify.unwrap_or_else(|| {
            tag(ctags::ALLOW_AUTO_IOPS_INCREASE_ON_MODIFY)
                .and_then(|s| crate::contract::format::parse_go_bool(&s))
                .unwrap_or(false)
        });
        let per_gb = self
            .iops_per_gb
            .or_else(|| tag(ctags::IOPS_PER_GB).and_then(|s| s.parse().ok()));
        let wanted = self
            .iops
            .or_else(|| per_gb.filter(|_| allow).map(|n| n * size_gib));
        let limits = target.limits();
        let iops = match (wanted, limits.and_then(|l| l.iops)) {
            (None, _) => None,
            (Some(_), None) => {
                return Err(Error::InvalidArgument(format!(
                    "volume type {target} has no provisioned IOPS; remove iops/iopsPerGB"
                )));
            }
            (Some(n), Some(lim)) => {
                let iops = cap_iops(n, size_gib, lim, true);
                check_iops(&target, iops, size_gib, lim)?;
                Some(iops)
            }
        };
        if self.throughput.is_some() {
            let check = VolumeParams {
                volume_type: target.clone(),
                throughput: self.throughput,
                ..VolumeParams::default()
            };
            check.throughput(limits.and_then(|l| l.throughput), iops.or(v.iops))?;
        }
        let type_changes = target != v.volume_type;
        Ok(ModifySpec {
            size_gib: Some(size_gib).filter(|s| *s > v.size_gib),
            // A new type needs its IOPS named even when the number stays.
            iops: iops.filter(|i| type_changes || Some(*i) != v.iops),
            volume_type: Some(target).filter(|_| type_changes),
            throughput: self.throughput.filter(|t| Some(*t) != v.throughput),
        })
    }
}

/// A mutable parameter `type`, named by `key`.
fn parse_mutable_type(key: &str, value: &str) -> Result<VolumeType> {
    VolumeType::parse(value).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "mutable parameter {}: {:?} is not an EBS volume type",
            key.to_ascii_lowercase(),
            value.trim().to_ascii_lowercase()
        ))
    })
}

/// ControllerExpandVolume.
pub async fn expand(
    ctl: &Ctl,
    req: csi::ControllerExpandVolumeRequest,
) -> Result<csi::ControllerExpandVolumeResponse> {
    if req.volume_id.is_empty() {
        return Err(Error::missing("volume_id"));
    }
    let range = req
        .capacity_range
        .as_ref()
        .ok_or_else(|| Error::missing("capacity_range"))?;
    if range.required_bytes <= 0 {
        return Err(Error::InvalidArgument(format!(
            "capacity_range.required_bytes {} must be positive",
            range.required_bytes
        )));
    }
    let gib = round_up_gib(range.required_bytes);
    if range.limit_bytes > 0 && gib_to_bytes(gib) > range.limit_bytes {
        return Err(Error::OutOfRange(format!(
            "required_bytes {} rounds up to {gib} GiB, above limit_bytes {}",
            range.required_bytes, range.limit_bytes
        )));
    }
    let missing = || Error::NotFound(format!("volume {:?} does not exist", req.volume_id));
    let id = VolumeId::parse(&req.volume_id).ok_or_else(missing)?;
    let cloud = ctl.cloud()?;
    let v = cloud.volume(&id).await?.ok_or_else(missing)?;
    if let Some(lim) = v.volume_type.limits()
        && gib > lim.max_gib
    {
        return Err(Error::OutOfRange(format!(
            "{gib} GiB is above the {} maximum of {} GiB",
            v.volume_type, lim.max_gib
        )));
    }
    let block = req.volume_capability.as_ref().is_some_and(caps::is_block);
    let size = if v.size_gib >= gib {
        v.size_gib
    } else {
        // Growth may scale IOPS too (the volume's iopsPerGB tags).
        let spec = MutableParams::default().plan(&v, gib)?;
        ctl.modifier
            .modify(cloud.clone(), ctl.timeouts.modify, &id, spec)
            .await?;
        gib
    };
    Ok(csi::ControllerExpandVolumeResponse {
        capacity_bytes: gib_to_bytes(size),
        node_expansion_required: !block,
    })
}

/// ControllerModifyVolume: tags first (as the reference), then the
/// modification of type, IOPS and throughput.
pub async fn modify(
    ctl: &Ctl,
    req: csi::ControllerModifyVolumeRequest,
) -> Result<csi::ControllerModifyVolumeResponse> {
    if req.volume_id.is_empty() {
        return Err(Error::missing("volume_id"));
    }
    let params = MutableParams::parse(&req.mutable_parameters)?;
    let add_tags = params.add_tags()?;
    let missing = || Error::NotFound(format!("volume {:?} does not exist", req.volume_id));
    let id = VolumeId::parse(&req.volume_id).ok_or_else(missing)?;
    let cloud = ctl.cloud()?;
    // Its type may change: the next publish describes it (see `created`).
    ctl.created.forget(&id);
    let v = cloud.volume(&id).await?.ok_or_else(missing)?;
    let spec = params.plan(&v, v.size_gib)?;
    cloud.delete_tags(&id, &params.delete_tags).await?;
    cloud.create_tags(&id, &add_tags).await?;
    if !spec.is_empty() {
        ctl.modifier
            .modify(cloud.clone(), ctl.timeouts.modify, &id, spec)
            .await?;
    }
    Ok(csi::ControllerModifyVolumeResponse {})
}

#[cfg(test)]
mod tests;
