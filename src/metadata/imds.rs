//! The IMDSv2 source of the instance identity (the reference's `imds`
//! metadata source): aws-config's IMDS client, every call bounded.

use std::error::Error as StdError;
use std::time::Duration;

use aws_config::imds::client::error::ImdsError;

use super::{DEFAULT_ENDPOINT, IPV6_ENDPOINT, InstanceInfo, MetadataConfig, MetadataError, pick};

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
