//! The reference driver's flags and variables that change how the driver
//! talks to EC2: the legacy `AWS_EC2_ENDPOINT` variable and
//! `--aws-sdk-debug-log`.

mod support;

use support::csi::*;
use support::{Driver, DriverConfig, Ec2Sim, SimOptions};

async fn controller(sim: &Ec2Sim, args: &[&str], legacy_endpoint: bool) -> Driver {
    let mut env = sim.driver_env();
    if legacy_endpoint {
        for (k, _) in env.iter_mut().filter(|(k, _)| k == "AWS_ENDPOINT_URL_EC2") {
            *k = "AWS_EC2_ENDPOINT".to_string();
        }
    }
    let d = Driver::start_with(DriverConfig {
        mode: "controller",
        args: args.iter().map(|a| a.to_string()).collect(),
        env,
        socket: None,
    })
    .await;
    d.wait_ready().await;
    d
}

#[tokio::test]
async fn the_legacy_aws_ec2_endpoint_variable_still_works() {
    let sim = tokio::task::spawn_blocking(|| Ec2Sim::start_with(SimOptions::default()))
        .await
        .unwrap();
    let d = controller(&sim, &[], true).await;
    let v = d
        .controller()
        .await
        .create_volume(create_req("pvc-legacy-endpoint", 1, params(&[])))
        .await
        .expect("EC2 reached through AWS_EC2_ENDPOINT");
    assert!(v.into_inner().volume.unwrap().volume_id.starts_with("vol-"));
    assert!(d.log_text().contains("EC2 endpoint from AWS_EC2_ENDPOINT"));
    assert_eq!(sim.calls("CreateVolume"), 1);
}

#[tokio::test]
async fn aws_sdk_debug_log_shows_the_wire() {
    let sim = tokio::task::spawn_blocking(|| Ec2Sim::start_with(SimOptions::default()))
        .await
        .unwrap();
    let quiet = controller(&sim, &[], false).await;
    let loud = controller(&sim, &["--aws-sdk-debug-log"], false).await;
    for d in [&quiet, &loud] {
        d.controller()
            .await
            .list_volumes(ebs_csi_driver::csi::ListVolumesRequest::default())
            .await
            .unwrap();
    }
    let wire = |log: &str| log.lines().filter(|l| l.contains("TRACE")).count();
    assert_eq!(wire(&quiet.log_text()), 0, "no SDK trace without the flag");
    let loud_log = loud.log_text();
    assert!(wire(&loud_log) > 0, "SDK trace with the flag:\n{loud_log}");
    assert!(
        loud_log.contains("DescribeVolumes"),
        "the request is in the log:\n{loud_log}"
    );
}
