//! The binary in each mode: Identity answers, socket lifecycle, signals and
//! endpoint validation — against the real binary over a real Unix socket.

mod support;

use std::process::Command;
use std::time::Duration;

use ebs_csi_driver::csi;
use ebs_csi_driver::csi::plugin_capability::{self, service, volume_expansion};
use support::{DRIVER_BIN, Driver, wait_bounded};

fn service_caps(resp: &csi::GetPluginCapabilitiesResponse) -> Vec<service::Type> {
    resp.capabilities
        .iter()
        .filter_map(|c| match &c.r#type {
            Some(plugin_capability::Type::Service(s)) => service::Type::try_from(s.r#type).ok(),
            _ => None,
        })
        .collect()
}

fn has_online_expansion(resp: &csi::GetPluginCapabilitiesResponse) -> bool {
    resp.capabilities.iter().any(|c| {
        matches!(&c.r#type, Some(plugin_capability::Type::VolumeExpansion(v))
            if v.r#type == volume_expansion::Type::Online as i32)
    })
}

#[tokio::test]
async fn plugin_info_names_the_driver_and_version() {
    let driver = Driver::start("node").await;
    let info = driver
        .identity()
        .await
        .get_plugin_info(csi::GetPluginInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.name, "ebs.csi.aws.com");
    assert_eq!(info.vendor_version, env!("CARGO_PKG_VERSION"));
}

#[tokio::test]
async fn capabilities_follow_the_mode() {
    for (mode, controller) in [("controller", true), ("node", false), ("all", true)] {
        let driver = Driver::start(mode).await;
        let caps = driver
            .identity()
            .await
            .get_plugin_capabilities(csi::GetPluginCapabilitiesRequest {})
            .await
            .unwrap()
            .into_inner();
        let services = service_caps(&caps);
        assert_eq!(
            services.contains(&service::Type::ControllerService),
            controller,
            "mode {mode}: {services:?}"
        );
        assert!(
            services.contains(&service::Type::VolumeAccessibilityConstraints),
            "mode {mode}"
        );
        assert!(has_online_expansion(&caps), "mode {mode}");
    }
}

#[tokio::test]
async fn services_are_registered_by_mode() {
    let node_only = Driver::start("node").await;
    let err = node_only
        .controller()
        .await
        .controller_get_capabilities(csi::ControllerGetCapabilitiesRequest {})
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        tonic::Code::Unimplemented,
        "no Controller service in node mode"
    );

    let controller_only = Driver::start("controller").await;
    let err = controller_only
        .node()
        .await
        .node_get_capabilities(csi::NodeGetCapabilitiesRequest {})
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        tonic::Code::Unimplemented,
        "no Node service in controller mode"
    );
}

#[tokio::test]
async fn probe_answers_without_error() {
    let driver = Driver::start("all").await;
    let probe = driver
        .identity()
        .await
        .probe(csi::ProbeRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(probe.ready.is_some(), "ready must be set, true or false");
}

#[tokio::test]
async fn sigterm_removes_the_socket_and_exits_zero() {
    let mut driver = Driver::start("all").await;
    assert!(driver.socket.exists());
    let status = driver.terminate();
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        driver.log_text()
    );
    assert!(!driver.socket.exists(), "socket must be removed on SIGTERM");
    assert!(
        driver.log_text().contains("SIGTERM"),
        "log:\n{}",
        driver.log_text()
    );
}

#[tokio::test]
async fn sigint_also_stops_cleanly() {
    let mut driver = Driver::start("node").await;
    support::signal(&driver.child, nix::sys::signal::Signal::SIGINT);
    let status = wait_bounded(&mut driver.child, Duration::from_secs(30)).expect("exit on SIGINT");
    assert!(status.success(), "exit status {status}");
    assert!(!driver.socket.exists());
}

#[tokio::test]
async fn a_second_instance_on_a_live_socket_fails_clearly() {
    let first = Driver::start("node").await;
    let out = Command::new(DRIVER_BIN)
        .args(["node", &format!("--endpoint={}", first.socket.display())])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("another process is serving"), "{stderr}");
    // The first instance is untouched.
    first
        .identity()
        .await
        .probe(csi::ProbeRequest {})
        .await
        .unwrap();
}

#[tokio::test]
async fn a_stale_socket_is_replaced() {
    let mut first = Driver::start("node").await;
    // SIGKILL leaves the socket file behind, as a crash would.
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    assert!(first.socket.exists());
    let second = Driver::start_with(support::DriverConfig {
        mode: "node",
        socket: Some(first.socket.clone()),
        ..Default::default()
    })
    .await;
    second
        .identity()
        .await
        .probe(csi::ProbeRequest {})
        .await
        .unwrap();
    assert!(
        second.log_text().contains("stale socket"),
        "log:\n{}",
        second.log_text()
    );
}

#[test]
fn bad_endpoints_are_rejected_naming_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let regular = dir.path().join("plain-file");
    std::fs::write(&regular, b"keep me").unwrap();
    let missing = dir.path().join("no-such-dir/csi.sock");
    let cases = [
        "tcp://127.0.0.1:10000".to_string(),
        "unix://".to_string(),
        format!("unix://{}", regular.display()),
        format!("unix://{}", missing.display()),
    ];
    for endpoint in cases {
        let out = Command::new(DRIVER_BIN)
            .args(["node", &format!("--endpoint={endpoint}")])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{endpoint} must be refused");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let named = endpoint
            .strip_prefix("unix://")
            .filter(|p| !p.is_empty())
            .unwrap_or(&endpoint);
        assert!(
            stderr.contains(named),
            "error for {endpoint} must name it: {stderr}"
        );
    }
    assert_eq!(std::fs::read(&regular).unwrap(), b"keep me");
}

#[test]
fn version_flag_prints_the_crate_version() {
    let out = Command::new(DRIVER_BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn json_logging_gives_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(DRIVER_BIN)
        .args([
            "node",
            "--logging-format=json",
            &format!(
                "--endpoint={}",
                dir.path().join("missing/csi.sock").display()
            ),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert!(value.get("level").is_some(), "{line}");
    }
}
