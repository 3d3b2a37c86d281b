//! Provisioning at scale against the EC2 emulator with realistic delays and
//! throttling on: N concurrent CreateVolume + ControllerPublish across
//! nodes, as a StatefulSet scale-up does. Prints wall time, per-RPC latency
//! percentiles, EC2 calls per volume and the driver's peak memory.
//!
//! ```sh
//! cargo bench --bench provision              # 200 volumes
//! BENCH_VOLUMES=500 cargo bench --bench provision
//! ```

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::time::{Duration, Instant};

use support::csi::*;
use support::{Harness, SimOptions};

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i].as_secs_f64()
}

fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let n: usize = std::env::var("BENCH_VOLUMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let per_node = 25;
    let h = Harness::start_with(
        "controller",
        SimOptions {
            delays: "realistic",
            ..SimOptions::default()
        },
        vec![],
    )
    .await;
    h.wait_ready().await;
    let mut nodes = Vec::new();
    for _ in 0..n.div_ceil(per_node) {
        nodes.push(h.sim.run_instance("us-east-1a").await);
    }
    let idle_rss = peak_rss_mib(h.driver.child.id());
    h.sim.reset_counters();
    // One connection, as external-provisioner and external-attacher use.
    let client = h.driver.controller().await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..n {
        let mut c = client.clone();
        let node = nodes[i / per_node].clone();
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let vol = c
                .create_volume(create_req(&format!("bench-{i}"), 1, user_storage_class()))
                .await
                .expect("create")
                .into_inner()
                .volume
                .unwrap()
                .volume_id;
            let create = t.elapsed();
            let t = Instant::now();
            c.controller_publish_volume(publish_req(&vol, &node))
                .await
                .expect("publish");
            (create, t.elapsed())
        }));
    }
    let mut creates = Vec::new();
    let mut publishes = Vec::new();
    for t in tasks {
        let (c, p) = t.await.unwrap();
        creates.push(c);
        publishes.push(p);
    }
    let wall = started.elapsed();
    creates.sort();
    publishes.sort();
    let counters = h.sim.get("counters");
    let calls = counters["calls"].as_object().cloned().unwrap_or_default();
    let sum = |prefix: &str| -> u64 {
        calls
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.as_u64().unwrap_or(0))
            .sum()
    };
    println!(
        "provision bench: {n} volumes, {} nodes, realistic EC2 delays, throttling on",
        nodes.len()
    );
    println!(
        "  wall time                 {:>8.1} s  ({:.1} volumes/s)",
        wall.as_secs_f64(),
        n as f64 / wall.as_secs_f64()
    );
    println!(
        "  CreateVolume latency      p50 {:>6.2} s   p95 {:>6.2} s   max {:>6.2} s",
        percentile(&creates, 0.5),
        percentile(&creates, 0.95),
        percentile(&creates, 1.0)
    );
    println!(
        "  ControllerPublish latency p50 {:>6.2} s   p95 {:>6.2} s   max {:>6.2} s",
        percentile(&publishes, 0.5),
        percentile(&publishes, 0.95),
        percentile(&publishes, 1.0)
    );
    println!(
        "  EC2 calls                 {} Describe ({:.3}/volume), {} mutating, {} throttled",
        sum("Describe"),
        sum("Describe") as f64 / n as f64,
        calls.values().map(|v| v.as_u64().unwrap_or(0)).sum::<u64>() - sum("Describe"),
        counters["throttled"].as_object().map_or(0, |t| t
            .values()
            .map(|v| v.as_u64().unwrap_or(0))
            .sum::<u64>())
    );
    println!(
        "  driver memory             {:.1} MiB idle, {:.1} MiB peak (VmHWM)",
        idle_rss,
        peak_rss_mib(h.driver.child.id())
    );
}
