//! A StatefulSet with `podManagementPolicy: OrderedReady` scaling to 20
//! replicas: each replica's volume is created, attached, staged (mkfs +
//! mount) and published before the next one starts, as the controllers and
//! kubelet do it. Realistic EC2 delays, real loop devices, real mkfs and
//! mount, so it needs root. Prints the total against the sum of EC2's own
//! delays (what no driver can avoid) and where the rest went.
//!
//! ```sh
//! sudo cargo bench --bench statefulset      # BENCH_REPLICAS=20, BENCH_FS=ext4
//! ```

mod common;
#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::collections::HashMap;
use std::time::Instant;

use common::*;
use ebs_csi_driver::csi;
use support::csi::*;
use support::node::{Cleanup, mount_cap};
use support::{Harness, SimOptions, is_root};

/// The emulator's `realistic` create and attach delays, seconds.
const EC2_DELAYS_S: f64 = 3.0 + 5.0;

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    if !is_root() {
        println!("SKIP statefulset bench: needs root (loop devices, mkfs, mount)");
        return;
    }
    let replicas: usize = env_or("BENCH_REPLICAS", 20);
    let fs = std::env::var("BENCH_FS").unwrap_or_else(|_| "ext4".into());
    let h = Harness::start_with(
        "all",
        SimOptions {
            delays: "realistic",
            ..SimOptions::default()
        },
        vec![],
    )
    .await;
    h.wait_ready().await;
    let mut ctl = h.driver.controller().await;
    let mut node = h.driver.node().await;
    let work = tempfile::tempdir().unwrap();
    let mut cleanup = Cleanup::default();
    let mut steps: HashMap<&str, Vec<f64>> = HashMap::new();
    let mut record = |step: &'static str, since: Instant| {
        steps
            .entry(step)
            .or_default()
            .push(since.elapsed().as_secs_f64());
    };
    let cap = mount_cap(&fs, &[]);
    let mut vols = Vec::new();
    let started = Instant::now();
    for i in 0..replicas {
        let t = Instant::now();
        let mut req = create_req(&format!("data-mysql-{i}"), 1, user_storage_class());
        req.volume_capabilities = vec![cap.clone()];
        let vol = ctl
            .create_volume(req)
            .await
            .expect("create")
            .into_inner()
            .volume
            .unwrap();
        record("CreateVolume", t);
        let t = Instant::now();
        let mut publish = publish_req(&vol.volume_id, &h.sim.instance_id);
        publish.volume_capability = Some(cap.clone());
        let context = ctl
            .controller_publish_volume(publish)
            .await
            .expect("publish")
            .into_inner()
            .publish_context;
        record("ControllerPublishVolume", t);
        let staging = work.path().join(format!("staging-{i}"));
        let target = work.path().join(format!("target-{i}"));
        cleanup.add(&staging);
        cleanup.add(&target);
        let t = Instant::now();
        node.node_stage_volume(csi::NodeStageVolumeRequest {
            volume_id: vol.volume_id.clone(),
            publish_context: context.clone(),
            staging_target_path: staging.display().to_string(),
            volume_capability: Some(cap.clone()),
            volume_context: vol.volume_context.clone(),
            ..Default::default()
        })
        .await
        .expect("stage");
        record("NodeStageVolume", t);
        let t = Instant::now();
        node.node_publish_volume(csi::NodePublishVolumeRequest {
            volume_id: vol.volume_id.clone(),
            publish_context: context,
            staging_target_path: staging.display().to_string(),
            target_path: target.display().to_string(),
            volume_capability: Some(cap.clone()),
            volume_context: vol.volume_context.clone(),
            ..Default::default()
        })
        .await
        .expect("node publish");
        record("NodePublishVolume", t);
        vols.push((vol.volume_id, staging, target));
    }
    let total = started.elapsed().as_secs_f64();
    let floor = replicas as f64 * EC2_DELAYS_S;
    println!(
        "statefulset bench: {replicas} replicas one after another, {fs}, realistic EC2 delays, real devices"
    );
    println!("| step | p50 s | p95 s | sum s |");
    println!("|---|---|---|---|");
    for step in [
        "CreateVolume",
        "ControllerPublishVolume",
        "NodeStageVolume",
        "NodePublishVolume",
    ] {
        let v = &steps[step];
        println!(
            "| {step} | {:.3} | {:.3} | {:.1} |",
            percentile(v, 0.5),
            percentile(v, 0.95),
            v.iter().sum::<f64>()
        );
    }
    println!(
        "total {total:.1} s, EC2's delays {floor:.1} s (create 3 s + attach 5 s per replica), ratio {:.3} (target ≤ 1.05)",
        total / floor
    );

    // Scale down: not timed.
    for (vol, staging, target) in vols {
        node.node_unpublish_volume(csi::NodeUnpublishVolumeRequest {
            volume_id: vol.clone(),
            target_path: target.display().to_string(),
        })
        .await
        .expect("node unpublish");
        node.node_unstage_volume(csi::NodeUnstageVolumeRequest {
            volume_id: vol.clone(),
            staging_target_path: staging.display().to_string(),
        })
        .await
        .expect("unstage");
        ctl.controller_unpublish_volume(unpublish_req(&vol, &h.sim.instance_id))
            .await
            .expect("unpublish");
        ctl.delete_volume(csi::DeleteVolumeRequest {
            volume_id: vol,
            ..Default::default()
        })
        .await
        .expect("delete");
    }
    drop(cleanup);
}
