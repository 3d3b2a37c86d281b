//! The aws-sdk-ec2 implementation of [`Cloud`].
//!
//! Every EC2 call goes through [`Ec2Cloud::call`] or
//! [`Ec2Cloud::call_checked`] ([`retry`]): they wait for the adaptive
//! client-side rate limiter, retry throttling, resend after a server error
//! only where the action's idempotency rule allows, and sort errors into
//! [`CloudError`]. The SDK's own retry is off so that every attempt is
//! visible to the limiter and to the metrics.

mod convert;
mod retry;
mod snapshots;
mod volumes;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_ec2::config::{AppName, Region};
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use tokio::sync::OnceCell;

use super::coalesce::Coalescer;
use super::error::{CloudError, CloudResult};
use super::limiter::{Limiter, LimiterConfig};
use super::types::*;
use super::wait::Pacer;
use super::{Cloud, Ec2Observer};

pub use retry::{Rule, blind_retry_safe, rule};

/// EC2 accepts at most 200 values per filter.
const MAX_FILTER_VALUES: usize = 200;

/// The client behind a coalescer's weak reference, or an error once it is
/// being dropped.
fn upgrade(weak: &std::sync::Weak<Ec2Cloud>) -> CloudResult<Arc<Ec2Cloud>> {
    weak.upgrade()
        .ok_or_else(|| CloudError::Other("internal: EC2 client is shutting down".into()))
}

/// How to connect to EC2.
#[derive(Clone, Default)]
pub struct Ec2Options {
    /// Region; default: the SDK chain (AWS_REGION, profile, IMDS).
    pub region: Option<String>,
    /// Appended to the user agent (`--user-agent-extra`).
    pub user_agent_extra: String,
    /// Told of every request attempt (the metrics).
    pub observer: Option<&'static dyn Ec2Observer>,
    /// An EC2 endpoint set the legacy way (`AWS_EC2_ENDPOINT`), used when
    /// the SDK's own `AWS_ENDPOINT_URL_EC2` is not set.
    pub endpoint: Option<String>,
    /// Where the adaptive rate limiter starts (`--ec2-*-rate`/`-burst`).
    pub limits: LimiterConfig,
}

/// EC2 through aws-sdk-ec2.
pub struct Ec2Cloud {
    client: aws_sdk_ec2::Client,
    limiter: Limiter,
    observer: Option<&'static dyn Ec2Observer>,
    volumes: Coalescer<Volume>,
    volumes_by_name: Coalescer<Volume>,
    instances: Coalescer<Instance>,
    snapshots: Coalescer<Snapshot>,
    snapshots_by_name: Coalescer<Snapshot>,
    modifications: Coalescer<Modification>,
    zones: OnceCell<Vec<String>>,
    /// Ticks for this account's Describe budget (see [`super::wait`]).
    pacer: Pacer,
}

impl Ec2Cloud {
    /// Builds the client from the SDK's configuration chain (environment,
    /// profile, web identity / Pod Identity, IMDS). Honours
    /// `AWS_ENDPOINT_URL_EC2` for emulators.
    pub async fn connect(opts: &Ec2Options) -> CloudResult<Arc<Self>> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(Duration::from_secs(60))
                    .build(),
            );
        if let Some(region) = &opts.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if !opts.user_agent_extra.is_empty() {
            let name = AppName::new(opts.user_agent_extra.clone()).map_err(|e| {
                CloudError::InvalidParameter(format!(
                    "--user-agent-extra {:?} is not a valid user agent token: {e}",
                    opts.user_agent_extra
                ))
            })?;
            loader = loader.app_name(name);
        }
        let config = loader.load().await;
        if config.region().is_none() {
            return Err(CloudError::InvalidParameter(
                "no AWS region: set AWS_REGION or --region (on EC2 it comes from instance metadata)"
                    .into(),
            ));
        }
        let mut ec2 = aws_sdk_ec2::config::Builder::from(&config);
        if let Some(endpoint) = &opts.endpoint {
            tracing::info!(endpoint, "EC2 endpoint from AWS_EC2_ENDPOINT");
            ec2 = ec2.endpoint_url(endpoint);
        }
        let client = aws_sdk_ec2::Client::from_conf(ec2.build());
        Ok(Arc::new_cyclic(|weak: &std::sync::Weak<Ec2Cloud>| {
            let volumes = volumes::by_id(weak.clone());
            let volumes_by_name = volumes::by_name(weak.clone());
            let instances = volumes::instances_by_id(weak.clone());
            let snapshots = snapshots::by_id(weak.clone());
            let snapshots_by_name = snapshots::by_name(weak.clone());
            let modifications = volumes::modifications_by_id(weak.clone());
            Ec2Cloud {
                client,
                limiter: Limiter::new(opts.limits),
                observer: opts.observer,
                volumes,
                volumes_by_name,
                instances,
                snapshots,
                snapshots_by_name,
                modifications,
                zones: OnceCell::new(),
                pacer: Pacer::for_describe_rate(opts.limits.describe.rate),
            }
        }))
    }

    /// Runs a paginated Describe action through [`call`](Self::call) until
    /// EC2 returns no NextToken; `items` takes a page's items and token.
    async fn paged<T, O, E, R, F, Fut>(
        &self,
        action: &'static str,
        send: F,
        items: impl Fn(&O) -> (Vec<T>, Option<String>),
    ) -> CloudResult<Vec<T>>
    where
        F: Fn(Option<String>) -> Fut,
        Fut: Future<Output = Result<O, SdkError<E, R>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug,
    {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self.call(action, || send(token.clone())).await?;
            let (mut found, next) = items(&page);
            out.append(&mut found);
            match next.filter(|t| !t.is_empty()) {
                Some(next) => token = Some(next),
                None => return Ok(out),
            }
        }
    }

    fn client(&self) -> &aws_sdk_ec2::Client {
        &self.client
    }
}

#[async_trait]
impl Cloud for Ec2Cloud {
    fn pacer(&self) -> &Pacer {
        &self.pacer
    }
    async fn create_volume(&self, spec: &VolumeSpec) -> CloudResult<Volume> {
        self.create_volume_impl(spec).await
    }
    async fn copy_volume(&self, spec: &VolumeSpec) -> CloudResult<Volume> {
        self.copy_volume_impl(spec).await
    }
    async fn delete_volume(&self, id: &VolumeId) -> CloudResult<()> {
        self.delete_volume_impl(id).await
    }
    async fn volume(&self, id: &VolumeId) -> CloudResult<Option<Volume>> {
        self.volumes.get(id.as_str()).await
    }
    async fn poll_volume(&self, id: &VolumeId) -> CloudResult<Option<Volume>> {
        self.volumes.get_polled(id.as_str()).await
    }
    async fn volume_by_name(&self, name: &str) -> CloudResult<Option<Volume>> {
        self.volumes_by_name.get(name).await
    }
    async fn list_volumes(&self) -> CloudResult<Vec<Volume>> {
        self.list_volumes_impl().await
    }
    async fn instance(&self, id: &InstanceId) -> CloudResult<Option<Instance>> {
        self.instances.get(id.as_str()).await
    }
    async fn attach_volume(
        &self,
        volume: &VolumeId,
        instance: &InstanceId,
        device: &str,
        card: Option<u32>,
    ) -> CloudResult<()> {
        self.attach_volume_impl(volume, instance, device, card)
            .await
    }
    async fn detach_volume(
        &self,
        volume: &VolumeId,
        instance: &InstanceId,
        force: bool,
    ) -> CloudResult<()> {
        self.detach_volume_impl(volume, instance, force).await
    }
    async fn zones(&self) -> CloudResult<Vec<String>> {
        self.zones
            .get_or_try_init(|| self.describe_zones())
            .await
            .cloned()
    }
    async fn modify_volume(&self, id: &VolumeId, spec: &ModifySpec) -> CloudResult<()> {
        self.modify_volume_impl(id, spec).await
    }
    async fn modification(&self, id: &VolumeId) -> CloudResult<Option<Modification>> {
        self.modifications.get(id.as_str()).await
    }
    async fn poll_modification(&self, id: &VolumeId) -> CloudResult<Option<Modification>> {
        self.modifications.get_polled(id.as_str()).await
    }
    async fn create_tags(&self, id: &VolumeId, tags: &[(String, String)]) -> CloudResult<()> {
        self.create_tags_impl(id.as_str(), tags).await
    }
    async fn delete_tags(&self, id: &VolumeId, keys: &[String]) -> CloudResult<()> {
        self.delete_tags_impl(id.as_str(), keys).await
    }
    async fn create_snapshot(
        &self,
        volume: &VolumeId,
        description: &str,
        tags: &[(String, String)],
    ) -> CloudResult<Snapshot> {
        self.create_snapshot_impl(volume, description, tags).await
    }
    async fn create_snapshots(
        &self,
        instance: &InstanceId,
        volumes: &[VolumeId],
        description: &str,
        tags: &[(String, String)],
    ) -> CloudResult<Vec<Snapshot>> {
        self.create_snapshots_impl(instance, volumes, description, tags)
            .await
    }
    async fn delete_snapshot(&self, id: &SnapshotId) -> CloudResult<()> {
        self.delete_snapshot_impl(id).await
    }
    async fn snapshot(&self, id: &SnapshotId) -> CloudResult<Option<Snapshot>> {
        self.snapshots.get(id.as_str()).await
    }
    async fn snapshot_by_name(&self, name: &str) -> CloudResult<Option<Snapshot>> {
        self.snapshots_by_name.get(name).await
    }
    async fn snapshots_tagged(&self, key: &str, value: &str) -> CloudResult<Vec<Snapshot>> {
        self.snapshots_tagged_impl(key, value).await
    }
    async fn list_snapshots(&self, volume: Option<&VolumeId>) -> CloudResult<Vec<Snapshot>> {
        self.list_snapshots_impl(volume).await
    }
    async fn enable_fast_snapshot_restores(
        &self,
        id: &SnapshotId,
        zones: &[String],
    ) -> CloudResult<()> {
        self.enable_fsr_impl(id, zones).await
    }
    async fn lock_snapshot(&self, id: &SnapshotId, lock: &SnapshotLock) -> CloudResult<()> {
        self.lock_snapshot_impl(id, lock).await
    }
}
