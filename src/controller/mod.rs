//! The CSI Controller service: volumes, attachments and snapshots through EC2.
//!
//! `mod.rs` only dispatches: each RPC runs through [`rpc::run`] (logging,
//! metrics, the one Error → Status conversion) into a function of the
//! module named for what it does.

pub mod caps;
pub mod created;
pub mod group;
pub mod inspect;
pub mod instances;
pub mod modifier;
pub mod modify;
pub mod params;
pub mod publish;
pub mod snapshot_params;
pub mod snapshots;
pub mod tags;
pub mod template;
pub mod topology;
pub mod volumes;

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};

use crate::cloud::Cloud;
use crate::cloud::devices::DeviceAllocator;
use crate::csi;
use crate::csi::controller_server::Controller;
use crate::csi::controller_service_capability::rpc::Type as Cap;
use crate::error::Result as CsiResult;
use crate::readiness::Slot;
use crate::rpc;
use tags::DriverTags;

/// Bounds of the controller's waits.
#[derive(Debug, Clone)]
pub struct Timeouts {
    /// creating → available.
    pub create: Duration,
    /// attaching → attached, before the attachment counts as stuck.
    pub attach: Duration,
    /// detaching → detached.
    pub detach: Duration,
    /// A modification to reach optimizing/completed; snapshots to complete.
    pub modify: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            create: Duration::from_secs(300),
            attach: Duration::from_secs(120),
            detach: Duration::from_secs(120),
            modify: Duration::from_secs(300),
        }
    }
}

/// What the controller RPCs share.
pub struct Ctl {
    /// The EC2 client, once initialised.
    pub cloud: Slot<Arc<dyn Cloud>>,
    /// Driver-wide tags.
    pub tags: DriverTags,
    /// This process's zone (`--availability-zone`), used when a request
    /// does not constrain the zone.
    pub own_zone: Option<String>,
    /// The node's instance identity in `all` mode: its zone serves as ours.
    pub instance: Option<crate::metadata::InstanceState>,
    /// Keys (names, volume ids) with an operation in flight.
    pub inflight: crate::inflight::InFlight,
    /// Device names per instance.
    pub devices: DeviceAllocator,
    /// What each instance has attached, as far as publishing goes.
    pub instances: instances::InstanceViews,
    /// Volumes just created and seen `available`, for the first publish.
    pub created: created::CreatedVolumes,
    /// Wait bounds.
    pub timeouts: Timeouts,
    /// Merges and serialises modifications per volume.
    pub modifier: modifier::Modifier,
}

impl Ctl {
    /// The EC2 client, or Unavailable while it is being set up.
    pub fn cloud(&self) -> CsiResult<Arc<dyn Cloud>> {
        self.cloud.get().cloned()
    }

    /// The zone this process runs in, if known.
    pub fn zone(&self) -> Option<String> {
        self.own_zone.clone().or_else(|| {
            self.instance
                .as_ref()
                .and_then(|i| i.get().ok())
                .map(|info| info.availability_zone.clone())
        })
    }
}

/// The Controller service.
#[derive(Clone)]
pub struct ControllerService {
    ctl: Arc<Ctl>,
}

impl ControllerService {
    /// A service over `ctl`.
    pub fn new(ctl: Ctl) -> Self {
        ControllerService { ctl: Arc::new(ctl) }
    }

    /// The shared state (the GroupController service uses it too).
    pub fn state(&self) -> Arc<Ctl> {
        self.ctl.clone()
    }
}

/// The capabilities this controller advertises. GetSnapshot is served but
/// not advertised: the reference v1.64 does not advertise it, no sidecar
/// calls it (csi-snapshotter uses ListSnapshots), and csi-sanity v5.4.0
/// (the version CI pins) fails ControllerGetCapabilities on it as unknown.
pub const CAPABILITIES: [Cap; 12] = [
    Cap::CreateDeleteVolume,
    Cap::PublishUnpublishVolume,
    Cap::ListVolumes,
    Cap::ListVolumesPublishedNodes,
    Cap::GetVolume,
    Cap::VolumeCondition,
    Cap::CreateDeleteSnapshot,
    Cap::ListSnapshots,
    Cap::ExpandVolume,
    Cap::ModifyVolume,
    Cap::SingleNodeMultiWriter,
    Cap::CloneVolume,
];

/// The Controller RPCs: each runs its module's function through
/// [`rpc::serve`] (span with the request's ids, logging, metrics, the one
/// Error → Status conversion).
#[tonic::async_trait]
impl Controller for ControllerService {
    async fn create_volume(
        &self,
        request: Request<csi::CreateVolumeRequest>,
    ) -> Result<Response<csi::CreateVolumeResponse>, Status> {
        rpc::serve("CreateVolume", request, |r| volumes::create(&self.ctl, r)).await
    }

    async fn delete_volume(
        &self,
        request: Request<csi::DeleteVolumeRequest>,
    ) -> Result<Response<csi::DeleteVolumeResponse>, Status> {
        rpc::serve("DeleteVolume", request, |r| volumes::delete(&self.ctl, r)).await
    }

    async fn controller_publish_volume(
        &self,
        request: Request<csi::ControllerPublishVolumeRequest>,
    ) -> Result<Response<csi::ControllerPublishVolumeResponse>, Status> {
        rpc::serve("ControllerPublishVolume", request, |r| {
            publish::publish(&self.ctl, r)
        })
        .await
    }

    async fn controller_unpublish_volume(
        &self,
        request: Request<csi::ControllerUnpublishVolumeRequest>,
    ) -> Result<Response<csi::ControllerUnpublishVolumeResponse>, Status> {
        rpc::serve("ControllerUnpublishVolume", request, |r| {
            publish::unpublish(&self.ctl, r)
        })
        .await
    }

    async fn validate_volume_capabilities(
        &self,
        request: Request<csi::ValidateVolumeCapabilitiesRequest>,
    ) -> Result<Response<csi::ValidateVolumeCapabilitiesResponse>, Status> {
        rpc::serve("ValidateVolumeCapabilities", request, |r| {
            inspect::validate(&self.ctl, r)
        })
        .await
    }

    async fn list_volumes(
        &self,
        request: Request<csi::ListVolumesRequest>,
    ) -> Result<Response<csi::ListVolumesResponse>, Status> {
        rpc::serve("ListVolumes", request, |r| inspect::list(&self.ctl, r)).await
    }

    async fn get_capacity(
        &self,
        _request: Request<csi::GetCapacityRequest>,
    ) -> Result<Response<csi::GetCapacityResponse>, Status> {
        rpc::unimplemented("GetCapacity").await
    }

    async fn controller_get_capabilities(
        &self,
        request: Request<csi::ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<csi::ControllerGetCapabilitiesResponse>, Status> {
        rpc::serve("ControllerGetCapabilities", request, |_| async {
            Ok(csi::ControllerGetCapabilitiesResponse {
                capabilities: CAPABILITIES
                    .iter()
                    .map(|c| csi::ControllerServiceCapability {
                        r#type: Some(csi::controller_service_capability::Type::Rpc(
                            csi::controller_service_capability::Rpc { r#type: *c as i32 },
                        )),
                    })
                    .collect(),
            })
        })
        .await
    }

    async fn create_snapshot(
        &self,
        request: Request<csi::CreateSnapshotRequest>,
    ) -> Result<Response<csi::CreateSnapshotResponse>, Status> {
        rpc::serve("CreateSnapshot", request, |r| {
            snapshots::create(&self.ctl, r)
        })
        .await
    }

    async fn delete_snapshot(
        &self,
        request: Request<csi::DeleteSnapshotRequest>,
    ) -> Result<Response<csi::DeleteSnapshotResponse>, Status> {
        rpc::serve("DeleteSnapshot", request, |r| {
            snapshots::delete(&self.ctl, r)
        })
        .await
    }

    async fn list_snapshots(
        &self,
        request: Request<csi::ListSnapshotsRequest>,
    ) -> Result<Response<csi::ListSnapshotsResponse>, Status> {
        rpc::serve("ListSnapshots", request, |r| snapshots::list(&self.ctl, r)).await
    }

    async fn get_snapshot(
        &self,
        request: Request<csi::GetSnapshotRequest>,
    ) -> Result<Response<csi::GetSnapshotResponse>, Status> {
        rpc::serve("GetSnapshot", request, |r| snapshots::get(&self.ctl, r)).await
    }

    async fn controller_expand_volume(
        &self,
        request: Request<csi::ControllerExpandVolumeRequest>,
    ) -> Result<Response<csi::ControllerExpandVolumeResponse>, Status> {
        rpc::serve("ControllerExpandVolume", request, |r| {
            modify::expand(&self.ctl, r)
        })
        .await
    }

    async fn controller_get_volume(
        &self,
        request: Request<csi::ControllerGetVolumeRequest>,
    ) -> Result<Response<csi::ControllerGetVolumeResponse>, Status> {
        rpc::serve("ControllerGetVolume", request, |r| {
            inspect::get(&self.ctl, r)
        })
        .await
    }

    async fn controller_modify_volume(
        &self,
        request: Request<csi::ControllerModifyVolumeRequest>,
    ) -> Result<Response<csi::ControllerModifyVolumeResponse>, Status> {
        rpc::serve("ControllerModifyVolume", request, |r| {
            modify::modify(&self.ctl, r)
        })
        .await
    }
}

#[cfg(test)]
mod tests;
