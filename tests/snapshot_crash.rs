//! Crash safety of snapshots: the controller is killed (SIGKILL) at random
//! points of CreateSnapshot and CreateVolumeGroupSnapshot, a new one is
//! started, the RPC is retried as the snapshotter would, and EC2 holds
//! exactly one snapshot for the name (one per volume for the group).
//!
//! The emulator holds every EC2 call the RPC makes (`slow=` faults) so the
//! kill can land before the lookup answers, while the create is in flight
//! or after it answered. A request in flight when the driver dies is still
//! executed by EC2; the retry is sent once it has been (a restarted
//! controller's first request comes seconds later in a cluster, after the
//! pod restart and leader election, longer than any EC2 call takes).

mod support;

use std::time::Duration;

use ebs_csi_driver::csi;
use ebs_csi_driver::csi::group_controller_client::GroupControllerClient;
use serde_json::json;
use support::csi::*;
use support::{Driver, DriverConfig, Ec2Sim, SimOptions};

/// How long the emulator holds each EC2 call of the RPC.
const HOLD_MS: u64 = 400;

/// A small seeded generator for the kill points (reproducible runs).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

async fn start_controller(sim: &Ec2Sim) -> Driver {
    let driver = Driver::start_with(DriverConfig {
        mode: "controller",
        env: sim.driver_env(),
        ..DriverConfig::default()
    })
    .await;
    driver.wait_ready().await;
    driver
}

async fn start_sim() -> Ec2Sim {
    tokio::task::spawn_blocking(|| Ec2Sim::start_with(SimOptions::default()))
        .await
        .unwrap()
}

fn kill(mut driver: Driver) {
    driver.child.kill().unwrap();
    driver.child.wait().unwrap();
}

async fn snapshots_tagged(sim: &Ec2Sim, key: &str, value: &str) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = sim
        .sdk()
        .describe_snapshots()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name(format!("tag:{key}"))
                .values(value)
                .build(),
        )
        .send()
        .await
        .expect("DescribeSnapshots")
        .snapshots()
        .iter()
        .map(|s| {
            (
                s.snapshot_id().unwrap_or_default().to_string(),
                s.volume_id().unwrap_or_default().to_string(),
            )
        })
        .collect();
    found.sort();
    found
}

async fn new_volume(driver: &Driver, name: &str) -> String {
    driver
        .controller()
        .await
        .create_volume(create_req(name, 1, params(&[])))
        .await
        .expect("create")
        .into_inner()
        .volume
        .unwrap()
        .volume_id
}

/// Holds the RPC's EC2 calls, lets `rpc` run for `after` and kills the
/// driver; then waits until whatever was in flight has been executed and
/// lifts the hold.
async fn kill_during<F>(sim: &Ec2Sim, driver: Driver, holds: &[&str], after: Duration, rpc: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let spec: Vec<String> = holds
        .iter()
        .map(|a| format!("{a}:slow={HOLD_MS}:1"))
        .collect();
    sim.post("config", &json!({ "faults": spec.join(",") }));
    let call = tokio::spawn(rpc);
    tokio::time::sleep(after).await;
    kill(driver);
    let _ = call.await;
    tokio::time::sleep(Duration::from_millis(HOLD_MS + 300)).await;
    sim.post("config", &json!({ "faults": "" }));
}

#[tokio::test]
async fn create_snapshot_killed_anywhere_then_retried_makes_one() {
    let sim = start_sim().await;
    let mut driver = start_controller(&sim).await;
    let vol = new_volume(&driver, "pvc-crash-snap").await;
    let mut dice = Lcg(7);
    // Lookup by name, source volume check, CreateSnapshot: three holds.
    let span = 3 * HOLD_MS + 200;
    for trial in 0..5 {
        let name = format!("snap-crash-{trial}");
        let req = csi::CreateSnapshotRequest {
            name: name.clone(),
            source_volume_id: vol.clone(),
            ..Default::default()
        };
        let after = Duration::from_millis(dice.below(span));
        let mut c = driver.controller().await;
        let first = req.clone();
        kill_during(
            &sim,
            driver,
            &["DescribeSnapshots", "DescribeVolumes", "CreateSnapshot"],
            after,
            async move {
                let _ = c.create_snapshot(first).await;
            },
        )
        .await;
        let before_retry = snapshots_tagged(&sim, "CSIVolumeSnapshotName", &name).await;
        driver = start_controller(&sim).await;
        let snap = driver
            .controller()
            .await
            .create_snapshot(req)
            .await
            .expect("retried CreateSnapshot")
            .into_inner()
            .snapshot
            .unwrap();
        let found = snapshots_tagged(&sim, "CSIVolumeSnapshotName", &name).await;
        println!(
            "trial {trial}: killed after {after:?}; {} snapshot(s) before the retry, {} after",
            before_retry.len(),
            found.len()
        );
        assert_eq!(
            found,
            vec![(snap.snapshot_id, vol.clone())],
            "trial {trial} (killed after {after:?}): exactly one snapshot"
        );
    }
}

#[tokio::test]
async fn group_snapshot_killed_anywhere_then_retried_makes_one_set() {
    let sim = start_sim().await;
    let mut driver = start_controller(&sim).await;
    let node = sim.run_instance("us-east-1a").await;
    let mut vols = Vec::new();
    for name in ["pvc-crash-ga", "pvc-crash-gb"] {
        let v = new_volume(&driver, name).await;
        driver
            .controller()
            .await
            .controller_publish_volume(publish_req(&v, &node))
            .await
            .expect("publish");
        vols.push(v);
    }
    vols.sort();
    let mut dice = Lcg(11);
    // Group lookup, source volumes, attached volumes, CreateSnapshots.
    let span = 4 * HOLD_MS + 200;
    for trial in 0..4 {
        let name = format!("group-crash-{trial}");
        let req = csi::CreateVolumeGroupSnapshotRequest {
            name: name.clone(),
            source_volume_ids: vols.clone(),
            ..Default::default()
        };
        let after = Duration::from_millis(dice.below(span));
        let mut g = GroupControllerClient::new(driver.channel().await);
        let first = req.clone();
        kill_during(
            &sim,
            driver,
            &[
                "DescribeSnapshots",
                "DescribeVolumes",
                "DescribeInstances",
                "CreateSnapshots",
            ],
            after,
            async move {
                let _ = g.create_volume_group_snapshot(first).await;
            },
        )
        .await;
        let before_retry = snapshots_tagged(&sim, "CSIVolumeGroupSnapshotName", &name).await;
        driver = start_controller(&sim).await;
        let group = GroupControllerClient::new(driver.channel().await)
            .create_volume_group_snapshot(req)
            .await
            .expect("retried CreateVolumeGroupSnapshot")
            .into_inner()
            .group_snapshot
            .unwrap();
        let found = snapshots_tagged(&sim, "CSIVolumeGroupSnapshotName", &name).await;
        let mut answered: Vec<(String, String)> = group
            .snapshots
            .iter()
            .map(|s| (s.snapshot_id.clone(), s.source_volume_id.clone()))
            .collect();
        answered.sort();
        println!(
            "trial {trial}: killed after {after:?}; {} snapshot(s) before the retry, {} after",
            before_retry.len(),
            found.len()
        );
        assert_eq!(found.len(), 2, "trial {trial}: one snapshot per volume");
        assert_eq!(found, answered, "trial {trial}: the ones answered");
        let mut sources: Vec<&String> = found.iter().map(|(_, v)| v).collect();
        sources.sort();
        assert_eq!(sources, vols.iter().collect::<Vec<_>>());
    }
}
