//! The test harness itself: the emulator starts, its ready line carries what
//! a driver needs, its control endpoints answer, and a driver wired to it
//! serves.

mod support;

use support::{Ec2Sim, Harness, SimOptions};

#[test]
fn emulator_ready_line_and_counters() {
    let sim = Ec2Sim::start_with(SimOptions {
        delays: "none",
        ..SimOptions::default()
    });
    assert!(
        sim.endpoint.starts_with("http://127.0.0.1:"),
        "{}",
        sim.endpoint
    );
    assert!(sim.instance_id.starts_with("i-"), "{}", sim.instance_id);
    assert!(
        sim.zone.starts_with(&sim.region),
        "{} in {}",
        sim.zone,
        sim.region
    );
    assert!(sim.device_dir.is_dir(), "{}", sim.device_dir.display());
    let env = sim.driver_env();
    assert!(
        env.iter()
            .any(|(k, v)| k == "AWS_ENDPOINT_URL_EC2" && v == &sim.endpoint)
    );
    sim.reset_counters();
    assert_eq!(sim.calls("DescribeVolumes"), 0);
    assert_eq!(sim.get("health")["ok"], true);
}

#[test]
fn emulator_removes_its_device_dir_on_drop() {
    let sim = Ec2Sim::start();
    let dir = sim.device_dir.clone();
    assert!(dir.is_dir());
    drop(sim);
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[tokio::test]
async fn driver_runs_against_emulator() {
    let h = Harness::start("all").await;
    let info = h
        .driver
        .identity()
        .await
        .get_plugin_info(ebs_csi_driver::csi::GetPluginInfoRequest {})
        .await
        .expect("plugin info")
        .into_inner();
    assert_eq!(info.name, "ebs.csi.aws.com");
}
