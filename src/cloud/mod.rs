//! Everything that speaks EC2.
//!
//! The services see only the [`Cloud`] trait and the domain types in
//! [`types`] (ids in [`ids`], volume types in [`volume_type`]);
//! [`ec2::Ec2Cloud`] implements it with aws-sdk-ec2, coalescing lookups
//! ([`coalesce`]), limiting its own rate ([`limiter`]) and retrying
//! throttled calls. Waiting for state changes is done by the services
//! through [`wait::poll`] on top of the coalesced lookups. The layer knows
//! nothing above it: it reports [`CloudError`]s and [`Ec2Observer`] events,
//! and the services decide what they mean.

pub mod coalesce;
pub mod devices;
pub mod ec2;
pub mod error;
pub mod ids;
pub mod limiter;
#[cfg(test)]
pub mod memory;
pub mod types;
pub mod volume_type;
pub mod wait;

use std::time::Duration;

use async_trait::async_trait;

pub use error::{CloudError, CloudResult};
pub use types::*;

/// Told of every EC2 request attempt (the metrics implement it), so the
/// cloud layer needs no knowledge of who counts.
pub trait Ec2Observer: Send + Sync {
    /// One attempt of `action` took `took`; `error` is EC2's error code
    /// (`RequestLimitExceeded`, `VolumeInUse`, …) when it failed, and
    /// `throttled` whether that was EC2 throttling.
    fn ec2_request(&self, action: &str, took: Duration, error: Option<&str>, throttled: bool);
}

/// The EC2 operations the driver needs. One production implementation
/// ([`ec2::Ec2Cloud`]); the controller's unit tests use the in-memory one
/// in [`memory`].
#[async_trait]
pub trait Cloud: Send + Sync {
    /// The schedule waits on this Cloud tick on (see [`wait`]): one per
    /// Describe budget, which is the account's, so the Cloud's.
    fn pacer(&self) -> &wait::Pacer;
    /// CreateVolume with the spec's ClientToken and creation tags; returns
    /// the volume as EC2 answered (usually `creating`).
    async fn create_volume(&self, spec: &VolumeSpec) -> CloudResult<Volume>;
    /// CopyVolumes of `spec.source_volume_id` (a clone, in the source's
    /// zone) with the spec's ClientToken and creation tags; returns the copy
    /// as EC2 answered (usually `creating`).
    async fn copy_volume(&self, spec: &VolumeSpec) -> CloudResult<Volume>;
    /// DeleteVolume.
    async fn delete_volume(&self, id: &VolumeId) -> CloudResult<()>;
    /// The volume with this id, if it exists (coalesced lookup).
    async fn volume(&self, id: &VolumeId) -> CloudResult<Option<Volume>>;
    /// [`volume`](Cloud::volume) for a poller woken by a shared tick
    /// (see [`wait`]): waits briefly to share its call with the tick's
    /// other pollers.
    async fn poll_volume(&self, id: &VolumeId) -> CloudResult<Option<Volume>> {
        self.volume(id).await
    }
    /// The live volume tagged `CSIVolumeName=name`, if any (coalesced).
    async fn volume_by_name(&self, name: &str) -> CloudResult<Option<Volume>>;
    /// Every volume this driver created (tag `ebs.csi.aws.com/cluster=true`).
    async fn list_volumes(&self) -> CloudResult<Vec<Volume>>;
    /// The instance with this id, if it exists (coalesced lookup).
    async fn instance(&self, id: &InstanceId) -> CloudResult<Option<Instance>>;
    /// AttachVolume as `device`, on EBS card `card` of a multi-card
    /// instance.
    async fn attach_volume(
        &self,
        volume: &VolumeId,
        instance: &InstanceId,
        device: &str,
        card: Option<u32>,
    ) -> CloudResult<()>;
    /// DetachVolume (forced when `force`).
    async fn detach_volume(
        &self,
        volume: &VolumeId,
        instance: &InstanceId,
        force: bool,
    ) -> CloudResult<()>;
    /// Names of the region's available zones, in EC2's order (cached).
    async fn zones(&self) -> CloudResult<Vec<String>>;
    /// ModifyVolume.
    async fn modify_volume(&self, id: &VolumeId, spec: &ModifySpec) -> CloudResult<()>;
    /// The latest modification of the volume, if it was ever modified
    /// (coalesced lookup).
    async fn modification(&self, id: &VolumeId) -> CloudResult<Option<Modification>>;
    /// [`modification`](Cloud::modification) for a poller woken by a
    /// shared tick (see [`poll_volume`](Cloud::poll_volume)).
    async fn poll_modification(&self, id: &VolumeId) -> CloudResult<Option<Modification>> {
        self.modification(id).await
    }
    /// CreateTags on a volume.
    async fn create_tags(&self, id: &VolumeId, tags: &[(String, String)]) -> CloudResult<()>;
    /// DeleteTags (by key) on a volume.
    async fn delete_tags(&self, id: &VolumeId, keys: &[String]) -> CloudResult<()>;
    /// CreateSnapshot of a volume with creation tags.
    async fn create_snapshot(
        &self,
        volume: &VolumeId,
        description: &str,
        tags: &[(String, String)],
    ) -> CloudResult<Snapshot>;
    /// CreateSnapshots: crash-consistent snapshots of the listed volumes,
    /// all attached to `instance`.
    async fn create_snapshots(
        &self,
        instance: &InstanceId,
        volumes: &[VolumeId],
        description: &str,
        tags: &[(String, String)],
    ) -> CloudResult<Vec<Snapshot>>;
    /// DeleteSnapshot.
    async fn delete_snapshot(&self, id: &SnapshotId) -> CloudResult<()>;
    /// The snapshot with this id, if it exists (coalesced lookup).
    async fn snapshot(&self, id: &SnapshotId) -> CloudResult<Option<Snapshot>>;
    /// The snapshot tagged `CSIVolumeSnapshotName=name`, if any (coalesced).
    async fn snapshot_by_name(&self, name: &str) -> CloudResult<Option<Snapshot>>;
    /// Every snapshot tagged `key=value`.
    async fn snapshots_tagged(&self, key: &str, value: &str) -> CloudResult<Vec<Snapshot>>;
    /// Every snapshot this driver created, optionally only of one volume.
    async fn list_snapshots(&self, volume: Option<&VolumeId>) -> CloudResult<Vec<Snapshot>>;
    /// EnableFastSnapshotRestores in the zones; an error names the zones EC2
    /// refused.
    async fn enable_fast_snapshot_restores(
        &self,
        id: &SnapshotId,
        zones: &[String],
    ) -> CloudResult<()>;
    /// LockSnapshot with the given mode and duration/expiry.
    async fn lock_snapshot(&self, id: &SnapshotId, lock: &SnapshotLock) -> CloudResult<()>;
}
