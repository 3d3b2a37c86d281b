//! Who am I: this instance's id, zone, region and type, from the flags and,
//! for whatever they leave open, from the sources `--metadata-sources`
//! names, tried in order (default `imds,kubernetes`, as the reference):
//! the instance metadata service ([`imds`], IMDSv2) and this node's Node
//! object ([`crate::k8s::identity`]).
//!
//! The `Metadata` trait is the IMDS seam (one production implementation,
//! [`Imds`], on aws-config's IMDS client, which honours
//! `AWS_EC2_METADATA_SERVICE_ENDPOINT`); [`load`] is the entry point for the
//! node and, in `all` mode, for the controller learning its own zone.
//!
//! The reference driver's most common start-up failure is IMDS being
//! unreachable from a container because of the IMDSv2 hop limit, so every
//! failure names the endpoint and that cause, and every request is bounded
//! by `--metadata-timeout`; then the Node object is asked.

pub mod imds;

use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use imds::{Imds, Metadata, load_from};

use crate::error::Error;
use crate::readiness::Slot;

/// The default IMDS endpoint (IPv4).
pub const DEFAULT_ENDPOINT: &str = "http://169.254.169.254";
/// The IMDS endpoint in IPv6 mode.
pub const IPV6_ENDPOINT: &str = "http://[fd00:ec2::254]";

const HINT: &str = "on EC2 the usual cause is the IMDSv2 hop limit: a driver in a container \
needs HttpPutResponseHopLimit of at least 2 (aws ec2 modify-instance-metadata-options \
--http-put-response-hop-limit 2); off EC2, or to skip instance metadata, pass --instance-id, \
--availability-zone, --instance-type and --region";

/// What the driver knows about the instance it runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceInfo {
    /// `i-…`: the CSI node id.
    pub instance_id: String,
    /// Availability zone (`us-east-1a`).
    pub availability_zone: String,
    /// Region (`us-east-1`).
    pub region: String,
    /// Instance type (`m5.large`).
    pub instance_type: String,
    /// Attached network interfaces (they share attachment slots on Nitro).
    pub enis: u32,
    /// EBS block-device mappings besides the root volume.
    pub extra_mappings: u32,
}

/// A failure to learn who we are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    /// IMDS did not answer (refused, timed out, token refused…).
    #[error(
        "instance metadata (IMDSv2) at {endpoint} is unreachable (reading {path}): {reason}; {HINT}"
    )]
    Unreachable {
        /// The endpoint used.
        endpoint: String,
        /// The metadata path being read.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// IMDS answered but lacks a value the driver needs.
    #[error("instance metadata at {endpoint} has no {path}; {HINT}")]
    Missing {
        /// The endpoint used.
        endpoint: String,
        /// The metadata path.
        path: String,
    },
    /// The Node object could not be read or does not say enough.
    #[error("the Kubernetes Node: {0}")]
    Kubernetes(String),
    /// Every source failed (each one's error, in the order tried).
    #[error("no metadata source worked: {}", .0.join("; "))]
    AllSources(Vec<String>),
    /// The configured endpoint is not a URL.
    #[error("instance metadata endpoint {endpoint:?} is invalid: {reason}")]
    BadEndpoint {
        /// The endpoint given.
        endpoint: String,
        /// Why it was refused.
        reason: String,
    },
}

/// What the command line says about this instance (each value overrides
/// instance metadata), and the bound on each metadata request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataConfig {
    /// `--instance-id`.
    pub instance_id: Option<String>,
    /// `--availability-zone`.
    pub availability_zone: Option<String>,
    /// `--instance-type`.
    pub instance_type: Option<String>,
    /// `--region`.
    pub region: Option<String>,
    /// `--metadata-timeout`.
    pub timeout: Duration,
    /// `--metadata-sources`, in order.
    pub sources: Vec<Source>,
    /// How to reach the Kubernetes API (the `kubernetes` source).
    pub api: crate::k8s::ApiConfig,
}

/// A source of the instance identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// IMDSv2.
    Imds,
    /// The node's Node object (`CSI_NODE_NAME`).
    Kubernetes,
}

impl Source {
    /// Parses `--metadata-sources`; the reference's alpha
    /// `metadata-labeler` source is refused clearly.
    pub fn parse_list(names: &[String]) -> Result<Vec<Source>, String> {
        let mut out = Vec::new();
        for name in names.iter().map(|n| n.trim().to_ascii_lowercase()) {
            let source = match name.as_str() {
                "imds" => Source::Imds,
                "kubernetes" => Source::Kubernetes,
                "metadata-labeler" => {
                    return Err(
                        "--metadata-sources: the metadata-labeler source (alpha in the \
                                reference driver) is not supported; use imds and/or kubernetes"
                            .into(),
                    );
                }
                other => {
                    return Err(format!(
                        "--metadata-sources: {other:?} is not a source (imds, kubernetes)"
                    ));
                }
            };
            if !out.contains(&source) {
                out.push(source);
            }
        }
        if out.is_empty() {
            return Err("--metadata-sources names no source (imds, kubernetes)".into());
        }
        Ok(out)
    }

    fn name(self) -> &'static str {
        match self {
            Source::Imds => "imds",
            Source::Kubernetes => "kubernetes",
        }
    }
}

/// A flag's value, when given and not empty.
pub(crate) fn pick(flag: &Option<String>) -> Option<String> {
    flag.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Learns who we are: flags first; the sources, in order, only for what the
/// flags leave open. With `--instance-id`, `--availability-zone`,
/// `--instance-type` and `--region` all given, no source is asked.
pub async fn load(opts: &MetadataConfig) -> Result<InstanceInfo, MetadataError> {
    if let Some(info) = from_flags(opts) {
        tracing::info!("instance identity from flags; instance metadata not used");
        return Ok(info);
    }
    let mut failures: Vec<(Source, MetadataError)> = Vec::new();
    for source in &opts.sources {
        let result = match source {
            Source::Imds => match Imds::from_env(opts.timeout) {
                Ok(imds) => load_from(opts, &imds).await,
                Err(e) => Err(e),
            },
            Source::Kubernetes => from_kubernetes(opts).await,
        };
        match result {
            Ok(info) => return Ok(info),
            Err(e) => {
                tracing::warn!(source = source.name(), error = %e, "metadata source failed");
                failures.push((*source, e));
            }
        }
    }
    // One source: its own error; several: each one's, in order.
    if failures.len() == 1 {
        return Err(failures.remove(0).1);
    }
    Err(MetadataError::AllSources(
        failures
            .into_iter()
            .map(|(s, e)| format!("{}: {e}", s.name()))
            .collect(),
    ))
}

/// The identity from this node's Node object, the flags still winning.
async fn from_kubernetes(opts: &MetadataConfig) -> Result<InstanceInfo, MetadataError> {
    let failed = |e: crate::k8s::K8sError| MetadataError::Kubernetes(e.to_string());
    let name = crate::k8s::node_name().map_err(failed)?;
    let client = crate::k8s::client(&opts.api).await.map_err(failed)?;
    let mut info = crate::k8s::identity::load(client, &name, opts.timeout)
        .await
        .map_err(failed)?;
    for (flag, field) in [
        (&opts.instance_id, &mut info.instance_id),
        (&opts.availability_zone, &mut info.availability_zone),
        (&opts.instance_type, &mut info.instance_type),
        (&opts.region, &mut info.region),
    ] {
        if let Some(v) = pick(flag) {
            *field = v;
        }
    }
    tracing::info!(node = %name, ?info, "instance identity loaded from the Kubernetes Node");
    Ok(info)
}

/// Everything from the flags, when they give everything.
fn from_flags(opts: &MetadataConfig) -> Option<InstanceInfo> {
    let flag = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    Some(InstanceInfo {
        instance_id: flag(&opts.instance_id)?,
        availability_zone: flag(&opts.availability_zone)?,
        region: flag(&opts.region)?,
        instance_type: flag(&opts.instance_type)?,
        // Not knowable without IMDS: one ENI, no extra mappings; the
        // attach-limit flags exist for when that is wrong.
        enis: 1,
        extra_mappings: 0,
    })
}

/// The instance identity for services, filled in the background: until it
/// is known, users get Unavailable carrying the last load error, so the
/// reason shows in kubelet's events and not only in our log.
#[derive(Debug, Clone)]
pub struct InstanceState {
    slot: Slot<InstanceInfo>,
    last_error: Arc<Mutex<Option<String>>>,
}

impl Default for InstanceState {
    fn default() -> Self {
        InstanceState {
            slot: Slot::new("instance metadata"),
            last_error: Arc::default(),
        }
    }
}

impl InstanceState {
    /// The slot, for readiness.
    pub fn slot(&self) -> &Slot<InstanceInfo> {
        &self.slot
    }

    /// Sets the identity (tests, or callers that loaded it themselves).
    pub fn set(&self, info: InstanceInfo) {
        self.slot.set(info);
    }

    /// The identity, or Unavailable with the reason it is not known yet.
    pub fn get(&self) -> crate::error::Result<&InstanceInfo> {
        self.slot.get().map_err(
            |not_ready| match crate::sync::lock(&self.last_error).as_ref() {
                Some(e) => Error::Unavailable(format!("instance metadata not available yet: {e}")),
                None => not_ready,
            },
        )
    }

    /// Loads the identity in the background, retrying with capped backoff
    /// until it succeeds; each failure is logged and kept for [`Self::get`].
    pub fn spawn_loader(&self, opts: MetadataConfig) -> tokio::task::JoinHandle<()> {
        let state = self.clone();
        tokio::spawn(async move {
            let mut delay = Duration::from_secs(1);
            loop {
                match load(&opts).await {
                    Ok(info) => {
                        state.slot.set(info);
                        return;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, retry_in = ?delay, "cannot learn the instance identity");
                        *crate::sync::lock(&state.last_error) = Some(e.to_string());
                    }
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::collections::HashMap;

    struct Fake(HashMap<&'static str, &'static str>, Mutex<Vec<String>>);

    #[tonic::async_trait]
    impl Metadata for Fake {
        async fn get(&self, path: &str) -> Result<Option<String>, MetadataError> {
            self.1.lock().unwrap().push(path.to_string());
            Ok(self.0.get(path).map(|v| v.to_string()))
        }
        fn endpoint(&self) -> &str {
            "fake://imds"
        }
    }

    fn fake() -> Fake {
        Fake(
            HashMap::from([
                ("instance-id", "i-0123"),
                ("placement/availability-zone", "eu-west-1b"),
                ("instance-type", "m5.large"),
                (
                    "network/interfaces/macs/",
                    "0e:00:00:00:00:01/\n0e:00:00:00:00:02/",
                ),
                ("block-device-mapping/", "ami\nebs1\nebs2\nroot"),
            ]),
            Mutex::default(),
        )
    }

    fn opts(args: &[&str]) -> MetadataConfig {
        let o = crate::options::Options::try_parse_from(
            std::iter::once("ebs-csi-driver").chain(args.iter().copied()),
        )
        .unwrap();
        crate::driver::metadata_config(&o)
    }

    #[tokio::test]
    async fn imds_fills_what_flags_leave_open() {
        let source = fake();
        let info = load_from(&opts(&["--instance-type=c7i.large"]), &source)
            .await
            .unwrap();
        assert_eq!(info.instance_id, "i-0123");
        assert_eq!(info.availability_zone, "eu-west-1b");
        assert_eq!(info.instance_type, "c7i.large", "flag wins");
        assert_eq!((info.enis, info.extra_mappings), (2, 2));
        if std::env::var("AWS_REGION").is_err() {
            assert_eq!(info.region, "eu-west-1", "derived from the zone");
        }
        assert!(
            !source
                .1
                .lock()
                .unwrap()
                .contains(&"instance-type".to_string())
        );
    }

    #[tokio::test]
    async fn a_missing_value_names_endpoint_path_and_hop_limit() {
        let source = Fake(HashMap::new(), Mutex::default());
        let err = load_from(&opts(&[]), &source)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("fake://imds") && err.contains("/latest/meta-data/instance-id"),
            "{err}"
        );
        assert!(err.contains("hop limit"), "{err}");
    }

    #[tokio::test]
    async fn all_flags_skip_imds() {
        let o = opts(&[
            "--instance-id=i-1",
            "--availability-zone=us-east-1a",
            "--instance-type=t3.small",
            "--region=us-east-1",
        ]);
        let info = from_flags(&o).unwrap();
        assert_eq!(info.instance_id, "i-1");
        assert_eq!(load(&o).await.unwrap(), info);
    }

    #[test]
    fn state_reports_the_last_error_until_loaded() {
        let state = InstanceState::default();
        assert_eq!(state.get().unwrap_err().code(), tonic::Code::Unavailable);
        *state.last_error.lock().unwrap() = Some("boom at http://x".into());
        assert!(
            state
                .get()
                .unwrap_err()
                .to_string()
                .contains("boom at http://x")
        );
        state.set(
            from_flags(&opts(&[
                "--instance-id=i-1",
                "--availability-zone=z",
                "--instance-type=t",
                "--region=r",
            ]))
            .unwrap(),
        );
        assert_eq!(state.get().unwrap().instance_id, "i-1");
    }
}
