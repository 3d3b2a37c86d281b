//! Domain types of the cloud layer: what the services need to know about EBS
//! volumes, instances, snapshots and modifications, free of SDK types.

use std::collections::BTreeMap;
use std::time::SystemTime;

pub use super::ids::{InstanceId, SnapshotId, VolumeId};
pub use super::volume_type::{IopsLimits, TypeLimits, VolumeType};

/// Lifecycle state of a volume, as EC2 reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeState {
    /// Being created; not attachable yet.
    Creating,
    /// Created and not attached.
    Available,
    /// Attached to at least one instance.
    InUse,
    /// Being deleted.
    Deleting,
    /// Deleted (still listed for a while by EC2).
    Deleted,
    /// Creation failed; the volume is unusable.
    Error,
    /// A state this driver does not know.
    Other(String),
}

impl VolumeState {
    /// Parses EC2's state string.
    pub fn parse(s: &str) -> Self {
        match s {
            "creating" => Self::Creating,
            "available" => Self::Available,
            "in-use" => Self::InUse,
            "deleting" => Self::Deleting,
            "deleted" => Self::Deleted,
            "error" => Self::Error,
            other => Self::Other(other.to_string()),
        }
    }

    /// Whether the volume is gone or going for good.
    pub fn is_gone(&self) -> bool {
        matches!(self, Self::Deleting | Self::Deleted)
    }
}

/// State of one attachment of a volume to an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachState {
    /// AttachVolume accepted, device not ready.
    Attaching,
    /// Attached; the device exists on the instance.
    Attached,
    /// DetachVolume accepted.
    Detaching,
    /// Detached (EC2 may still list it briefly).
    Detached,
    /// Detach requested but the instance still uses the device.
    Busy,
    /// A state this driver does not know.
    Other(String),
}

impl AttachState {
    /// Parses EC2's attachment state string.
    pub fn parse(s: &str) -> Self {
        match s {
            "attaching" => Self::Attaching,
            "attached" => Self::Attached,
            "detaching" => Self::Detaching,
            "detached" => Self::Detached,
            "busy" => Self::Busy,
            other => Self::Other(other.to_string()),
        }
    }
}

/// One attachment of a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// The instance (CSI node id).
    pub instance_id: InstanceId,
    /// Device name it was attached as (`/dev/xvdba`).
    pub device: String,
    /// Attachment state.
    pub state: AttachState,
}

/// An EBS volume.
#[derive(Debug, Clone, PartialEq)]
pub struct Volume {
    /// `vol-…`
    pub id: VolumeId,
    /// Size in GiB.
    pub size_gib: i64,
    /// Availability zone.
    pub zone: String,
    /// EBS type.
    pub volume_type: VolumeType,
    /// Provisioned IOPS, when the type has them.
    pub iops: Option<i64>,
    /// Provisioned throughput in MiB/s (gp3).
    pub throughput: Option<i64>,
    /// Whether encrypted.
    pub encrypted: bool,
    /// KMS key, when encrypted with a given key.
    pub kms_key_id: Option<String>,
    /// Snapshot it was created from.
    pub snapshot_id: Option<SnapshotId>,
    /// Volume it was copied from (CopyVolumes).
    pub source_volume_id: Option<VolumeId>,
    /// Provisioned initialization rate from a snapshot, MiB/s.
    pub initialization_rate: Option<i64>,
    /// Whether io2 multi-attach is enabled.
    pub multi_attach: bool,
    /// Lifecycle state.
    pub state: VolumeState,
    /// Current attachments.
    pub attachments: Vec<Attachment>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Creation time.
    pub create_time: Option<SystemTime>,
}

impl Volume {
    /// The attachment to `instance_id`, if any.
    pub fn attachment_to(&self, instance_id: &InstanceId) -> Option<&Attachment> {
        self.attachments
            .iter()
            .find(|a| a.instance_id == *instance_id && a.state != AttachState::Detached)
    }

    /// Instances the volume is attached (or attaching) to.
    pub fn attached_instances(&self) -> Vec<InstanceId> {
        self.attachments
            .iter()
            .filter(|a| a.state != AttachState::Detached)
            .map(|a| a.instance_id.clone())
            .collect()
    }

    /// [`attached_instances`](Self::attached_instances) as text, for CSI
    /// answers and messages.
    pub fn attached_instance_names(&self) -> Vec<String> {
        self.attached_instances()
            .iter()
            .map(ToString::to_string)
            .collect()
    }
}

/// What to create.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VolumeSpec {
    /// Availability zone.
    pub zone: String,
    /// Size in GiB.
    pub size_gib: i64,
    /// EBS type.
    pub volume_type: VolumeType,
    /// Provisioned IOPS.
    pub iops: Option<i64>,
    /// Provisioned throughput, MiB/s.
    pub throughput: Option<i64>,
    /// Encrypt the volume.
    pub encrypted: bool,
    /// KMS key for encryption.
    pub kms_key_id: Option<String>,
    /// Source snapshot.
    pub snapshot_id: Option<SnapshotId>,
    /// Source volume: the volume is a copy of it (EC2 CopyVolumes), in its
    /// zone; `zone` and `snapshot_id` do not apply.
    pub source_volume_id: Option<VolumeId>,
    /// Initialization rate from a snapshot, MiB/s (`volumeInitializationRate`).
    pub initialization_rate: Option<i64>,
    /// Enable io2 multi-attach.
    pub multi_attach: bool,
    /// Tags applied at creation (TagSpecifications).
    pub tags: Vec<(String, String)>,
    /// Idempotency token (≤ 64 ASCII characters).
    pub client_token: String,
}

/// An EC2 instance, as far as attaching volumes goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    /// `i-…`
    pub id: InstanceId,
    /// Availability zone.
    pub zone: String,
    /// Instance type.
    pub instance_type: String,
    /// State name (`running`, `stopped`, …).
    pub state: String,
    /// Its block device mappings (the root volume included).
    pub devices: Vec<BlockDevice>,
    /// Attached network interfaces (they take EBS slots on shared-limit
    /// instance types).
    pub enis: u32,
}

/// One block device mapping of an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDevice {
    /// Device name (`/dev/xvda`, `/dev/sdf`).
    pub name: String,
    /// The EBS volume, when EC2 names one.
    pub volume_id: Option<VolumeId>,
    /// The EBS card it is attached on (multi-card instances only).
    pub card: Option<u32>,
}

impl Instance {
    /// What the device allocator needs to know of the mappings.
    pub fn mapped(&self) -> crate::cloud::devices::Mapped {
        let mut mapped = crate::cloud::devices::Mapped::default();
        for d in &self.devices {
            mapped.names.push(d.name.clone());
            if let Some(card) = d.card {
                *mapped.per_card.entry(card).or_default() += 1;
            }
        }
        mapped
    }
}

/// State of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotState {
    /// Being taken.
    Pending,
    /// Complete and usable.
    Completed,
    /// Failed.
    Error,
    /// Other states (`recoverable`, …).
    Other(String),
}

impl SnapshotState {
    /// Parses EC2's snapshot state string.
    pub fn parse(s: &str) -> Self {
        match s {
            "pending" => Self::Pending,
            "completed" => Self::Completed,
            "error" => Self::Error,
            other => Self::Other(other.to_string()),
        }
    }
}

/// An EBS snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// `snap-…`
    pub id: SnapshotId,
    /// Source volume.
    pub volume_id: VolumeId,
    /// Size of the source volume, GiB.
    pub size_gib: i64,
    /// State.
    pub state: SnapshotState,
    /// When it was started.
    pub start_time: Option<SystemTime>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

/// State of a volume modification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModificationState {
    /// Being applied; a new modification is refused.
    Modifying,
    /// New size/performance usable; still optimising.
    Optimizing,
    /// Done.
    Completed,
    /// Failed.
    Failed,
    /// Unknown.
    Other(String),
}

impl ModificationState {
    /// Parses EC2's modification state string.
    pub fn parse(s: &str) -> Self {
        match s {
            "modifying" => Self::Modifying,
            "optimizing" => Self::Optimizing,
            "completed" => Self::Completed,
            "failed" => Self::Failed,
            other => Self::Other(other.to_string()),
        }
    }

    /// Whether the new size and performance are in effect.
    pub fn is_effective(&self) -> bool {
        matches!(self, Self::Optimizing | Self::Completed)
    }
}

/// The latest modification of a volume.
#[derive(Debug, Clone, PartialEq)]
pub struct Modification {
    /// The volume.
    pub volume_id: VolumeId,
    /// State.
    pub state: ModificationState,
    /// Target size, GiB.
    pub target_size_gib: Option<i64>,
    /// Target type.
    pub target_type: Option<VolumeType>,
    /// Target IOPS.
    pub target_iops: Option<i64>,
    /// Target throughput.
    pub target_throughput: Option<i64>,
}

/// What to change on a volume; `None` leaves a property as it is.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModifySpec {
    /// New size, GiB.
    pub size_gib: Option<i64>,
    /// New type.
    pub volume_type: Option<VolumeType>,
    /// New IOPS.
    pub iops: Option<i64>,
    /// New throughput.
    pub throughput: Option<i64>,
}

impl ModifySpec {
    /// Whether nothing would change.
    pub fn is_empty(&self) -> bool {
        self.size_gib.is_none()
            && self.volume_type.is_none()
            && self.iops.is_none()
            && self.throughput.is_none()
    }
}

/// The two lock modes of EBS snapshot locks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Users with IAM permission may unlock or shorten the lock.
    Governance,
    /// Nobody may delete the snapshot until the lock expires (after an
    /// optional cool-off period).
    Compliance,
}

impl LockMode {
    /// Parses a mode name, case-insensitively.
    pub fn parse(name: &str) -> Option<LockMode> {
        match name.trim().to_ascii_lowercase().as_str() {
            "governance" => Some(LockMode::Governance),
            "compliance" => Some(LockMode::Compliance),
            _ => None,
        }
    }

    /// EC2's name of the mode.
    pub fn as_str(self) -> &'static str {
        match self {
            LockMode::Governance => "governance",
            LockMode::Compliance => "compliance",
        }
    }
}

/// A snapshot lock request (LockSnapshot).
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotLock {
    /// The mode.
    pub mode: LockMode,
    /// Lock duration in days.
    pub duration_days: Option<i32>,
    /// Expiration date (RFC 3339).
    pub expiration_date: Option<String>,
    /// Cool-off period in hours (compliance mode).
    pub cool_off_hours: Option<i32>,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Token of the next page, if any.
    pub next_token: Option<String>,
}
