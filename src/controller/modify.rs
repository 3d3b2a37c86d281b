//! ControllerExpandVolume and ControllerModifyVolume, and the mutable
//! parameters of a VolumeAttributesClass. The ModifyVolume calls themselves
//! go through [`super::modifier::Modifier`], which merges them per volume.

use std::collections::HashMap;

use super::Ctl;
use super::caps;
use super::params::{VolumeParams, parse_int};
use super::tags::{TagContext, check_tag, parse_specifications};
use super::topology::{gib_to_bytes, round_up_gib};
use crate::cloud::{ModifySpec, VolumeId, VolumeType};
use crate::csi;
use crate::error::{Error, Result};

/// Parsed mutable parameters (VolumeAttributesClass).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MutableParams {
    /// The performance change.
    pub spec: ModifySpec,
    /// Tags to add.
    pub add_tags: Vec<(String, String)>,
    /// Tag keys to remove.
    pub delete_tags: Vec<String>,
}

impl MutableParams {
    /// Parses `mutable_parameters`; unknown keys are InvalidArgument.
    pub fn parse(parameters: &HashMap<String, String>) -> Result<Self> {
        let mut p = MutableParams::default();
        let mut templates = Vec::new();
        let mut keys: Vec<_> = parameters.iter().collect();
        keys.sort();
        for (key, value) in keys {
            match key.to_ascii_lowercase().as_str() {
                "type" => p.spec.volume_type = Some(parse_mutable_type(key, value)?),
                "iops" => p.spec.iops = Some(parse_int(key, value)?),
                "throughput" => p.spec.throughput = Some(parse_int(key, value)?),
                k if k.starts_with("tagspecification_") => templates.push((key, value)),
                k if k.starts_with("tagdeletion_") => {
                    check_tag(&format!("parameter {key}"), value.trim(), "")?;
                    p.delete_tags.push(value.trim().to_string());
                }
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "unsupported mutable parameter {key:?} (value {value:?}); \
                         type, iops, throughput, tagSpecification_N and tagDeletion_N can be modified"
                    )));
                }
            }
        }
        p.add_tags = parse_specifications(&templates, &TagContext::default())?;
        Ok(p)
    }

    /// Checks the performance change against the target type's limits for
    /// a volume of `size_gib` currently of `current_type`.
    pub fn check(&self, current_type: &VolumeType, size_gib: i64) -> Result<()> {
        if self.spec.iops.is_none() && self.spec.throughput.is_none() {
            return Ok(());
        }
        let params = VolumeParams {
            volume_type: self
                .spec
                .volume_type
                .clone()
                .unwrap_or_else(|| current_type.clone()),
            iops: self.spec.iops,
            throughput: self.spec.throughput,
            ..VolumeParams::default()
        };
        params.performance(size_gib).map(|_| ())
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
        let spec = ModifySpec {
            size_gib: Some(gib),
            ..ModifySpec::default()
        };
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

/// ControllerModifyVolume.
pub async fn modify(
    ctl: &Ctl,
    req: csi::ControllerModifyVolumeRequest,
) -> Result<csi::ControllerModifyVolumeResponse> {
    if req.volume_id.is_empty() {
        return Err(Error::missing("volume_id"));
    }
    let params = MutableParams::parse(&req.mutable_parameters)?;
    let missing = || Error::NotFound(format!("volume {:?} does not exist", req.volume_id));
    let id = VolumeId::parse(&req.volume_id).ok_or_else(missing)?;
    let cloud = ctl.cloud()?;
    let v = cloud.volume(&id).await?.ok_or_else(missing)?;
    params.check(&v.volume_type, v.size_gib)?;
    if !params.spec.is_empty() {
        ctl.modifier
            .modify(cloud.clone(), ctl.timeouts.modify, &id, params.spec.clone())
            .await?;
    }
    cloud.create_tags(&id, &params.add_tags).await?;
    cloud.delete_tags(&id, &params.delete_tags).await?;
    Ok(csi::ControllerModifyVolumeResponse {})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::VolumeType;

    #[test]
    fn mutable_params() {
        let p = MutableParams::parse(
            &[
                ("Type", "io2"),
                ("iops", "2000"),
                ("tagSpecification_1", "a=b"),
                ("tagDeletion_1", "old"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        )
        .unwrap();
        assert_eq!(p.spec.volume_type, Some(VolumeType::Io2));
        assert_eq!(p.add_tags, vec![("a".to_string(), "b".to_string())]);
        assert_eq!(p.delete_tags, vec!["old".to_string()]);
        assert!(p.check(&VolumeType::Gp3, 1).is_err()); // io2 at 2000 IOPS needs ≥ 2 GiB
        assert!(p.check(&VolumeType::Gp3, 10).is_ok());
        let bad = MutableParams::parse(
            &[("encrypted".to_string(), "true".to_string())]
                .into_iter()
                .collect(),
        );
        assert_eq!(bad.unwrap_err().code(), tonic::Code::InvalidArgument);
    }
}
