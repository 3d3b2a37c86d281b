//! Conversions between aws-sdk-ec2 types and the domain types.

use std::collections::BTreeMap;
use std::time::SystemTime;

use aws_sdk_ec2::primitives::DateTime;
use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};

use crate::cloud::types::*;

/// A describe filter.
pub fn filter(name: &str, values: Vec<String>) -> Filter {
    Filter::builder()
        .name(name)
        .set_values(Some(values))
        .build()
}

/// TagSpecifications for a resource created with `tags`.
pub fn tag_spec(resource: ResourceType, tags: &[(String, String)]) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(resource)
        .set_tags(Some(to_tags(tags)))
        .build()
}

/// SDK tags from pairs.
pub fn to_tags(tags: &[(String, String)]) -> Vec<Tag> {
    tags.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

/// Pairs from SDK tags.
pub fn from_tags(tags: &[Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or("").to_string())))
        .collect()
}

/// SystemTime from an SDK timestamp.
pub fn time(t: Option<&DateTime>) -> Option<SystemTime> {
    t.and_then(|t| SystemTime::try_from(*t).ok())
}

/// The fields DescribeVolumes' items and CreateVolume's answer share (two
/// SDK types with the same accessors).
macro_rules! volume_fields {
    ($v:expr, $attachments:expr) => {
        Volume {
            id: VolumeId::from_ec2($v.volume_id().unwrap_or_default()),
            size_gib: $v.size().unwrap_or_default() as i64,
            zone: $v.availability_zone().unwrap_or_default().to_string(),
            volume_type: VolumeType::from_ec2(
                $v.volume_type().map(|t| t.as_str()).unwrap_or_default(),
            ),
            iops: $v.iops().map(i64::from),
            throughput: $v.throughput().map(i64::from),
            encrypted: $v.encrypted().unwrap_or(false),
            kms_key_id: $v.kms_key_id().map(str::to_string),
            snapshot_id: $v
                .snapshot_id()
                .filter(|s| !s.is_empty())
                .map(SnapshotId::from_ec2),
            source_volume_id: $v
                .source_volume_id()
                .filter(|s| !s.is_empty())
                .map(VolumeId::from_ec2),
            initialization_rate: $v.volume_initialization_rate().map(i64::from),
            multi_attach: $v.multi_attach_enabled().unwrap_or(false),
            state: VolumeState::parse($v.state().map(|s| s.as_str()).unwrap_or("")),
            attachments: $attachments,
            tags: from_tags($v.tags()),
            create_time: time($v.create_time()),
        }
    };
}

/// Domain volume from DescribeVolumes' item.
pub fn volume(v: &aws_sdk_ec2::types::Volume) -> Volume {
    let attachments = v
        .attachments()
        .iter()
        .map(|a| Attachment {
            instance_id: InstanceId::from_ec2(a.instance_id().unwrap_or_default()),
            device: a.device().unwrap_or_default().to_string(),
            state: AttachState::parse(a.state().map(|s| s.as_str()).unwrap_or("")),
        })
        .collect();
    volume_fields!(v, attachments)
}

/// Domain volume from CreateVolume's answer (a new volume has no attachments).
pub fn created_volume(v: &aws_sdk_ec2::operation::create_volume::CreateVolumeOutput) -> Volume {
    volume_fields!(v, Vec::new())
}

/// Domain instance from DescribeInstances' item.
pub fn instance(i: &aws_sdk_ec2::types::Instance) -> Instance {
    Instance {
        id: InstanceId::from_ec2(i.instance_id().unwrap_or_default()),
        zone: i
            .placement()
            .and_then(|p| p.availability_zone())
            .unwrap_or_default()
            .to_string(),
        instance_type: i
            .instance_type()
            .map(|t| t.as_str().to_string())
            .unwrap_or_default(),
        state: i
            .state()
            .and_then(|s| s.name())
            .map(|n| n.as_str().to_string())
            .unwrap_or_default(),
        devices: i
            .block_device_mappings()
            .iter()
            .filter_map(|m| {
                Some(BlockDevice {
                    name: m.device_name()?.to_string(),
                    volume_id: m.ebs().and_then(|e| e.volume_id()).map(VolumeId::from_ec2),
                    card: m
                        .ebs()
                        .and_then(|e| e.ebs_card_index())
                        .and_then(|c| u32::try_from(c).ok()),
                })
            })
            .collect(),
        enis: (i.network_interfaces().len() as u32).max(1),
    }
}

/// The fields DescribeSnapshots' items and CreateSnapshots' items share.
macro_rules! snapshot_fields {
    ($s:expr) => {
        Snapshot {
            id: SnapshotId::from_ec2($s.snapshot_id().unwrap_or_default()),
            volume_id: VolumeId::from_ec2($s.volume_id().unwrap_or_default()),
            size_gib: $s.volume_size().unwrap_or_default() as i64,
            state: SnapshotState::parse($s.state().map(|x| x.as_str()).unwrap_or("")),
            start_time: time($s.start_time()),
            tags: from_tags($s.tags()),
        }
    };
}

/// Domain snapshot from DescribeSnapshots' item.
pub fn snapshot(s: &aws_sdk_ec2::types::Snapshot) -> Snapshot {
    snapshot_fields!(s)
}

/// Domain snapshot from CreateSnapshots' item.
pub fn snapshot_info(s: &aws_sdk_ec2::types::SnapshotInfo) -> Snapshot {
    snapshot_fields!(s)
}

/// Domain snapshot from CreateSnapshot's answer.
pub fn created_snapshot(
    s: &aws_sdk_ec2::operation::create_snapshot::CreateSnapshotOutput,
) -> Snapshot {
    snapshot_fields!(s)
}

/// Domain modification from DescribeVolumesModifications' item.
pub fn modification(m: &aws_sdk_ec2::types::VolumeModification) -> Modification {
    Modification {
        volume_id: VolumeId::from_ec2(m.volume_id().unwrap_or_default()),
        state: ModificationState::parse(m.modification_state().map(|s| s.as_str()).unwrap_or("")),
        target_size_gib: m.target_size().map(i64::from),
        target_type: m
            .target_volume_type()
            .map(|t| VolumeType::from_ec2(t.as_str())),
        target_iops: m.target_iops().map(i64::from),
        target_throughput: m.target_throughput().map(i64::from),
    }
}
