//! The CSI Node service: finds, formats and mounts the attached EBS devices.

use tonic::{Request, Response, Status};

use crate::csi;
use crate::csi::node_server::Node;
use crate::rpc;

/// The Node service.
#[derive(Debug, Clone, Default)]
pub struct NodeService;

#[tonic::async_trait]
impl Node for NodeService {
    async fn node_stage_volume(
        &self,
        _request: Request<csi::NodeStageVolumeRequest>,
    ) -> Result<Response<csi::NodeStageVolumeResponse>, Status> {
        rpc::unimplemented("NodeStageVolume").await
    }

    async fn node_unstage_volume(
        &self,
        _request: Request<csi::NodeUnstageVolumeRequest>,
    ) -> Result<Response<csi::NodeUnstageVolumeResponse>, Status> {
        rpc::unimplemented("NodeUnstageVolume").await
    }

    async fn node_publish_volume(
        &self,
        _request: Request<csi::NodePublishVolumeRequest>,
    ) -> Result<Response<csi::NodePublishVolumeResponse>, Status> {
        rpc::unimplemented("NodePublishVolume").await
    }

    async fn node_unpublish_volume(
        &self,
        _request: Request<csi::NodeUnpublishVolumeRequest>,
    ) -> Result<Response<csi::NodeUnpublishVolumeResponse>, Status> {
        rpc::unimplemented("NodeUnpublishVolume").await
    }

    async fn node_get_volume_stats(
        &self,
        _request: Request<csi::NodeGetVolumeStatsRequest>,
    ) -> Result<Response<csi::NodeGetVolumeStatsResponse>, Status> {
        rpc::unimplemented("NodeGetVolumeStats").await
    }

    async fn node_expand_volume(
        &self,
        _request: Request<csi::NodeExpandVolumeRequest>,
    ) -> Result<Response<csi::NodeExpandVolumeResponse>, Status> {
        rpc::unimplemented("NodeExpandVolume").await
    }

    async fn node_get_capabilities(
        &self,
        _request: Request<csi::NodeGetCapabilitiesRequest>,
    ) -> Result<Response<csi::NodeGetCapabilitiesResponse>, Status> {
        rpc::unimplemented("NodeGetCapabilities").await
    }

    async fn node_get_info(
        &self,
        _request: Request<csi::NodeGetInfoRequest>,
    ) -> Result<Response<csi::NodeGetInfoResponse>, Status> {
        rpc::unimplemented("NodeGetInfo").await
    }
}
