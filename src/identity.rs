//! The CSI Identity service: who the plugin is, what it can do, whether it is ready.

use tonic::{Request, Response, Status};

use crate::csi;
use crate::csi::identity_server::Identity;
use crate::csi::plugin_capability::{self, service, volume_expansion};
use crate::readiness::Readiness;
use crate::rpc;

use crate::contract::DRIVER_NAME;

/// The Identity service.
#[derive(Debug, Clone)]
pub struct IdentityService {
    controller: bool,
    readiness: Readiness,
}

impl IdentityService {
    /// `controller`: whether this process serves the Controller service.
    pub fn new(controller: bool, readiness: Readiness) -> Self {
        IdentityService {
            controller,
            readiness,
        }
    }

    fn capabilities(&self) -> Vec<csi::PluginCapability> {
        let service = |kind: service::Type| csi::PluginCapability {
            r#type: Some(plugin_capability::Type::Service(
                plugin_capability::Service {
                    r#type: kind as i32,
                },
            )),
        };
        let mut caps = Vec::new();
        if self.controller {
            caps.push(service(service::Type::ControllerService));
            caps.push(service(service::Type::GroupControllerService));
        }
        caps.push(service(service::Type::VolumeAccessibilityConstraints));
        caps.push(csi::PluginCapability {
            r#type: Some(plugin_capability::Type::VolumeExpansion(
                plugin_capability::VolumeExpansion {
                    r#type: volume_expansion::Type::Online as i32,
                },
            )),
        });
        caps
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn get_plugin_info(
        &self,
        request: Request<csi::GetPluginInfoRequest>,
    ) -> Result<Response<csi::GetPluginInfoResponse>, Status> {
        rpc::serve("GetPluginInfo", request, |_| async {
            Ok(csi::GetPluginInfoResponse {
                name: DRIVER_NAME.to_string(),
                vendor_version: env!("CARGO_PKG_VERSION").to_string(),
                manifest: Default::default(),
            })
        })
        .await
    }

    async fn get_plugin_capabilities(
        &self,
        request: Request<csi::GetPluginCapabilitiesRequest>,
    ) -> Result<Response<csi::GetPluginCapabilitiesResponse>, Status> {
        rpc::serve("GetPluginCapabilities", request, |_| async {
            Ok(csi::GetPluginCapabilitiesResponse {
                capabilities: self.capabilities(),
            })
        })
        .await
    }

    async fn probe(
        &self,
        request: Request<csi::ProbeRequest>,
    ) -> Result<Response<csi::ProbeResponse>, Status> {
        rpc::serve("Probe", request, |_| async {
            Ok(csi::ProbeResponse {
                ready: Some(self.readiness.is_ready()),
            })
        })
        .await
    }
}
