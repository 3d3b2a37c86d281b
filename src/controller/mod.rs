//! The CSI Controller service: volumes, attachments and snapshots through EC2.
//!
//! `mod.rs` only dispatches: each RPC runs through [`rpc::run`] (logging,
//! metrics, the one Error → Status conversion) into a function of the
//! module named for what it does.

pub mod caps;
pub mod group;
pub mod inspect;
pub mod modify;
pub mod params;
pub mod publish;
pub mod snapshot_params;
pub mod snapshots;
pub mod tags;
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
use crate::rpc::{self, Ids};
use params::VolumeParams;
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
    /// Wait bounds.
    pub timeouts: Timeouts,
    /// Merges and serialises modifications per volume.
    pub modifier: modify::Modifier,
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

    /// Tags of a new volume named `name`.
    pub fn volume_tags(&self, name: &str, params: &VolumeParams) -> Vec<(String, String)> {
        volumes::volume_tags(self.tags.common(), name, params)
    }
}

/// Whether `id` looks like an EBS volume id (`vol-` and hex).
pub fn is_volume_id(id: &str) -> bool {
    id.strip_prefix("vol-")
        .is_some_and(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Whether `id` looks like an EC2 instance id (`i-` and hex).
pub fn is_instance_id(id: &str) -> bool {
    id.strip_prefix("i-")
        .is_some_and(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()))
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

/// The capabilities this controller implements.
pub const CAPABILITIES: [Cap; 12] = [
    Cap::CreateDeleteVolume,
    Cap::PublishUnpublishVolume,
    Cap::ListVolumes,
    Cap::ListVolumesPublishedNodes,
    Cap::GetVolume,
    Cap::VolumeCondition,
    Cap::CreateDeleteSnapshot,
    Cap::ListSnapshots,
    Cap::GetSnapshot,
    Cap::ExpandVolume,
    Cap::ModifyVolume,
    Cap::SingleNodeMultiWriter,
];

#[tonic::async_trait]
impl Controller for ControllerService {
    async fn create_volume(
        &self,
        request: Request<csi::CreateVolumeRequest>,
    ) -> Result<Response<csi::CreateVolumeResponse>, Status> {
        let req = request.into_inner();
        let name = req.name.clone();
        let ids = Ids {
            name: &name,
            ..Ids::default()
        };
        rpc::run("CreateVolume", ids, volumes::create(&self.ctl, req)).await
    }

    async fn delete_volume(
        &self,
        request: Request<csi::DeleteVolumeRequest>,
    ) -> Result<Response<csi::DeleteVolumeResponse>, Status> {
        let req = request.into_inner();
        let id = req.volume_id.clone();
        rpc::run(
            "DeleteVolume",
            Ids::volume(&id),
            volumes::delete(&self.ctl, req),
        )
        .await
    }

    async fn controller_publish_volume(
        &self,
        request: Request<csi::ControllerPublishVolumeRequest>,
    ) -> Result<Response<csi::ControllerPublishVolumeResponse>, Status> {
        let req = request.into_inner();
        let (v, n) = (req.volume_id.clone(), req.node_id.clone());
        let ids = Ids {
            volume: &v,
            node: &n,
            ..Ids::default()
        };
        rpc::run(
            "ControllerPublishVolume",
            ids,
            publish::publish(&self.ctl, req),
        )
        .await
    }

    async fn controller_unpublish_volume(
        &self,
        request: Request<csi::ControllerUnpublishVolumeRequest>,
    ) -> Result<Response<csi::ControllerUnpublishVolumeResponse>, Status> {
        let req = request.into_inner();
        let (v, n) = (req.volume_id.clone(), req.node_id.clone());
        let ids = Ids {
            volume: &v,
            node: &n,
            ..Ids::default()
        };
        rpc::run(
            "ControllerUnpublishVolume",
            ids,
            publish::unpublish(&self.ctl, req),
        )
        .await
    }

    async fn validate_volume_capabilities(
        &self,
        request: Request<csi::ValidateVolumeCapabilitiesRequest>,
    ) -> Result<Response<csi::ValidateVolumeCapabilitiesResponse>, Status> {
        let req = request.into_inner();
        let id = req.volume_id.clone();
        rpc::run(
            "ValidateVolumeCapabilities",
            Ids::volume(&id),
            inspect::validate(&self.ctl, req),
        )
        .await
    }

    async fn list_volumes(
        &self,
        request: Request<csi::ListVolumesRequest>,
    ) -> Result<Response<csi::ListVolumesResponse>, Status> {
        rpc::run(
            "ListVolumes",
            Ids::default(),
            inspect::list(&self.ctl, request.into_inner()),
        )
        .await
    }

    async fn get_capacity(
        &self,
        _request: Request<csi::GetCapacityRequest>,
    ) -> Result<Response<csi::GetCapacityResponse>, Status> {
        rpc::unimplemented("GetCapacity").await
    }

    async fn controller_get_capabilities(
        &self,
        _request: Request<csi::ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<csi::ControllerGetCapabilitiesResponse>, Status> {
        rpc::run("ControllerGetCapabilities", Ids::default(), async {
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
        let req = request.into_inner();
        let (name, vol) = (req.name.clone(), req.source_volume_id.clone());
        let ids = Ids {
            name: &name,
            volume: &vol,
            ..Ids::default()
        };
        rpc::run("CreateSnapshot", ids, snapshots::create(&self.ctl, req)).await
    }

    async fn delete_snapshot(
        &self,
        request: Request<csi::DeleteSnapshotRequest>,
    ) -> Result<Response<csi::DeleteSnapshotResponse>, Status> {
        let req = request.into_inner();
        let id = req.snapshot_id.clone();
        let ids = Ids {
            snapshot: &id,
            ..Ids::default()
        };
        rpc::run("DeleteSnapshot", ids, snapshots::delete(&self.ctl, req)).await
    }

    async fn list_snapshots(
        &self,
        request: Request<csi::ListSnapshotsRequest>,
    ) -> Result<Response<csi::ListSnapshotsResponse>, Status> {
        rpc::run(
            "ListSnapshots",
            Ids::default(),
            snapshots::list(&self.ctl, request.into_inner()),
        )
        .await
    }

    async fn get_snapshot(
        &self,
        request: Request<csi::GetSnapshotRequest>,
    ) -> Result<Response<csi::GetSnapshotResponse>, Status> {
        let req = request.into_inner();
        let id = req.snapshot_id.clone();
        let ids = Ids {
            snapshot: &id,
            ..Ids::default()
        };
        rpc::run("GetSnapshot", ids, snapshots::get(&self.ctl, req)).await
    }

    async fn controller_expand_volume(
        &self,
        request: Request<csi::ControllerExpandVolumeRequest>,
    ) -> Result<Response<csi::ControllerExpandVolumeResponse>, Status> {
        let req = request.into_inner();
        let id = req.volume_id.clone();
        rpc::run(
            "ControllerExpandVolume",
            Ids::volume(&id),
            modify::expand(&self.ctl, req),
        )
        .await
    }

    async fn controller_get_volume(
        &self,
        request: Request<csi::ControllerGetVolumeRequest>,
    ) -> Result<Response<csi::ControllerGetVolumeResponse>, Status> {
        let req = request.into_inner();
        let id = req.volume_id.clone();
        rpc::run(
            "ControllerGetVolume",
            Ids::volume(&id),
            inspect::get(&self.ctl, req),
        )
        .await
    }

    async fn controller_modify_volume(
        &self,
        request: Request<csi::ControllerModifyVolumeRequest>,
    ) -> Result<Response<csi::ControllerModifyVolumeResponse>, Status> {
        let req = request.into_inner();
        let id = req.volume_id.clone();
        rpc::run(
            "ControllerModifyVolume",
            Ids::volume(&id),
            modify::modify(&self.ctl, req),
        )
        .await
    }
}
