//! Volumes this controller has just created and seen `available`, so that
//! the ControllerPublishVolume that usually follows needs no DescribeVolumes.
//!
//! Before attaching, a publish reads of the volume: that it exists, its
//! zone, type and multi-attach flag (the zone and capability checks), and
//! its attachments (attached to the node already: answer its device;
//! elsewhere: refuse). For a volume CreateVolume has just seen `available`
//! EC2 has said all of that already: zone, type and multi-attach are set
//! at creation, and it had no attachments. So CreateVolume leaves a record
//! here ([`CreatedVolumes::record`]) and the first publish takes it
//! ([`CreatedVolumes::take`]) instead of describing the volume; later
//! publishes, and any publish without a record, describe it as before.
//!
//! A record is only a hint, never the last word. It is dropped by
//! DeleteVolume and by a modification of the volume (which may change its
//! type), taken by the one publish it serves, and lapses after [`TTL`].
//! What it cannot know — what someone else did to the volume since — EC2
//! answers on the AttachVolume itself, and the attach path acts on those
//! answers as it always did: VolumeInUse (attached meanwhile; the publish
//! then describes the volume and answers from what it finds),
//! InvalidVolume.NotFound (deleted), IncorrectState.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::cloud::{Volume, VolumeId, VolumeState};

/// How long a record is kept. With WaitForFirstConsumer binding the
/// publish follows the create within seconds (the pod is scheduled
/// already); a volume that waits longer (Immediate binding) is described
/// when it is published, as any other. Five minutes also bound how long a
/// change someone else made to the volume's type could go unseen by the
/// capability check, and what the records of never-published volumes cost.
pub const TTL: Duration = Duration::from_secs(300);

/// The records (see the module docs).
#[derive(Default)]
pub struct CreatedVolumes {
    records: Mutex<HashMap<VolumeId, (Instant, Volume)>>,
}

impl CreatedVolumes {
    /// Notes `volume` as CreateVolume saw it, if it is `available` with no
    /// attachments (anything else is left to a DescribeVolumes).
    pub fn record(&self, volume: &Volume) {
        if volume.state != VolumeState::Available || !volume.attachments.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut records = crate::sync::lock(&self.records);
        records.retain(|_, (at, _)| now.duration_since(*at) < TTL);
        records.insert(volume.id.clone(), (now, volume.clone()));
    }

    /// The record of `id`, removed, if there is one within the TTL.
    pub fn take(&self, id: &VolumeId) -> Option<Volume> {
        let (at, volume) = crate::sync::lock(&self.records).remove(id)?;
        (at.elapsed() < TTL).then_some(volume)
    }

    /// Drops the record of `id`: the volume was deleted or modified.
    pub fn forget(&self, id: &VolumeId) {
        crate::sync::lock(&self.records).remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::{AttachState, Attachment, InstanceId, VolumeType};

    fn volume(id: &str, state: VolumeState) -> Volume {
        Volume {
            id: VolumeId::from_ec2(id),
            size_gib: 1,
            zone: "us-east-1a".into(),
            volume_type: VolumeType::Gp3,
            iops: None,
            throughput: None,
            encrypted: false,
            kms_key_id: None,
            snapshot_id: None,
            source_volume_id: None,
            initialization_rate: None,
            multi_attach: false,
            state,
            attachments: Vec::new(),
            tags: Default::default(),
            create_time: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn only_available_unattached_volumes_once_within_the_ttl() {
        let created = CreatedVolumes::default();
        let a = volume("vol-a", VolumeState::Available);
        created.record(&a);
        assert_eq!(created.take(&a.id), Some(a.clone()));
        assert_eq!(created.take(&a.id), None, "taken by one publish");

        created.record(&volume("vol-b", VolumeState::Creating));
        assert_eq!(created.take(&VolumeId::from_ec2("vol-b")), None);
        let mut attached = volume("vol-c", VolumeState::InUse);
        attached.attachments.push(Attachment {
            instance_id: InstanceId::from_ec2("i-1"),
            device: "/dev/xvdaa".into(),
            state: AttachState::Attached,
        });
        created.record(&attached);
        assert_eq!(created.take(&attached.id), None);

        created.record(&a);
        created.forget(&a.id);
        assert_eq!(created.take(&a.id), None, "forgotten");
        created.record(&a);
        tokio::time::advance(TTL).await;
        assert_eq!(created.take(&a.id), None, "lapsed");
    }
}
