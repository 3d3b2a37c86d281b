//! Logging set-up: text or JSON lines on stderr, level from the flag or `RUST_LOG`.

use tracing_subscriber::EnvFilter;

use crate::options::LoggingFormat;

/// Turns the `-v/--log-level` value into tracing directives.
///
/// klog-style numbers are accepted because the reference driver's manifests
/// pass `-v=2` and the like; everything else is handed to tracing as is.
pub fn directives(level: &str) -> Result<String, String> {
    let level = level.trim();
    if level.is_empty() {
        return Err("empty log level".to_string());
    }
    if let Ok(n) = level.parse::<i64>() {
        let name = match n {
            i64::MIN..=-1 => {
                return Err(format!("invalid log level {level:?}: must not be negative"));
            }
            0..=3 => "info",
            4..=5 => "debug",
            _ => "trace",
        };
        return Ok(name.to_string());
    }
    EnvFilter::try_new(level)
        .map(|_| level.to_string())
        .map_err(|e| format!("invalid log level {level:?}: {e}"))
}

/// The AWS SDK's crates, logged at trace by `--aws-sdk-debug-log`: every
/// request and response, as the reference driver's flag does for the Go SDK.
const SDK_DEBUG: &str = "aws_smithy_runtime=trace,aws_smithy_runtime_api=trace,\
                         aws_smithy_http_client=trace,aws_sdk_ec2=trace,aws_config=debug";

/// Installs the global subscriber. Call once, before anything logs.
/// `sdk_debug` adds the AWS SDK's wire logs (`--aws-sdk-debug-log`).
pub fn init(format: LoggingFormat, level: Option<&str>, sdk_debug: bool) -> Result<(), String> {
    let mut filter = match level {
        Some(level) => EnvFilter::new(directives(level)?),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    if sdk_debug {
        for d in SDK_DEBUG.split(',') {
            filter = filter.add_directive(d.parse().map_err(|e| format!("{d}: {e}"))?);
        }
    }
    // Colours only for a person at a terminal: container logs, files and
    // log collectors get plain text that grep and parsers can read.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let installed = match format {
        LoggingFormat::Text => builder.with_target(false).try_init(),
        LoggingFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    installed.map_err(|e| format!("cannot install the log subscriber: {e}"))
}

#[cfg(test)]
mod tests {
    use super::directives;

    #[test]
    fn klog_numbers_map_to_levels() {
        assert_eq!(directives("2").unwrap(), "info");
        assert_eq!(directives("4").unwrap(), "debug");
        assert_eq!(directives("9").unwrap(), "trace");
        assert_eq!(directives("debug").unwrap(), "debug");
        assert_eq!(
            directives("ebs_csi_driver=trace,info").unwrap(),
            "ebs_csi_driver=trace,info"
        );
    }

    #[test]
    fn bad_levels_name_the_value() {
        assert!(directives("-1").unwrap_err().contains("\"-1\""));
        assert!(directives("").is_err());
        assert!(directives("lots[").unwrap_err().contains("\"lots[\""));
    }
}
