//! The driver's memory: idle VmRSS/VmHWM and thread count of a node and a
//! controller process, and a soak of 10,000 controller operations (create,
//! publish, unpublish, delete, 20 at a time) sampling VmRSS every 1,000 to
//! show it stays flat. Fast emulator delays, throttling off and the
//! limiter raised, so the soak measures the driver rather than waiting on
//! buckets. Peak memory with 500 operations in flight is in the provision
//! benchmark.
//!
//! ```sh
//! cargo bench --bench footprint              # BENCH_SOAK_OPS=10000
//! # the shipped binary, measured by a harness built in the dev profile:
//! cargo build --release --bin ebs-csi-driver
//! BENCH_DRIVER_BIN=target/release/ebs-csi-driver cargo bench --profile dev --bench footprint
//! ```

mod common;
#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::time::Duration;

use common::*;
use ebs_csi_driver::csi;
use support::csi::*;
use support::{Harness, SimOptions};

/// Targets of issue 22 (idle VmRSS on this kernel), MiB.
const NODE_IDLE: f64 = 6.0;
const CONTROLLER_IDLE: f64 = 10.0;

fn report(what: &str, pid: u32, target: f64) {
    let rss = status_mib(pid, "VmRSS");
    let (anon, file, shmem) = rss_split(pid);
    let (pss, pss_anon, pss_file) = pss_split(pid);
    println!(
        "| {what} idle | {rss:.1} | {anon:.1} / {file:.1} / {shmem:.1} | {pss:.1} ({pss_anon:.1} / {pss_file:.1}) | {:.1} | {} | {target:.0} | {:.2} |",
        status_mib(pid, "VmHWM"),
        threads(pid),
        rss / target
    );
    if std::env::var("BENCH_SMAPS").is_ok() {
        for (kib, what) in top_mappings(pid, 8) {
            println!("    {kib:>6} KiB  {what}");
        }
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let ops: usize = env_or("BENCH_SOAK_OPS", 10_000);
    println!("footprint bench");
    println!(
        "| process | VmRSS MiB | anon / file / shmem MiB | PSS (anon / file) MiB | VmHWM MiB | threads | target MiB | ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    {
        let node = Harness::start_with("node", SimOptions::default(), vec![]).await;
        node.wait_ready().await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        report("node", node.driver.child.id(), NODE_IDLE);
    }
    let h = Harness::start_with(
        "controller",
        SimOptions {
            throttle: false,
            ..SimOptions::default()
        },
        [
            "--ec2-mutating-rate=1000",
            "--ec2-mutating-burst=1000",
            "--ec2-describe-rate=1000",
            "--ec2-describe-burst=1000",
        ]
        .map(String::from)
        .to_vec(),
    )
    .await;
    h.wait_ready().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid = h.driver.child.id();
    report("controller", pid, CONTROLLER_IDLE);

    let nodes: Vec<String> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(h.sim.run_instance("us-east-1a").await);
        }
        v
    };
    let client = h.driver.controller().await;
    let lives = ops / 4;
    let mut samples = Vec::new();
    let started = std::time::Instant::now();
    for batch in 0..lives.div_ceil(250) {
        let mut tasks = tokio::task::JoinSet::new();
        let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(20));
        for j in 0..250.min(lives - batch * 250) {
            let i = batch * 250 + j;
            let mut c = client.clone();
            let node = nodes[i % nodes.len()].clone();
            let gate = gate.clone();
            tasks.spawn(async move {
                let _slot = gate.acquire_owned().await.unwrap();
                let vol = c
                    .create_volume(create_req(&format!("soak-{i}"), 1, params(&[])))
                    .await
                    .expect("create")
                    .into_inner()
                    .volume
                    .unwrap()
                    .volume_id;
                c.controller_publish_volume(publish_req(&vol, &node))
                    .await
                    .expect("publish");
                c.controller_unpublish_volume(unpublish_req(&vol, &node))
                    .await
                    .expect("unpublish");
                c.delete_volume(csi::DeleteVolumeRequest {
                    volume_id: vol,
                    ..Default::default()
                })
                .await
                .expect("delete");
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
        samples.push(((batch + 1) * 1000, status_mib(pid, "VmRSS")));
    }
    println!(
        "soak: {} operations in {:.0} s; VmRSS every 1,000 operations (MiB):",
        lives * 4,
        started.elapsed().as_secs_f64()
    );
    println!(
        "  {}",
        samples
            .iter()
            .map(|(n, r)| format!("{n}: {r:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // Growth after the first thousand (caches, pools and arenas warmed).
    if let (Some(first), Some(last)) = (samples.first(), samples.last()) {
        println!(
            "  growth from {} to {} operations: {:+.1} % (target < 10 %); VmHWM {:.1} MiB, threads {}",
            first.0,
            last.0,
            (last.1 / first.1 - 1.0) * 100.0,
            status_mib(pid, "VmHWM"),
            threads(pid)
        );
    }
}
