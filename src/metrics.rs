//! Prometheus metrics: every EC2 request (count, latency, errors by kind,
//! throttles) under the reference driver's names, and every CSI RPC (count
//! by result code, latency), served on `--http-endpoint` at `/metrics`.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::cloud::Ec2Observer;

type Labels = Vec<(String, String)>;
type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 5 ms … ~80 s: EC2 calls and long RPCs (CreateVolume waits) both fit.
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

/// The driver's metrics.
pub struct Metrics {
    registry: Registry,
    api_duration: HistogramFamily,
    api_errors: Family<Labels, Counter>,
    api_throttles: Family<Labels, Counter>,
    rpc_requests: Family<Labels, Counter>,
    rpc_duration: HistogramFamily,
}

/// The process-wide metrics.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::default();
        let api_duration = HistogramFamily::new_with_constructor(latency_histogram as fn() -> _);
        let api_errors = Family::<Labels, Counter>::default();
        let api_throttles = Family::<Labels, Counter>::default();
        let rpc_requests = Family::<Labels, Counter>::default();
        let rpc_duration = HistogramFamily::new_with_constructor(latency_histogram as fn() -> _);
        registry.register(
            "aws_ebs_csi_api_request_duration_seconds",
            "Duration of EC2 API requests, by action",
            api_duration.clone(),
        );
        // The client appends `_total` to counters.
        registry.register(
            "aws_ebs_csi_api_request_errors",
            "EC2 API requests that failed, by action and error kind",
            api_errors.clone(),
        );
        registry.register(
            "aws_ebs_csi_api_request_throttles",
            "EC2 API requests refused with RequestLimitExceeded, by action",
            api_throttles.clone(),
        );
        registry.register(
            "csi_rpc_requests",
            "CSI RPCs served, by method and gRPC code",
            rpc_requests.clone(),
        );
        registry.register(
            "csi_rpc_duration_seconds",
            "Duration of CSI RPCs, by method",
            rpc_duration.clone(),
        );
        Metrics {
            registry,
            api_duration,
            api_errors,
            api_throttles,
            rpc_requests,
            rpc_duration,
        }
    }

    /// Records one EC2 request attempt; `error` is EC2's error code
    /// (`VolumeInUse`, `RequestLimitExceeded`, …) when it failed.
    pub fn ec2_request(&self, action: &str, took: Duration, error: Option<&str>, throttled: bool) {
        let labels = vec![("request".to_string(), action.to_string())];
        self.api_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        if let Some(code) = error {
            if throttled {
                self.api_throttles.get_or_create(&labels).inc();
            }
            let mut with_code = labels;
            with_code.push(("error".to_string(), code.to_string()));
            self.api_errors.get_or_create(&with_code).inc();
        }
    }

    /// Records one CSI RPC.
    pub fn rpc(&self, method: &str, code: tonic::Code, took: Duration) {
        let code = match code {
            tonic::Code::Ok => "OK".to_string(),
            other => format!("{other:?}"),
        };
        let labels = vec![
            ("method".to_string(), method.to_string()),
            ("code".to_string(), code),
        ];
        self.rpc_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        self.rpc_requests.get_or_create(&labels).inc();
    }

    /// The metrics in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

impl Ec2Observer for Metrics {
    fn ec2_request(&self, action: &str, took: Duration, error: Option<&str>, throttled: bool) {
        Metrics::ec2_request(self, action, took, error, throttled)
    }
}

/// Parses `--http-endpoint` (`:8080`, `0.0.0.0:8080`, `127.0.0.1:0`).
pub fn parse_listen(value: &str) -> Result<std::net::SocketAddr, String> {
    let full = if value.starts_with(':') {
        format!("0.0.0.0{value}")
    } else {
        value.to_string()
    };
    full.parse()
        .map_err(|e| format!("--http-endpoint {value:?} is not HOST:PORT or :PORT: {e}"))
}

/// Serves `GET /metrics` on `listener` until the process ends. A minimal
/// HTTP/1.1 responder: Prometheus sends one small GET per scrape.
pub async fn serve(listener: TcpListener) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            // Read the whole request head: a client may send it in
            // several writes, and answering after the first piece would
            // close the connection under the rest (EPIPE on its side).
            let mut buf = Vec::with_capacity(1024);
            let mut chunk = [0u8; 1024];
            let complete = tokio::time::timeout(Duration::from_secs(5), async {
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return false,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                true
            })
            .await;
            if !matches!(complete, Ok(true)) {
                return;
            }
            let request = String::from_utf8_lossy(&buf);
            let path = request.split_whitespace().nth(1).unwrap_or("");
            let (status, body) = if path == "/metrics" || path.starts_with("/metrics?") {
                ("200 OK", global().render())
            } else {
                (
                    "404 Not Found",
                    "not found; metrics are at /metrics\n".to_string(),
                )
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_reference_driver() {
        let m = Metrics::new();
        m.ec2_request("CreateVolume", Duration::from_millis(12), None, false);
        m.ec2_request(
            "CreateVolume",
            Duration::from_millis(3),
            Some("RequestLimitExceeded"),
            true,
        );
        m.rpc("CreateVolume", tonic::Code::Ok, Duration::from_millis(40));
        let text = m.render();
        for want in [
            "aws_ebs_csi_api_request_duration_seconds_count{request=\"CreateVolume\"} 2",
            "aws_ebs_csi_api_request_errors_total{request=\"CreateVolume\",error=\"RequestLimitExceeded\"} 1",
            "aws_ebs_csi_api_request_throttles_total{request=\"CreateVolume\"} 1",
            "csi_rpc_requests_total{method=\"CreateVolume\",code=\"OK\"} 1",
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(parse_listen(":8080").unwrap().port(), 8080);
        assert!(parse_listen("127.0.0.1:0").is_ok());
        let err = parse_listen("localhost").unwrap_err();
        assert!(err.contains("\"localhost\""), "{err}");
    }
}
