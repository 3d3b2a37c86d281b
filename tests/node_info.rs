//! NodeGetInfo and NodeGetCapabilities of the `node` binary: identity from
//! the emulator's IMDSv2 or from flags, topology, attachment limits, and the
//! error (and not-ready Probe) when instance metadata is unreachable.
//! These need no root.

mod support;

use std::time::{Duration, Instant};

use ebs_csi_driver::csi;
use ebs_csi_driver::csi::node_service_capability::{Type, rpc};
use support::{Driver, DriverConfig, Harness, SimOptions};
use tonic::Code;

async fn info(h: &Harness) -> csi::NodeGetInfoResponse {
    h.wait_ready().await;
    h.driver
        .node()
        .await
        .node_get_info(csi::NodeGetInfoRequest {})
        .await
        .unwrap_or_else(|e| panic!("NodeGetInfo: {e:?}\nlog:\n{}", h.driver.log_text()))
        .into_inner()
}

fn zone_segments(resp: &csi::NodeGetInfoResponse) -> (String, String) {
    let segments = &resp
        .accessible_topology
        .as_ref()
        .expect("topology")
        .segments;
    (
        segments["topology.kubernetes.io/zone"].clone(),
        segments["topology.ebs.csi.aws.com/zone"].clone(),
    )
}

#[tokio::test]
async fn node_info_comes_from_instance_metadata() {
    let h = Harness::start("node").await;
    let resp = info(&h).await;
    assert_eq!(resp.node_id, h.sim.instance_id);
    assert_eq!(
        zone_segments(&resp),
        (h.sim.zone.clone(), h.sim.zone.clone())
    );
    // m5.large: 27 shared EBS slots with one ENI (the reference's table
    // leaves it at the default), minus the root volume.
    assert_eq!(resp.max_volumes_per_node, 26);

    let caps = h
        .driver
        .node()
        .await
        .node_get_capabilities(csi::NodeGetCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut kinds: Vec<rpc::Type> = caps
        .capabilities
        .iter()
        .filter_map(|c| match &c.r#type {
            Some(Type::Rpc(r)) => rpc::Type::try_from(r.r#type).ok(),
            None => None,
        })
        .collect();
    kinds.sort_by_key(|k| *k as i32);
    assert_eq!(
        kinds,
        [
            rpc::Type::StageUnstageVolume,
            rpc::Type::GetVolumeStats,
            rpc::Type::ExpandVolume,
            rpc::Type::VolumeCondition,
            rpc::Type::SingleNodeMultiWriter
        ]
    );
}

#[tokio::test]
async fn attachment_limits_follow_type_and_flags() {
    let dedicated = SimOptions {
        instance_type: "m7i.large".into(),
        ..SimOptions::default()
    };
    let h = Harness::start_with("node", dedicated, vec![]).await;
    assert_eq!(
        info(&h).await.max_volumes_per_node,
        31,
        "32 dedicated − root"
    );
    drop(h);

    let h = Harness::start_with(
        "node",
        SimOptions::default(),
        vec!["--reserved-volume-attachments=3".into()],
    )
    .await;
    assert_eq!(
        info(&h).await.max_volumes_per_node,
        24,
        "28 − 1 ENI − 3 reserved"
    );
    drop(h);

    let h = Harness::start_with(
        "node",
        SimOptions::default(),
        vec!["--volume-attach-limit=7".into()],
    )
    .await;
    assert_eq!(info(&h).await.max_volumes_per_node, 7);
}

#[tokio::test]
async fn flags_override_single_values_and_the_rest_comes_from_imds() {
    let args = vec![
        "--availability-zone=us-east-1z".into(),
        "--instance-type=c7i.large".into(),
    ];
    let h = Harness::start_with("node", SimOptions::default(), args).await;
    let resp = info(&h).await;
    assert_eq!(resp.node_id, h.sim.instance_id, "from IMDS");
    assert_eq!(zone_segments(&resp).0, "us-east-1z", "from the flag");
    assert_eq!(
        resp.max_volumes_per_node, 31,
        "c7i.large from the flag: 32 dedicated − root"
    );
}

/// A loopback port with nothing listening.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn unreachable_env(endpoint: &str) -> Vec<(String, String)> {
    [
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", endpoint),
        ("AWS_REGION", "us-east-1"),
        ("AWS_CONFIG_FILE", "/dev/null"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

#[tokio::test]
async fn unreachable_metadata_is_a_clear_error_and_probe_stays_not_ready() {
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let driver = Driver::start_with(DriverConfig {
        mode: "node",
        args: vec!["--metadata-timeout=1".into()],
        env: unreachable_env(&endpoint),
        socket: None,
    })
    .await;
    let mut node = driver.node().await;
    let start = Instant::now();
    let err = loop {
        let err = node
            .node_get_info(csi::NodeGetInfoRequest {})
            .await
            .unwrap_err();
        if err.message().contains(&endpoint) || start.elapsed() > Duration::from_secs(15) {
            break err;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    let msg = err.message();
    assert!(msg.contains(&endpoint), "names the endpoint: {msg}");
    assert!(
        msg.contains("hop limit") && msg.contains("--instance-id"),
        "names cause and way out: {msg}"
    );
    let probe = driver
        .identity()
        .await
        .probe(csi::ProbeRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(probe.ready, Some(false));
    assert!(
        driver.log_text().contains(&endpoint),
        "logged too:\n{}",
        driver.log_text()
    );
}

#[tokio::test]
async fn with_every_identity_flag_imds_is_not_needed() {
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let driver = Driver::start_with(DriverConfig {
        mode: "node",
        args: vec![
            "--instance-id=i-0123456789abcdef0".into(),
            "--availability-zone=eu-west-1b".into(),
            "--instance-type=t3.large".into(),
            "--region=eu-west-1".into(),
        ],
        env: unreachable_env(&endpoint),
        socket: None,
    })
    .await;
    let mut node = driver.node().await;
    let start = Instant::now();
    let resp = loop {
        match node.node_get_info(csi::NodeGetInfoRequest {}).await {
            Ok(r) => break r.into_inner(),
            Err(e) => {
                assert!(start.elapsed() < Duration::from_secs(5), "{e:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    assert_eq!(resp.node_id, "i-0123456789abcdef0");
    assert_eq!(zone_segments(&resp).1, "eu-west-1b");
    assert_eq!(resp.max_volumes_per_node, 26);
    let probe = driver
        .identity()
        .await
        .probe(csi::ProbeRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(probe.ready, Some(true));
    assert!(!driver.log_text().contains(&endpoint), "IMDS never called");
}
