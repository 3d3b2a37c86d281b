//! ControllerPublishVolume and ControllerUnpublishVolume: AttachVolume and
//! DetachVolume, with device names chosen here and waits that end.

use std::collections::HashMap;

use super::instances::View;
use super::{Ctl, caps};
use crate::cloud::devices::Reservation;
use crate::cloud::wait::{Watch, poll};
use crate::cloud::{
    AttachState, BlockDevice, Cloud, CloudError, Instance, InstanceId, Volume, VolumeId,
};
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
    // A volume CreateVolume has just seen `available` needs no describing
    // (see `created`); the node's instance comes from its view.
    let (volume, view) = match ctl.created.take(vol) {
        Some(known) => (
            Ok(Some(known)),
            ctl.instances.get(cloud.as_ref(), node).await,
        ),
        None => tokio::join!(cloud.volume(vol), ctl.instances.get(cloud.as_ref(), node)),
    };
    let volume = volume?.ok_or_else(|| Error::NotFound(format!("volume {vol} does not exist")))?;
    let view =
        view?.ok_or_else(|| Error::NotFound(format!("node (instance) {node} does not exist")))?;
    let instance = &view.instance;
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
        note_attached(ctl, vol, node, &device, None);
        if att.state != AttachState::Attached {
            wait_attached(ctl, cloud.as_ref(), vol, node).await?;
        }
        return Ok(published(&device));
    }
    let others = volume.attached_instances();
    if !others.is_empty() && !volume.multi_attach {
        return Err(attached_elsewhere(&volume));
    }

    // Two rounds: if the first attachment sticks in `attaching`, it is
    // detached and tried again under another name (the stuck one cools
    // down) rather than waited on forever.
    for round in 0..2 {
        let (device, _reservation) = attach(ctl, cloud.as_ref(), &volume, &view).await?;
        match wait_attached(ctl, cloud.as_ref(), vol, node).await {
            Ok(()) => return Ok(published(&device)),
            Err(Error::DeadlineExceeded(m)) if round == 0 => {
                tracing::warn!(volume_id = %vol, node_id = %node, %device, "attachment stuck: {m}; detaching to retry");
                ctl.devices.cool_down(node.as_str(), &device);
                detach_and_wait(ctl, cloud.as_ref(), vol, node).await?;
            }
            Err(e) => return Err(e),
        }
    }
    unreachable!("the second round returns")
}

/// FailedPrecondition for a volume that is not multi-attach and attached
/// to other instances.
fn attached_elsewhere(volume: &Volume) -> Error {
    Error::FailedPrecondition(format!(
        "volume {} is attached to {} and is not multi-attach; it must be unpublished there first",
        volume.id,
        volume.attached_instance_names().join(", ")
    ))
}

/// Records in the instance's view that `vol` is attached as `device`.
fn note_attached(ctl: &Ctl, vol: &VolumeId, node: &InstanceId, device: &str, card: Option<u32>) {
    ctl.instances.attached(
        node,
        BlockDevice {
            name: device.to_string(),
            volume_id: Some(vol.clone()),
            card,
        },
    );
}

/// Reserves a device name and calls AttachVolume, moving to another name
/// when EC2 says the name is in use. Returns the name attached as.
///
/// The instance's view starts as `view`; it is read from EC2 again when
/// EC2 says a name is in use (someone else attached there) and when it has
/// no name left but was not read by this publish, and marked for reading
/// when EC2's refusal means it may be wrong (attachment limit, instance
/// not found or in the wrong state).
async fn attach<'c>(
    ctl: &'c Ctl,
    cloud: &dyn Cloud,
    volume: &Volume,
    view: &View,
) -> Result<(String, Option<Reservation<'c>>)> {
    let vol = &volume.id;
    let node = &view.instance.id;
    let mut view = view.clone();
    let reread = |seen: u64| async move {
        ctl.instances
            .reread(cloud, node, seen)
            .await?
            .ok_or_else(|| Error::NotFound(format!("node (instance) {node} does not exist")))
    };
    let mut attempts = 0;
    while attempts < NAME_ATTEMPTS {
        let (facts, _) = facts_for(&view.instance.instance_type);
        let (reservation, mapped) = ctl.instances.reserve(&view, &ctl.devices, facts.cards);
        let Some(reservation) = reservation else {
            if !view.fresh {
                // Kept from an earlier read: others may have freed names.
                view = reread(view.generation).await?;
                view.fresh = true;
                continue;
            }
            return Err(limit_reached(
                &view.instance,
                mapped,
                &format!("no device name is left ({mapped} in use)"),
            ));
        };
        attempts += 1;
        let name = reservation.name.clone();
        match cloud
            .attach_volume(vol, node, &name, reservation.card)
            .await
        {
            Ok(()) => {
                tracing::info!(volume_id = %vol, node_id = %node, device = %name, card = ?reservation.card, "attach requested");
                note_attached(ctl, vol, node, &name, reservation.card);
                // Held until the attachment is complete: until then the
                // instance's mappings may not list the name yet.
                return Ok((name, Some(reservation)));
            }
            Err(CloudError::DeviceInUse(m)) => {
                tracing::info!(device = %name, "device name in use on {node}, trying another: {m}");
                ctl.devices.cool_down(node.as_str(), &name);
                drop(reservation);
                view = reread(view.generation).await?;
            }
            Err(CloudError::InUse(m)) => {
                // Attached meanwhile: by an earlier, timed-out call of ours,
                // or elsewhere (a record of `created` can be that stale).
                return match cloud.volume(vol).await? {
                    Some(v) => match v.attachment_to(node) {
                        Some(att) => {
                            note_attached(ctl, vol, node, &att.device, None);
                            Ok((att.device.clone(), None))
                        }
                        None if !v.attached_instances().is_empty() && !v.multi_attach => {
                            Err(attached_elsewhere(&v))
                        }
                        None => Err(Error::FailedPrecondition(m)),
                    },
                    None => Err(Error::NotFound(format!("volume {vol} does not exist"))),
                };
            }
            Err(CloudError::LimitExceeded(m)) => {
                ctl.instances.invalidate(node, view.generation);
                return Err(limit_reached(&view.instance, mapped, &m));
            }
            Err(e @ (CloudError::NotFound(_) | CloudError::IncorrectState(_))) => {
                ctl.instances.invalidate(node, view.generation);
                return Err(e.into());
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Unavailable(format!(
        "EC2 refused {NAME_ATTEMPTS} device names on {node} as in use; retry"
    )))
}

/// ResourceExhausted for a node that can take no more volumes, naming the
/// node, its type's limit (from the attachment table), the `mapped`
/// devices counted and `why`.
fn limit_reached(instance: &Instance, mapped: usize, why: &str) -> Error {
    let (facts, _) = facts_for(&instance.instance_type);
    let shared = match facts.kind {
        LimitKind::Shared => format!(" shared with its {} network interface(s)", instance.enis),
        LimitKind::Dedicated => String::new(),
    };
    Error::ResourceExhausted(format!(
        "node {} ({}) cannot take another volume: {why}; its type allows {} EBS attachments{shared}, \
         {} device(s) are mapped",
        instance.id, instance.instance_type, facts.max_attachments, mapped
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
    let outcome = poll(
        cloud.pacer(),
        Watch::Volumes,
        &what,
        ctl.timeouts.attach,
        || async {
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
        },
    )
    .await;
    match outcome {
        Ok(()) => Ok(()),
        Err(CloudError::IncorrectState(m)) => {
            // The view holds the attachment as ours; EC2 disagrees.
            ctl.instances.expire(node);
            Err(Error::Aborted(format!("{m}; retry")))
        }
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
        Err(CloudError::NotFound(_)) => {
            ctl.instances.detached(node, vol);
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    }
    let what = format!("volume {vol} to detach from {node}");
    let outcome = poll(
        cloud.pacer(),
        Watch::Volumes,
        &what,
        ctl.timeouts.detach,
        || async {
            let v = cloud.poll_volume(vol).await?;
            Ok(v.as_ref()
                .and_then(|v| v.attachment_to(node))
                .is_none()
                .then_some(()))
        },
    )
    .await;
    match outcome {
        Ok(()) => {
            // Its device name is free again (EC2's own mappings may take a
            // moment to say so; a refusal of the name re-reads them).
            ctl.instances.detached(node, vol);
            Ok(())
        }
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
    } else {
        ctl.instances.detached(&node, &vol);
    }
    Ok(csi::ControllerUnpublishVolumeResponse {})
}
