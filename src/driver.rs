//! Assembles the services for a mode and runs them until shutdown.

use std::future::Future;

use tonic::transport::Server;

use crate::controller::ControllerService;
use crate::csi::controller_server::ControllerServer;
use crate::csi::identity_server::IdentityServer;
use crate::csi::node_server::NodeServer;
use crate::identity::IdentityService;
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

    let readiness = Readiness::default();
    let controller = opts
        .mode
        .runs_controller()
        .then(|| ControllerServer::new(ControllerService));
    let node = opts
        .mode
        .runs_node()
        .then(|| NodeServer::new(crate::node::NodeService));
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
