//! Assembles the services for a mode and runs them until shutdown.

use std::future::Future;
use std::sync::Arc;

use tonic::transport::Server;

use crate::controller::ControllerService;
use crate::csi::controller_server::ControllerServer;
use crate::csi::identity_server::IdentityServer;
use crate::csi::node_server::NodeServer;
use crate::identity::IdentityService;
use crate::metadata::InstanceState;
use crate::node::device::DeviceFinder;
use crate::node::host::HostMounter;
use crate::node::{NodeConfig, NodeService};
use crate::options::Options;
use crate::readiness::Readiness;
use crate::server::{self, ServerError};

/// Runs the driver described by `opts` until `shutdown` resolves.
///
/// The socket is bound before anything slow happens, so a bad endpoint fails
/// at once; the mode's dependencies are then initialised in the background
/// while Probe reports not-ready.
pub async fn run<S>(opts: Options, shutdown: S) -> Result<(), ServerError>
where
    S: Future<Output = ()> + Send + 'static,
{
    let path = server::parse_endpoint(&opts.endpoint)?;
    let listener = server::bind(&path)?;

    let mut readiness = Readiness::default();
    let controller = opts
        .mode
        .runs_controller()
        .then(|| ControllerServer::new(ControllerService));
    let node = opts.mode.runs_node().then(|| {
        // Who we are comes from IMDS, which may be slow or unreachable:
        // serve at once, and let Probe say not-ready until it is known.
        let instance = InstanceState::default();
        readiness.require(instance.slot());
        instance.spawn_loader(opts.clone());
        NodeServer::new(NodeService::new(NodeConfig {
            mounter: Arc::new(HostMounter::new()),
            devices: DeviceFinder::new(&opts.device_dir),
            instance,
            volume_attach_limit: opts.volume_attach_limit,
            reserved_volume_attachments: opts.reserved_volume_attachments,
        }))
    });
    let identity = IdentityService::new(opts.mode.runs_controller(), readiness);

    tracing::info!(
        mode = ?opts.mode,
        version = env!("CARGO_PKG_VERSION"),
        "starting ebs-csi-driver"
    );
    let router = Server::builder()
        .add_service(IdentityServer::new(identity))
        .add_optional_service(controller)
        .add_optional_service(node);
    server::serve(router, listener, &path, shutdown, opts.shutdown_timeout).await
}
