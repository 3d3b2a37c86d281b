//! Command-line flags.
//!
//! Names follow the reference Go driver wherever the meaning is the same, so
//! manifests written for it keep working; see DESIGN.md for the list.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// Which CSI services this process serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Identity + Controller: talks to EC2, runs in the controller Deployment.
    Controller,
    /// Identity + Node: formats and mounts, runs in the node DaemonSet.
    Node,
    /// Everything in one process (local runs and tests).
    All,
    /// The node container's preStop hook: on a draining node, waits until
    /// no VolumeAttachment names it (the reference driver's mode).
    PreStopHook,
    /// The reference driver's (alpha) metadata-labeler mode: refused here
    /// with a clear error, it is not implemented.
    MetadataLabeler,
}

impl Mode {
    /// Whether the Controller service is served.
    pub fn runs_controller(self) -> bool {
        matches!(self, Mode::Controller | Mode::All)
    }

    /// Whether the Node service is served.
    pub fn runs_node(self) -> bool {
        matches!(self, Mode::Node | Mode::All)
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LoggingFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The driver's command line.
#[derive(Debug, Clone, Parser)]
#[command(name = "ebs-csi-driver", version, about = "Amazon EBS CSI driver")]
pub struct Options {
    /// Services to run.
    #[arg(value_enum, default_value_t = Mode::All)]
    pub mode: Mode,

    /// CSI endpoint: `unix:///path/to/csi.sock` or a plain socket path.
    #[arg(long, env = "CSI_ENDPOINT", default_value = "unix:///tmp/csi.sock")]
    pub endpoint: String,

    /// Log format.
    #[arg(long, value_enum, default_value_t = LoggingFormat::Text)]
    pub logging_format: LoggingFormat,

    /// Log level: a name (error, warn, info, debug, trace), a klog-style
    /// number (`-v=2` info, `-v=4` debug, `-v=6` trace) or tracing
    /// directives. Without it `RUST_LOG` applies, else `info`.
    #[arg(short = 'v', long = "log-level", alias = "v")]
    pub log_level: Option<String>,

    /// How long in-flight RPCs may run after SIGTERM/SIGINT before exit.
    #[arg(long, value_parser = parse_seconds, default_value = "20")]
    pub shutdown_timeout: Duration,

    /// Extra tags for every volume and snapshot created: `k1=v1,k2=v2`.
    #[arg(long, default_value = "")]
    pub extra_tags: String,

    /// Cluster id: adds `kubernetes.io/cluster/<id>=owned` and
    /// `KubernetesCluster=<id>` tags to created resources.
    #[arg(long, default_value = "")]
    pub k8s_tag_cluster_id: String,

    /// Appended to the EC2 client's user agent.
    #[arg(long, default_value = "")]
    pub user_agent_extra: String,

    /// Accepted for compatibility with the reference driver, where it turns
    /// on batching of Describe calls. Here concurrent Describe calls are
    /// always coalesced, so `--batching=false` changes nothing either.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub batching: Option<bool>,

    /// Log a warning and drop a tag that cannot be rendered or is invalid,
    /// instead of failing the request (reference driver semantics).
    #[arg(long, num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    pub warn_on_invalid_tag: bool,

    /// Log every EC2 request and response (AWS SDK debug logging).
    #[arg(long, num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    pub aws_sdk_debug_log: bool,

    /// Window in which ControllerExpandVolume and ControllerModifyVolume
    /// calls for one volume are merged into one EC2 ModifyVolume.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub modify_volume_request_handler_timeout: Duration,

    /// Format xfs with `bigtime=0,inobtcount=0,reflink=0,nrext64=0` so old
    /// kernels (≤ 5.4) can mount it. Deprecated, as in the reference driver.
    #[arg(long, num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    pub legacy_xfs: bool,

    /// Where the node learns its identity, tried in order: `imds`
    /// (instance metadata) and `kubernetes` (its Node object).
    #[arg(long, value_delimiter = ',', default_value = "imds,kubernetes")]
    pub metadata_sources: Vec<String>,

    /// Path of a kubeconfig file; without it the in-cluster configuration
    /// (service account) is used.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,

    /// Maximum volumes attachable to this node (overrides the instance-type table).
    #[arg(long)]
    pub volume_attach_limit: Option<u32>,

    /// Attachment slots already used by non-CSI volumes (root, boot) and
    /// ENIs on this node; overrides the driver's own count.
    #[arg(long)]
    pub reserved_volume_attachments: Option<u32>,

    /// Directory holding the `nvme-Amazon_Elastic_Block_Store_vol…` links.
    #[arg(long, default_value = "/dev/disk/by-id")]
    pub device_dir: PathBuf,

    /// Serve Prometheus metrics on this address (`:8080` or `host:port`).
    #[arg(long)]
    pub http_endpoint: Option<String>,

    /// This node's instance id (skips instance metadata).
    #[arg(long, env = "EBS_CSI_INSTANCE_ID")]
    pub instance_id: Option<String>,

    /// This node's availability zone (skips instance metadata).
    #[arg(long, env = "EBS_CSI_AVAILABILITY_ZONE")]
    pub availability_zone: Option<String>,

    /// This node's instance type (skips instance metadata).
    #[arg(long, env = "EBS_CSI_INSTANCE_TYPE")]
    pub instance_type: Option<String>,

    /// AWS region; without it the AWS config chain and instance metadata decide.
    #[arg(long, env = "AWS_REGION")]
    pub region: Option<String>,

    /// Bound on each instance-metadata request.
    #[arg(long, value_parser = parse_seconds, default_value = "5")]
    pub metadata_timeout: Duration,

    /// Starting rate (calls per second) of the client-side limiter for
    /// EC2's non-mutating actions (Describe*). EC2's default account limit;
    /// raise it for an account with raised limits. The limiter slows below
    /// it when EC2 throttles and climbs back to it.
    #[arg(long, value_parser = parse_rate, default_value = "20")]
    pub ec2_describe_rate: f64,

    /// Burst (bucket size) of the client-side limiter for non-mutating actions.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..), default_value = "100")]
    pub ec2_describe_burst: u32,

    /// Starting rate (calls per second) of the client-side limiter for
    /// EC2's mutating actions (CreateVolume, AttachVolume, …).
    #[arg(long, value_parser = parse_rate, default_value = "5")]
    pub ec2_mutating_rate: f64,

    /// Burst (bucket size) of the client-side limiter for mutating actions.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..), default_value = "200")]
    pub ec2_mutating_burst: u32,

    /// Bound on a new volume reaching `available`.
    #[arg(long, value_parser = parse_seconds, default_value = "300", hide = true)]
    pub create_timeout: Duration,

    /// Bound on an attachment reaching `attached` before it counts as stuck
    /// (it is then detached and retried once).
    #[arg(long, value_parser = parse_seconds, default_value = "120", hide = true)]
    pub attach_timeout: Duration,

    /// Bound on a detachment completing.
    #[arg(long, value_parser = parse_seconds, default_value = "120", hide = true)]
    pub detach_timeout: Duration,

    /// Bound on a modification becoming effective or a snapshot completing.
    #[arg(long, value_parser = parse_seconds, default_value = "300", hide = true)]
    pub modify_timeout: Duration,
}

/// Parses a positive rate in calls per second.
fn parse_rate(value: &str) -> Result<f64, String> {
    match value.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!(
            "{value:?} is not a positive number of calls per second"
        )),
    }
}

impl Options {
    /// Where the EC2 rate limiter starts, from the `--ec2-*` flags.
    pub fn limiter(&self) -> crate::cloud::limiter::LimiterConfig {
        use crate::cloud::limiter::{BucketConfig, LimiterConfig};
        LimiterConfig {
            describe: BucketConfig {
                rate: self.ec2_describe_rate,
                burst: self.ec2_describe_burst,
            },
            mutating: BucketConfig {
                rate: self.ec2_mutating_rate,
                burst: self.ec2_mutating_burst,
            },
        }
    }
}

/// Parses a Go-style duration (`2s`, `500ms`, `1m30s`) or a plain number
/// of seconds, as the reference driver's duration flags take.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    if let Ok(d) = parse_seconds(value) {
        return Ok(d);
    }
    let bad = || format!("invalid duration {value:?}: expected e.g. 2s, 500ms or 1m30s");
    let mut rest = value.trim();
    let mut total = 0.0f64;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let split = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let number: f64 = rest[..split].parse().map_err(|_| bad())?;
        rest = &rest[split..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return Err(bad()),
        };
        total += number * scale;
        rest = &rest[unit_len..];
    }
    Ok(Duration::from_secs_f64(total))
}

/// Parses a whole or fractional number of seconds, with an optional `s`.
fn parse_seconds(value: &str) -> Result<Duration, String> {
    let number = value.strip_suffix('s').unwrap_or(value);
    number
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("invalid duration {value:?}: expected seconds, e.g. 20 or 2.5s"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_reference_driver() {
        let opts = Options::try_parse_from(["ebs-csi-driver"]).unwrap();
        assert_eq!(opts.mode, Mode::All);
        assert_eq!(opts.endpoint, "unix:///tmp/csi.sock");
        assert_eq!(opts.device_dir, PathBuf::from("/dev/disk/by-id"));
        assert_eq!(opts.logging_format, LoggingFormat::Text);
    }

    #[test]
    fn reference_style_arguments_parse() {
        let opts = Options::try_parse_from([
            "ebs-csi-driver",
            "node",
            "--endpoint=unix:/csi/csi.sock",
            "--logging-format=json",
            "-v=2",
            "--batching=true",
            "--volume-attach-limit=25",
        ])
        .unwrap();
        assert_eq!(opts.mode, Mode::Node);
        assert_eq!(opts.log_level.as_deref(), Some("2"));
        assert_eq!(opts.volume_attach_limit, Some(25));
        assert!(opts.mode.runs_node() && !opts.mode.runs_controller());
    }

    #[test]
    fn limiter_flags_start_at_ec2_defaults_and_name_bad_values() {
        let opts = Options::try_parse_from(["ebs-csi-driver"]).unwrap();
        assert_eq!(
            opts.limiter(),
            crate::cloud::limiter::LimiterConfig::default()
        );
        let raised = Options::try_parse_from([
            "ebs-csi-driver",
            "--ec2-mutating-rate=10",
            "--ec2-mutating-burst=400",
            "--ec2-describe-rate=40.5",
            "--ec2-describe-burst=200",
        ])
        .unwrap()
        .limiter();
        assert_eq!((raised.mutating.rate, raised.mutating.burst), (10.0, 400));
        assert_eq!((raised.describe.rate, raised.describe.burst), (40.5, 200));
        let err = Options::try_parse_from(["ebs-csi-driver", "--ec2-mutating-rate=0"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"0\""), "{err}");
        assert!(Options::try_parse_from(["ebs-csi-driver", "--ec2-describe-burst=0"]).is_err());
    }

    #[test]
    fn durations_name_the_bad_value() {
        assert_eq!(parse_seconds("2.5s").unwrap(), Duration::from_millis(2500));
        let err = parse_seconds("soon").unwrap_err();
        assert!(err.contains("\"soon\""), "{err}");
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert!(
            parse_duration("2 weeks")
                .unwrap_err()
                .contains("\"2 weeks\"")
        );
    }

    #[test]
    fn reference_flags_of_later_features_parse() {
        let opts = Options::try_parse_from([
            "ebs-csi-driver",
            "controller",
            "--warn-on-invalid-tag",
            "--aws-sdk-debug-log=true",
            "--modify-volume-request-handler-timeout=3s",
            "--metadata-sources=kubernetes",
            "--batching",
        ])
        .unwrap();
        assert!(opts.warn_on_invalid_tag && opts.aws_sdk_debug_log);
        assert_eq!(opts.batching, Some(true));
        assert_eq!(
            opts.modify_volume_request_handler_timeout,
            Duration::from_secs(3)
        );
        assert_eq!(opts.metadata_sources, ["kubernetes"]);
        let hook = Options::try_parse_from(["ebs-csi-driver", "pre-stop-hook"]).unwrap();
        assert_eq!(hook.mode, Mode::PreStopHook);
        assert_eq!(hook.metadata_sources, ["imds", "kubernetes"]);
    }
}
