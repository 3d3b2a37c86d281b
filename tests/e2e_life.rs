//! The whole life of a volume end to end, on the EC2 emulator with
//! realistic delays and, as root, real loop devices, mkfs and mount: once
//! with xfs (grows online) and once with ext4 (grows online where the
//! machine allows, else offline, said so).

mod support;

use support::life::Life;
use support::{Harness, SimOptions, is_root};

async fn life(fs: &str) {
    if !is_root() {
        eprintln!("SKIP e2e life ({fs}): needs root for loop devices, mkfs and mount");
        return;
    }
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
    let work = tempfile::tempdir().unwrap();
    let report = Life::new(
        h.driver.channel().await,
        &h.sim.instance_id,
        work.path(),
        fs,
        false,
    )
    .run(&format!("e2e-{fs}"))
    .await
    .unwrap_or_else(|e| panic!("life failed at {e}\ndriver log:\n{}", h.driver.log_text()));
    let total: f64 = report.steps.iter().map(|(_, d)| d.as_secs_f64()).sum();
    for (step, took) in &report.steps {
        println!("{fs}: {step:<55} {:>7.2}s", took.as_secs_f64());
    }
    println!(
        "{fs}: {} steps in {total:.1}s; filesystem {} → {} MiB, grown {}",
        report.steps.len(),
        report.fs_bytes_before >> 20,
        report.fs_bytes_after >> 20,
        report.growth
    );
    if fs == "xfs" {
        assert_eq!(report.growth, "online", "xfs grows online");
    }
    // Nothing of ours is left in EC2 or on the machine.
    assert!(h.sim.all_volumes().await.is_empty(), "volumes left in EC2");
    let snaps = h.sim.own_snapshots().await;
    assert!(snaps.is_empty(), "snapshots left: {snaps:?}");
    let links: Vec<_> = std::fs::read_dir(&h.sim.device_dir).unwrap().collect();
    assert!(links.is_empty(), "device links left: {links:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&work.path().display().to_string()),
        "mounts left under the work dir"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn volume_life_xfs() {
    life("xfs").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn volume_life_ext4() {
    life("ext4").await;
}
