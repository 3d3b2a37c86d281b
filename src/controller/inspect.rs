//! The read-only RPCs: ValidateVolumeCapabilities, ListVolumes,
//! ControllerGetVolume.

use super::topology::{gib_to_bytes, volume_topology};
use super::{Ctl, caps};
use crate::cloud::{Volume, VolumeId, VolumeState};
use crate::csi;
use crate::error::{Error, Result};

/// ValidateVolumeCapabilities: NotFound for an unknown volume; confirms the
/// capabilities only when EBS can honour every one of them.
pub async fn validate(
    ctl: &Ctl,
    req: csi::ValidateVolumeCapabilitiesRequest,
) -> Result<csi::ValidateVolumeCapabilitiesResponse> {
    if req.volume_id.is_empty() {
        return Err(Error::missing("volume_id"));
    }
    if req.volume_capabilities.is_empty() {
        return Err(Error::missing("volume_capabilities"));
    }
    let volume = lookup(ctl, &req.volume_id).await?;
    let multi = volume.volume_type.multi_attach() && volume.multi_attach;
    let refused: Vec<String> = req
        .volume_capabilities
        .iter()
        .filter_map(|c| caps::unsupported(c, Some(multi)))
        .collect();
    if refused.is_empty() {
        Ok(csi::ValidateVolumeCapabilitiesResponse {
            confirmed: Some(csi::validate_volume_capabilities_response::Confirmed {
                volume_context: req.volume_context,
                volume_capabilities: req.volume_capabilities,
                parameters: req.parameters,
                mutable_parameters: req.mutable_parameters,
            }),
            message: String::new(),
        })
    } else {
        Ok(csi::ValidateVolumeCapabilitiesResponse {
            confirmed: None,
            message: refused.join("; "),
        })
    }
}

async fn lookup(ctl: &Ctl, text: &str) -> Result<Volume> {
    let id = VolumeId::parse(text).ok_or_else(|| {
        Error::NotFound(format!(
            "volume {text:?} does not exist (not an EBS volume id)"
        ))
    })?;
    ctl.cloud()?
        .volume(&id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("volume {id} does not exist")))
}

fn condition(v: &Volume) -> csi::VolumeCondition {
    let (abnormal, message) = match &v.state {
        VolumeState::Error => (true, "EC2 reports the volume in state error".to_string()),
        VolumeState::Available | VolumeState::InUse => (false, "volume is healthy".to_string()),
        other => (false, format!("volume is {other:?}")),
    };
    csi::VolumeCondition { abnormal, message }
}

fn entry_volume(v: &Volume) -> csi::Volume {
    csi::Volume {
        capacity_bytes: gib_to_bytes(v.size_gib),
        volume_id: v.id.to_string(),
        accessible_topology: volume_topology(&v.zone),
        ..csi::Volume::default()
    }
}

/// ListVolumes over this driver's volumes, ordered by id. The token is the
/// last id of the previous page, so deletions between pages neither repeat
/// nor skip entries.
pub async fn list(ctl: &Ctl, req: csi::ListVolumesRequest) -> Result<csi::ListVolumesResponse> {
    if req.max_entries < 0 {
        return Err(Error::InvalidArgument(format!(
            "max_entries {} must not be negative",
            req.max_entries
        )));
    }
    if !req.starting_token.is_empty() && VolumeId::parse(&req.starting_token).is_none() {
        return Err(Error::Aborted(format!(
            "starting_token {:?} was not issued by this driver",
            req.starting_token
        )));
    }
    let mut volumes = ctl.cloud()?.list_volumes().await?;
    volumes.sort_by(|a, b| a.id.cmp(&b.id));
    let start = volumes.partition_point(|v| {
        !req.starting_token.is_empty() && v.id.as_str() <= req.starting_token.as_str()
    });
    let rest = &volumes[start..];
    let take = if req.max_entries == 0 {
        rest.len()
    } else {
        rest.len().min(req.max_entries as usize)
    };
    let page = &rest[..take];
    let next_token = if take < rest.len() {
        page.last().map(|v| v.id.to_string()).unwrap_or_default()
    } else {
        String::new()
    };
    Ok(csi::ListVolumesResponse {
        entries: page
            .iter()
            .map(|v| csi::list_volumes_response::Entry {
                volume: Some(entry_volume(v)),
                status: Some(csi::list_volumes_response::VolumeStatus {
                    published_node_ids: v.attached_instance_names(),
                    volume_condition: Some(condition(v)),
                }),
            })
            .collect(),
        next_token,
    })
}

/// ControllerGetVolume: the volume, the nodes it is published to, and its
/// condition.
pub async fn get(
    ctl: &Ctl,
    req: csi::ControllerGetVolumeRequest,
) -> Result<csi::ControllerGetVolumeResponse> {
    if req.volume_id.is_empty() {
        return Err(Error::missing("volume_id"));
    }
    let v = lookup(ctl, &req.volume_id).await?;
    Ok(csi::ControllerGetVolumeResponse {
        volume: Some(entry_volume(&v)),
        status: Some(csi::controller_get_volume_response::VolumeStatus {
            published_node_ids: v.attached_instance_names(),
            volume_condition: Some(condition(&v)),
        }),
    })
}
