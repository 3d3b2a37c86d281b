//! Assembles the services for a mode and runs them until shutdown.

use std::future::Future;
use std::sync::Arc;

use tonic::transport::Server;

use std::time::Duration;

use crate::cloud::Cloud;
use crate::cloud::ec2::{Ec2Cloud, Ec2Options};
use crate::controller::group::GroupService;
use crate::controller::modifier::Modifier;
use crate::controller::tags::{DriverTags, TagPolicy, parse_extra_tags};
use crate::controller::{ControllerService, Ctl, Timeouts};
use crate::csi::controller_server::ControllerServer;
use crate::csi::group_controller_server::GroupControllerServer;
use crate::csi::identity_server::IdentityServer;
use crate::csi::node_server::NodeServer;
use crate::identity::IdentityService;
use crate::k8s::taint::{self, TaintOptions, TaintOutcome};
use crate::k8s::{self, ApiConfig, prestop};
use crate::metadata::{InstanceState, MetadataConfig, Source};
use crate::metrics;
use crate::node::device::DeviceFinder;
use crate::node::host::HostMounter;
use crate::node::{NodeConfig, NodeService};
use crate::options::{Mode, Options};
use crate::readiness::Readiness;
use crate::readiness::Slot;
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
    check_flags(&opts)?;
    let path = server::parse_endpoint(&opts.endpoint)?;
    let listener = server::bind(&path)?;

    let mut readiness = Readiness::default();
    if let Some(listen) = &opts.http_endpoint {
        let addr = metrics::parse_listen(listen).map_err(ServerError::Config)?;
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            ServerError::Config(format!("--http-endpoint {listen}: cannot listen: {e}"))
        })?;
        tracing::info!(address = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "serving metrics at /metrics");
        tokio::spawn(metrics::serve(listener));
    }
    // Who we are comes from IMDS, which may be slow or unreachable: serve
    // at once, and let Probe say not-ready until it is known. Only the node
    // needs it; the controller in `all` mode borrows its zone.
    let instance = opts.mode.runs_node().then(|| {
        let instance = InstanceState::default();
        readiness.require(instance.slot());
        instance.spawn_loader(metadata_config(&opts));
        spawn_taint_removal(&opts, instance.clone());
        instance
    });
    let controller = if opts.mode.runs_controller() {
        let ctl = controller_state(&opts, instance.clone())?;
        readiness.require(&ctl.cloud);
        spawn_cloud_init(&opts, ctl.cloud.clone());
        Some(ControllerService::new(ctl))
    } else {
        None
    };
    let group = controller
        .as_ref()
        .map(|c| GroupControllerServer::new(GroupService::new(c.state())));
    let controller = controller.map(ControllerServer::new);
    let node = instance.map(|instance| {
        NodeServer::new(NodeService::new(NodeConfig {
            mounter: Arc::new(HostMounter::new()),
            devices: DeviceFinder::new(&opts.device_dir),
            instance,
            volume_attach_limit: opts.volume_attach_limit,
            reserved_volume_attachments: opts.reserved_volume_attachments,
            legacy_xfs: opts.legacy_xfs,
        }))
    });
    // Once every dependency is up, the code start-up ran is unmapped and
    // faults back in page by page (src/residency.rs): most of an idle
    // driver's memory was its own binary's pages.
    let shed = readiness.clone();
    tokio::spawn(crate::residency::shed_when_ready(move || shed.is_ready()));
    let identity = IdentityService::new(opts.mode.runs_controller(), readiness);

    tracing::info!(
        mode = ?opts.mode,
        version = env!("CARGO_PKG_VERSION"),
        "starting ebs-csi-driver"
    );
    let router = Server::builder()
        .add_service(IdentityServer::new(identity))
        .add_optional_service(controller)
        .add_optional_service(group)
        .add_optional_service(node);
    server::serve(router, listener, &path, shutdown, opts.shutdown_timeout).await
}

/// Refuses flag combinations and modes that cannot work, before anything
/// is bound or started.
fn check_flags(opts: &Options) -> Result<(), ServerError> {
    match opts.mode {
        Mode::MetadataLabeler => {
            return Err(ServerError::Config(
                "mode metadata-labeler (the reference driver's alpha ENI/volume node labeller) \
                 is not supported by this driver; the node reads what it needs with \
                 --metadata-sources=imds,kubernetes"
                    .into(),
            ));
        }
        Mode::PreStopHook | Mode::Controller | Mode::Node | Mode::All => {}
    }
    Source::parse_list(&opts.metadata_sources).map_err(ServerError::Config)?;
    if opts.legacy_xfs {
        tracing::warn!(
            "--legacy-xfs is deprecated (as in the reference driver): xfs volumes are formatted \
             without bigtime, inobtcount, reflink and nrext64 for kernels before 5.4"
        );
    }
    if opts.volume_attach_limit.is_some() && opts.reserved_volume_attachments.is_some() {
        // The reference driver refuses the pair the same way.
        return Err(ServerError::Config(
            "only one of --volume-attach-limit and --reserved-volume-attachments may be specified"
                .into(),
        ));
    }
    Ok(())
}

/// The metadata settings of the flags (checked by [`run`]).
pub fn metadata_config(opts: &Options) -> MetadataConfig {
    MetadataConfig {
        instance_id: opts.instance_id.clone(),
        availability_zone: opts.availability_zone.clone(),
        instance_type: opts.instance_type.clone(),
        region: opts.region.clone(),
        timeout: opts.metadata_timeout,
        sources: Source::parse_list(&opts.metadata_sources).unwrap_or(vec![Source::Imds]),
        api: api_config(opts),
    }
}

/// How the node reaches the Kubernetes API.
pub fn api_config(opts: &Options) -> ApiConfig {
    ApiConfig {
        kubeconfig: opts.kubeconfig.clone(),
        timeout: opts.metadata_timeout,
    }
}

/// Removes the startup taint in the background once the node can serve
/// (the reference driver does so on every node), unless
/// `DISABLE_TAINT_WATCHER` is set or the node's name or the API is unknown.
fn spawn_taint_removal(opts: &Options, instance: InstanceState) {
    if std::env::var_os(taint::DISABLE_ENV).is_some() {
        tracing::info!(
            "{} is set: the startup taint is left alone",
            taint::DISABLE_ENV
        );
        return;
    }
    let Ok(node) = k8s::node_name() else {
        tracing::debug!("no {}: startup taint removal skipped", k8s::NODE_NAME_ENV);
        return;
    };
    let api = api_config(opts);
    tokio::spawn(async move {
        // The CSINode's count comes from NodeGetInfo, which needs the
        // identity: wait for it first.
        while instance.get().is_err() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let client = match k8s::client(&api).await {
            Ok(c) => c,
            Err(e) => {
                tracing::info!(error = %e, "no Kubernetes API: startup taint removal skipped");
                return;
            }
        };
        match taint::remove_not_ready_taint(client, &node, &TaintOptions::default()).await {
            TaintOutcome::Removed | TaintOutcome::NotTainted => {}
            TaintOutcome::Forbidden(why) => {
                tracing::info!(%why, "no permission to remove the startup taint; left alone")
            }
            TaintOutcome::GaveUp(why) => {
                tracing::warn!(%why, "gave up removing the startup taint")
            }
        }
    });
}

/// `pre-stop-hook` mode: waits, on a draining node, until its volumes are
/// detached (see [`crate::k8s::prestop`]).
pub async fn pre_stop(opts: &Options) -> Result<(), String> {
    let node = k8s::node_name().map_err(|e| e.to_string())?;
    let client = k8s::client(&api_config(opts))
        .await
        .map_err(|e| e.to_string())?;
    let outcome = prestop::run(client, &node, Duration::from_secs(10))
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(?outcome, "pre-stop hook done");
    Ok(())
}

/// The controller's shared state from the flags; bad flags fail start-up.
fn controller_state(opts: &Options, instance: Option<InstanceState>) -> Result<Ctl, ServerError> {
    let extra =
        parse_extra_tags(&opts.extra_tags).map_err(|e| ServerError::Config(e.to_string()))?;
    let cluster_id = Some(opts.k8s_tag_cluster_id.trim().to_string()).filter(|s| !s.is_empty());
    Ok(Ctl {
        cloud: Slot::new("EC2 client"),
        tags: DriverTags {
            extra,
            cluster_id,
            policy: TagPolicy {
                warn_on_invalid: opts.warn_on_invalid_tag,
            },
        },
        own_zone: opts.availability_zone.clone(),
        instance,
        inflight: Default::default(),
        devices: Default::default(),
        instances: Default::default(),
        created: Default::default(),
        modifier: Modifier::new(opts.modify_volume_request_handler_timeout),
        timeouts: Timeouts {
            create: opts.create_timeout,
            attach: opts.attach_timeout,
            detach: opts.detach_timeout,
            modify: opts.modify_timeout,
        },
    })
}

/// Sets up the EC2 client in the background: configuration, then one
/// DescribeAvailabilityZones to prove credentials and endpoint work (and to
/// cache the zones). Probe stays not-ready, and RPCs answer Unavailable,
/// until it succeeds; failures are logged and retried with backoff.
fn spawn_cloud_init(opts: &Options, slot: Slot<Arc<dyn Cloud>>) {
    let ec2 = Ec2Options {
        region: opts.region.clone(),
        user_agent_extra: opts.user_agent_extra.clone(),
        observer: Some(metrics::global()),
        // The reference driver's variable, honoured when the SDK's own
        // AWS_ENDPOINT_URL_EC2 is not set (that one the SDK reads itself).
        endpoint: std::env::var("AWS_EC2_ENDPOINT")
            .ok()
            .filter(|e| !e.is_empty() && std::env::var_os("AWS_ENDPOINT_URL_EC2").is_none()),
        limits: opts.limiter(),
    };
    tokio::spawn(async move {
        let mut delay = Duration::from_millis(500);
        loop {
            match Ec2Cloud::connect(&ec2).await {
                Ok(cloud) => match cloud.zones().await {
                    Ok(zones) => {
                        tracing::info!(zones = %zones.join(","), "EC2 client ready");
                        slot.set(cloud as Arc<dyn Cloud>);
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "EC2 not usable yet")
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "EC2 client setup failed")
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(30));
        }
    });
}
