//! `--http-endpoint` serves Prometheus metrics: scraped after real
//! operations against the emulator, with faults injected so errors and
//! throttles show.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;

use support::csi::*;
use support::{Harness, SimOptions};

/// The port the driver bound for `--http-endpoint=127.0.0.1:0`, from its
/// log line (a port picked by the test and released could be taken by
/// another process before the driver binds it).
fn metrics_port(log: &str) -> u16 {
    log.lines()
        .find(|l| l.contains("serving metrics at /metrics"))
        .and_then(|l| l.split("address=").nth(1))
        .and_then(|a| a.split_whitespace().next())
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no metrics address in the driver log:\n{log}"))
}

fn scrape(port: u16, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("metrics endpoint listens");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    (head.to_string(), body.to_string())
}

#[tokio::test]
async fn metrics_count_requests_errors_and_throttles() {
    let h = Harness::start_with(
        "controller",
        SimOptions {
            // One 500 and one throttle on CreateVolume: both retried.
            faults: "CreateVolume:internal:1:1,DeleteVolume:throttle:1:1".into(),
            ..SimOptions::default()
        },
        vec!["--http-endpoint=127.0.0.1:0".to_string()],
    )
    .await;
    h.wait_ready().await;
    let port = metrics_port(&h.driver.log_text());
    let mut c = h.driver.controller().await;
    let v = c
        .create_volume(create_req("pvc-m", 1, params(&[])))
        .await
        .expect("create despite a 500")
        .into_inner();
    c.delete_volume(ebs_csi_driver::csi::DeleteVolumeRequest {
        volume_id: v.volume.unwrap().volume_id,
        ..Default::default()
    })
    .await
    .expect("delete despite a throttle");
    let bad = c
        .create_volume(create_req("pvc-bad", 1, params(&[("nope", "1")])))
        .await;
    assert!(bad.is_err());

    let (head, body) = scrape(port, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    for want in [
        "aws_ebs_csi_api_request_duration_seconds_count{request=\"CreateVolume\"} 2",
        "aws_ebs_csi_api_request_errors_total{request=\"CreateVolume\",error=\"InternalError\"} 1",
        "aws_ebs_csi_api_request_throttles_total{request=\"DeleteVolume\"} 1",
        "csi_rpc_requests_total{method=\"CreateVolume\",code=\"OK\"} 1",
        "csi_rpc_requests_total{method=\"CreateVolume\",code=\"InvalidArgument\"} 1",
        "csi_rpc_duration_seconds_count{method=\"DeleteVolume\",code=\"OK\"} 1",
    ] {
        assert!(body.contains(want), "missing {want} in\n{body}");
    }
    let (head, _) = scrape(port, "/other");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
}
