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

    /// Accepted for compatibility with the reference driver; describe calls
    /// are always coalesced here.
    #[arg(long, hide = true)]
    pub batching: Option<bool>,

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
    fn durations_name_the_bad_value() {
        assert_eq!(parse_seconds("2.5s").unwrap(), Duration::from_millis(2500));
        let err = parse_seconds("soon").unwrap_err();
        assert!(err.contains("\"soon\""), "{err}");
    }
}
