//! Who am I: this instance's id, zone, region and type, from the flags and,
//! for whatever they leave open, from the instance metadata service (IMDSv2).
//!
//! The `Metadata` trait is the seam (one production implementation, [`Imds`],
//! on aws-config's IMDS client, which honours
//! `AWS_EC2_METADATA_SERVICE_ENDPOINT`); [`load`] is the entry point for the
//! node and, in `all` mode, for the controller learning its own zone.
//!
//! The reference driver's most common start-up failure is IMDS being
//! unreachable from a container because of the IMDSv2 hop limit, so every
//! failure names the endpoint and that cause, and every request is bounded
//! by `--metadata-timeout`.

use std::error::Error as StdError;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::imds::client::error::ImdsError;

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
    /// The configured endpoint is not a URL.
    #[error("instance metadata endpoint {endpoint:?} is invalid: {reason}")]
    BadEndpoint {
        /// The endpoint given.
        endpoint: String,
        /// Why it was refused.
        reason: String,
    },
}

/// A source of instance metadata: the seam between this module's rules and IMDS.
#[tonic::async_trait]
pub trait Metadata: Send + Sync {
    /// The value at `path` under `/latest/meta-data/`, or None when it does not exist.
    async fn get(&self, path: &str) -> Result<Option<String>, MetadataError>;
    /// Where the values come from, for messages.
    fn endpoint(&self) -> &str;
}

/// IMDSv2 through aws-config's client (session tokens, retries).
#[derive(Debug, Clone)]
pub struct Imds {
    client: aws_config::imds::Client,
    endpoint: String,
    timeout: Duration,
}

impl Imds {
    /// The endpoint the environment selects: `AWS_EC2_METADATA_SERVICE_ENDPOINT`,
    /// else the IPv6 address when `AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE=IPv6`,
    /// else the usual link-local address.
    pub fn endpoint_from_env() -> String {
        match std::env::var("AWS_EC2_METADATA_SERVICE_ENDPOINT") {
            Ok(e) if !e.trim().is_empty() => e.trim().to_string(),
            _ => match std::env::var("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE") {
                Ok(m) if m.eq_ignore_ascii_case("ipv6") => IPV6_ENDPOINT.to_string(),
                _ => DEFAULT_ENDPOINT.to_string(),
            },
        }
    }

    /// A client of the endpoint the environment selects.
    pub fn from_env(timeout: Duration) -> Result<Self, MetadataError> {
        Imds::with_endpoint(&Imds::endpoint_from_env(), timeout)
    }

    /// A client of `endpoint`, each request bounded by `timeout`.
    pub fn with_endpoint(endpoint: &str, timeout: Duration) -> Result<Self, MetadataError> {
        let builder = aws_config::imds::Client::builder()
            .endpoint(endpoint)
            .map_err(|e| MetadataError::BadEndpoint {
                endpoint: endpoint.to_string(),
                reason: e.to_string(),
            })?
            .connect_timeout(timeout)
            .read_timeout(timeout)
            .operation_attempt_timeout(timeout)
            .operation_timeout(timeout)
            .max_attempts(2);
        Ok(Imds {
            client: builder.build(),
            endpoint: endpoint.to_string(),
            timeout,
        })
    }
}

/// The error and its causes on one line.
fn chain(err: &dyn StdError) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

#[tonic::async_trait]
impl Metadata for Imds {
    async fn get(&self, path: &str) -> Result<Option<String>, MetadataError> {
        let full = format!("/latest/meta-data/{path}");
        let unreachable = |reason: String| MetadataError::Unreachable {
            endpoint: self.endpoint.clone(),
            path: full.clone(),
            reason,
        };
        // The client's own timeouts bound each attempt; this bounds the
        // whole call, retries included, so start-up never hangs on IMDS.
        let answer = tokio::time::timeout(self.timeout, self.client.get(full.clone()))
            .await
            .map_err(|_| unreachable(format!("no answer within {:?}", self.timeout)))?;
        match answer {
            Ok(value) => Ok(Some(String::from(value).trim().to_string())),
            Err(ImdsError::ErrorResponse(r)) if r.response().status().as_u16() == 404 => Ok(None),
            Err(e) => Err(unreachable(chain(&e))),
        }
    }

    fn endpoint(&self) -> &str {
        &self.endpoint
    }
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
}

/// Learns who we are: flags first; IMDS (as the environment configures it)
/// only for what they leave open. With `--instance-id`, `--availability-zone`,
/// `--instance-type` and `--region` all given, IMDS is not called at all.
pub async fn load(opts: &MetadataConfig) -> Result<InstanceInfo, MetadataError> {
    if let Some(info) = from_flags(opts) {
        tracing::info!("instance identity from flags; instance metadata not used");
        return Ok(info);
    }
    let imds = Imds::from_env(opts.timeout)?;
    load_from(opts, &imds).await
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

/// [`load`] with an explicit metadata source.
pub async fn load_from(
    opts: &MetadataConfig,
    source: &dyn Metadata,
) -> Result<InstanceInfo, MetadataError> {
    let required = |path: &'static str| async move {
        source
            .get(path)
            .await?
            .filter(|v| !v.is_empty())
            .ok_or_else(|| MetadataError::Missing {
                endpoint: source.endpoint().to_string(),
                path: format!("/latest/meta-data/{path}"),
            })
    };
    let pick = |flag: &Option<String>| {
        flag.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };

    let instance_id = match pick(&opts.instance_id) {
        Some(v) => v,
        None => required("instance-id").await?,
    };
    let availability_zone = match pick(&opts.availability_zone) {
        Some(v) => v,
        None => required("placement/availability-zone").await?,
    };
    let instance_type = match pick(&opts.instance_type) {
        Some(v) => v,
        None => required("instance-type").await?,
    };
    let region = match pick(&opts.region) {
        Some(v) => v,
        None => match source.get("placement/region").await? {
            Some(r) if !r.is_empty() => r,
            // Older IMDS versions lack placement/region: the zone minus its letter.
            _ => availability_zone
                .trim_end_matches(|c: char| c.is_ascii_alphabetic())
                .to_string(),
        },
    };
    let enis = match source.get("network/interfaces/macs/").await? {
        Some(list) => list.lines().filter(|l| !l.trim().is_empty()).count().max(1) as u32,
        None => 1,
    };
    let extra_mappings = match source.get("block-device-mapping/").await? {
        Some(list) => list.lines().filter(|l| l.trim().starts_with("ebs")).count() as u32,
        None => 0,
    };
    let info = InstanceInfo {
        instance_id,
        availability_zone,
        region,
        instance_type,
        enis,
        extra_mappings,
    };
    tracing::info!(
        endpoint = source.endpoint(),
        ?info,
        "instance identity loaded"
    );
    Ok(info)
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
