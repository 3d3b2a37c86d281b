//! Everything that speaks EC2.
//!
//! The services see only the [`Cloud`] trait and the domain types in
//! [`types`]; [`ec2::Ec2Cloud`] implements it with aws-sdk-ec2, coalescing
//! lookups ([`coalesce`]), limiting its own rate ([`limiter`]), retrying
//! throttled calls and recording metrics. Waiting for state changes is done
//! by the services through [`wait::poll`] on top of the coalesced lookups.

pub mod coalesce;
pub mod devices;
pub mod ec2;
pub mod error;
pub mod limiter;
pub mod types;
pub mod wait;

use async_trait::async_trait;

pub use error::{CloudError, CloudResult};
pub use types::*;

/// The EC2 operations the driver needs. One production implementation
/// ([`ec2::Ec2Cloud`]); unit tests use in-memory doubles.
#[async_trait]
pub trait Cloud: Send + Sync {
    /// CreateVolume with the spec's ClientToken and creation tags; returns
    /// the volume as EC2 answered (usually `creating`).
    async fn create_volume(&self, spec: &VolumeSpec) -> CloudResult<Volume>;
    /// DeleteVolume.
    async fn delete_volume(&self, volume_id: &str) -> CloudResult<()>;
    /// The volume with this id, if it exists (coalesced lookup).
    async fn volume(&self, volume_id: &str) -> CloudResult<Option<Volume>>;
    /// [`volume`](Cloud::volume) for a poller woken by a shared tick
    /// (see [`wait`]): waits briefly to share its call with the tick's
    /// other pollers.
    async fn poll_volume(&self, volume_id: &str) -> CloudResult<Option<Volume>> {
        self.volume(volume_id).await
    }
    /// The live volume tagged `CSIVolumeName=name`, if any (coalesced).
    async fn volume_by_name(&self, name: &str) -> CloudResult<Option<Volume>>;
    /// Every volume this driver created (tag `ebs.csi.aws.com/cluster=true`).
    async fn list_volumes(&self) -> CloudResult<Vec<Volume>>;
    /// The instance with this id, if it exists (coalesced lookup).
    async fn instance(&self, instance_id: &str) -> CloudResult<Option<Instance>>;
    /// AttachVolume as `device`, on EBS card `card` of a multi-card
    /// instance.
    async fn attach_volume(
        &self,
        volume_id: &str,
        instance_id: &str,
        device: &str,
        card: Option<u32>,
    ) -> CloudResult<()>;
    /// DetachVolume (forced when `force`).
    async fn detach_volume(
        &self,
        volume_id: &str,
        instance_id: &str,
        force: bool,
    ) -> CloudResult<()>;
    /// Names of the region's available zones, in EC2's order (cached).
    async fn zones(&self) -> CloudResult<Vec<String>>;
    /// ModifyVolume.
    async fn modify_volume(&self, volume_id: &str, spec: &ModifySpec) -> CloudResult<()>;
    /// The latest modification of the volume, if it was ever modified.
    async fn modification(&self, volume_id: &str) -> CloudResult<Option<Modification>>;
    /// CreateTags on a volume or snapshot.
    async fn create_tags(&self, resource_id: &str, tags: &[(String, String)]) -> CloudResult<()>;
    /// DeleteTags (by key) on a volume or snapshot.
    async fn delete_tags(&self, resource_id: &str, keys: &[String]) -> CloudResult<()>;
    /// CreateSnapshot of a volume with creation tags.
    async fn create_snapshot(
        &self,
        volume_id: &str,
        description: &str,
        tags: &[(String, String)],
    ) -> CloudResult<Snapshot>;
    /// CreateSnapshots: crash-consistent snapshots of the listed volumes,
    /// all attached to `instance_id`.
    async fn create_snapshots(
        &self,
        instance_id: &str,
        volume_ids: &[String],
        description: &str,
        tags: &[(String, String)],
    ) -> CloudResult<Vec<Snapshot>>;
    /// DeleteSnapshot.
    async fn delete_snapshot(&self, snapshot_id: &str) -> CloudResult<()>;
    /// The snapshot with this id, if it exists (coalesced lookup).
    async fn snapshot(&self, snapshot_id: &str) -> CloudResult<Option<Snapshot>>;
    /// The snapshot tagged `CSIVolumeSnapshotName=name`, if any (coalesced).
    async fn snapshot_by_name(&self, name: &str) -> CloudResult<Option<Snapshot>>;
    /// Every snapshot tagged `key=value`.
    async fn snapshots_tagged(&self, key: &str, value: &str) -> CloudResult<Vec<Snapshot>>;
    /// Every snapshot this driver created, optionally only of one volume.
    async fn list_snapshots(&self, volume_id: Option<&str>) -> CloudResult<Vec<Snapshot>>;
    /// EnableFastSnapshotRestores in the zones; an error names the zones EC2
    /// refused.
    async fn enable_fast_snapshot_restores(
        &self,
        snapshot_id: &str,
        zones: &[String],
    ) -> CloudResult<()>;
    /// LockSnapshot with the given mode and duration/expiry.
    async fn lock_snapshot(&self, snapshot_id: &str, lock: &SnapshotLock) -> CloudResult<()>;
}

/// A snapshot lock request (LockSnapshot).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SnapshotLock {
    /// `governance` or `compliance`.
    pub mode: String,
    /// Lock duration in days.
    pub duration_days: Option<i32>,
    /// Expiration date (RFC 3339).
    pub expiration_date: Option<String>,
    /// Cool-off period in hours (compliance mode).
    pub cool_off_hours: Option<i32>,
}
