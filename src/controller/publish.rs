//! ControllerPublishVolume and ControllerUnpublishVolume: AttachVolume and
//! DetachVolume, with device names chosen here and waits that end.

use std::collections::HashMap;

use super::{Ctl, caps};
use crate::cloud::devices::{Mapped, Reservation};
use crate::cloud::wait::{Watch, poll};
use crate::cloud::{AttachState, Cloud, CloudError, Instance, InstanceId, Volume, VolumeId};
use crate::contract::DEVICE_PATH_KEY;
use crate::contract::attach_limits::{LimitKind, facts_for};
use crate::csi;
use crate::error::{Error, Result};

/// Device names tried when EC2 says a name is in use.
const NAME_ATTEMPTS: usize = 4;

fn published(device: &str) -> csi::ControllerPublishVolumeResponse {
    csi::ControllerPublishVolumeResponse {
        publish_context: HashMap::from([(DEVICE_PATH_KEY.to_string(), device.to_string())]),
    }
}

/// ControllerPublishVolume.
pub async fn publish(
    ctl: &Ctl,
    req: csi::ControllerPublishVolumeRequest,
) -> Result<csi::ControllerPublishVolumeResponse> {
    if req.volume_id.is_empty() {
        return Err(Error::missing("volume_id"));
    }
    if req.node_id.is_empty() {
        return Err(Error::missing("node_id"));
    }
    let cap = req
        .volume_capability
        .as_ref()
        .ok_or_else(|| Error::missing("volume_capability"))?;
    caps::check_all(std::slice::from_ref(cap), None)?;
    let vol = &VolumeId::parse(&req.volume_id).ok_or_else(|| {
        Error::NotFound(format!(
            "volume {:?} does not exist (not an EBS volume id)",
            req.volume_id
        ))
    })?;
    let node = &InstanceId::parse(&req.node_id).ok_or_else(|| {
        Error::NotFound(format!(
            "node {:?} does not exist (not an EC2 instance id)",
            req.node_id
        ))
    })?;
    let cloud = ctl.cloud()?;
    let _guard = ctl.inflight.claim(vol.as_str(), "volume")?;
    let (volume, instance) = tokio::join!(cloud.volume(vol), cloud.instance(node));
    let volume = volume?.ok_or_else(|| Error::NotFound(format!("volume {vol} does not exist")))?;
    let instance = instance?
        .ok_or_else(|| Error::NotFound(format!("node (instance) {node} does not exist")))?;
    if let Some(why) = caps::unsupported(
        cap,
        Some(volume.volume_type.multi_attach() && volume.multi_attach),
    ) {
        return Err(Error::InvalidArgument(format!("volume {vol}: {why}")));
    }
    if volume.zone != instance.zone {
        return Err(Error::FailedPrecondition(format!(
            "volume {vol} is in zone {} but node {node} is in zone {}; EBS volumes attach only within their zone",
            volume.zone, instance.zone
        )));
    }
    if let Some(att) = volume.attachment_to(node) {
        let device = att.device.clone();
        if att.state != AttachState::Attached {
            wait_attached(ctl, cloud.as_ref(), vol, node).await?;
        }
        return Ok(published(&device));
    }
    let others = volume.attached_instances();
    if !others.is_empty() && !volume.multi_attach {
        return Err(Error::FailedPrecondition(format!(
            "volume {vol} is attached to {} and is not multi-attach; it must be unpublished there first",
            volume.attached_instance_names().join(", ")
        )));
    }

    // Two rounds: if the first attachment sticks in `attaching`, it is
    // detached and tried again under another name rather than waited on
    // forever.
    let mut mapped = instance.mapped();
    for round in 0..2 {
        let (device, _reservation) =
            attach(ctl, cloud.as_ref(), &volume, &instance, &mapped).await?;
        match wait_attached(ctl, cloud.as_ref(), vol, node).await {
            Ok(()) => return Ok(published(&device)),
            Err(Error::DeadlineExceeded(m)) if round == 0 => {
                tracing::warn!(volume_id = %vol, node_id = %node, %device, "attachment stuck: {m}; detaching to retry");
                ctl.devices.cool_down(node.as_str(), &device);
                mapped.names.push(device);
                detach_and_wait(ctl, cloud.as_ref(), vol, node).await?;
            }
            Err(e) => return Err(e),
        }
    }
    unreachable!("the second round returns")
}

/// Reserves a device name and calls AttachVolume, moving to another name
/// when EC2 says the name is in use. Returns the name attached as.
async fn attach<'c>(
    ctl: &'c Ctl,
    cloud: &dyn Cloud,
    volume: &Volume,
    instance: &Instance,
    mapped: &Mapped,
) -> Result<(String, Option<Reservation<'c>>)> {
    let vol = &volume.id;
    let node = &instance.id;
    let (facts, _) = facts_for(&instance.instance_type);
    for _ in 0..NAME_ATTEMPTS {
        let reservation = ctl
            .devices
            .reserve(node.as_str(), mapped, facts.cards)
            .ok_or_else(|| {
                limit_reached(
                    instance,
                    &format!("no device name is left ({} in use)", mapped.names.len()),
                )
            })?;
        let name = reservation.name.clone();
        match cloud
            .attach_volume(vol, node, &name, reservation.card)
            .await
        {
            Ok(()) => {
                tracing::info!(volume_id = %vol, node_id = %node, device = %name, card = ?reservation.card, "attach requested");
                // Held until the attachment is complete: until then the
                // instance's mappings may not list the name yet.
                return Ok((name, Some(reservation)));
            }
            Err(CloudError::DeviceInUse(m)) => {
                tracing::info!(device = %name, "device name in use on {node}, trying another: {m}");
                ctl.devices.cool_down(node.as_str(), &name);
            }
            Err(CloudError::InUse(m)) => {
                // Someone attached it meanwhile (an earlier, timed-out call).
                if let Some(v) = cloud.volume(vol).await?
                    && let Some(att) = v.attachment_to(node)
                {
                    return Ok((att.device.clone(), None));
                }
                return Err(Error::FailedPrecondition(m));
            }
            Err(CloudError::LimitExceeded(m)) => return Err(limit_reached(instance, &m)),
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Unavailable(format!(
        "EC2 refused {NAME_ATTEMPTS} device names on {node} as in use; retry"
    )))
}

/// ResourceExhausted for a node that can take no more volumes, naming the
/// node, its type's limit (from the attachment table) and `why`.
fn limit_reached(instance: &Instance, why: &str) -> Error {
    let (facts, _) = facts_for(&instance.instance_type);
    let shared = match facts.kind {
        LimitKind::Shared => format!(" shared with its {} network interface(s)", instance.enis),
        LimitKind::Dedicated => String::new(),
    };
    Error::ResourceExhausted(format!(
        "node {} ({}) cannot take another volume: {why}; its type allows {} EBS attachments{shared}, \
         {} device(s) are mapped",
        instance.id,
        instance.instance_type,
        facts.max_attachments,
        instance.devices.len()
    ))
}

/// Waits until the attachment of `vol` to `node` is `attached`.
async fn wait_attached(
    ctl: &Ctl,
    cloud: &dyn Cloud,
    vol: &VolumeId,
    node: &InstanceId,
) -> Result<()> {
    let what = format!("volume {vol} to attach to {node}");
    let outcome = poll(Watch::Volumes, &what, ctl.timeouts.attach, || async {
        let v = cloud.poll_volume(vol).await?;
        match v
            .as_ref()
            .and_then(|v| v.attachment_to(node))
            .map(|a| &a.state)
        {
            Some(AttachState::Attached) => Ok(Some(())),
            Some(AttachState::Attaching) => Ok(None),
            Some(other) => Err(CloudError::IncorrectState(format!(
                "attachment of {vol} to {node} is {other:?} while attaching"
            ))),
            None => Err(CloudError::IncorrectState(format!(
                "attachment of {vol} to {node} vanished while attaching"
            ))),
        }
    })
    .await;
    match outcome {
        Ok(()) => Ok(()),
        Err(CloudError::IncorrectState(m)) => Err(Error::Aborted(format!("{m}; retry"))),
        Err(e) => Err(e.into()),
    }
}

/// DetachVolume (tolerating "already detached") and waits until gone.
async fn detach_and_wait(
    ctl: &Ctl,
    cloud: &dyn Cloud,
    vol: &VolumeId,
    node: &InstanceId,
) -> Result<()> {
    match cloud.detach_volume(vol, node, false).await {
        Ok(()) | Err(CloudError::IncorrectState(_)) => {}
        Err(CloudError::NotFound(_)) => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    let what = format!("volume {vol} to detach from {node}");
    let outcome = poll(Watch::Volumes, &what, ctl.timeouts.detach, || async {
        let v = cloud.poll_volume(vol).await?;
        Ok(v.as_ref()
            .and_then(|v| v.attachment_to(node))
            .is_none()
            .then_some(()))
    })
    .await;
    match outcome {
        Ok(()) => Ok(()),
        Err(CloudError::Timeout(m)) => Err(Error::DeadlineExceeded(format!(
            "{m}; if the attachment is busy the device is still in use on the node"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// ControllerUnpublishVolume: OK when the volume, the node or the
/// attachment is already gone.
pub async fn unpublish(
    ctl: &Ctl,
    req: csi::ControllerUnpublishVolumeRequest,
) -> Result<csi::ControllerUnpublishVolumeResponse> {
    if req.volume_id.is_empty() {
        return Err(Error::missing("volume_id"));
    }
    if req.node_id.is_empty() {
        return Err(Error::missing("node_id"));
    }
    let (Some(vol), Some(node)) = (
        VolumeId::parse(&req.volume_id),
        InstanceId::parse(&req.node_id),
    ) else {
        // Neither can exist: nothing is attached.
        return Ok(csi::ControllerUnpublishVolumeResponse {});
    };
    let cloud = ctl.cloud()?;
    let _guard = ctl.inflight.claim(vol.as_str(), "volume")?;
    let attached = cloud
        .volume(&vol)
        .await?
        .is_some_and(|v| v.attachment_to(&node).is_some());
    if attached {
        detach_and_wait(ctl, cloud.as_ref(), &vol, &node).await?;
        tracing::info!(volume_id = %vol, node_id = %node, "detached");
    }
    Ok(csi::ControllerUnpublishVolumeResponse {})
}
