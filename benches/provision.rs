//! Provisioning at scale against the EC2 emulator with realistic delays and
//! EC2's default buckets: N concurrent CreateVolume + ControllerPublish on
//! one gRPC connection (as the sidecars use), then N ControllerUnpublish,
//! then N ControllerExpandVolume; and the same four RPCs one at a time.
//! One table: per phase the wall time, the least time EC2's mutating bucket
//! and delays allow (the bound), their ratio, the lag from EC2's state
//! change to the RPC's return (p50/p95, from the emulator's transition
//! log), the median time to attached as a share of the wall time, Describe
//! calls per second and the RequestLimitExceeded EC2 answered.
//!
//! ```sh
//! cargo bench --bench provision                        # N = 500 and 1000
//! BENCH_VOLUMES=200 BENCH_PHASES=create cargo bench --bench provision
//! ```
//! `BENCH_VOLUMES`: comma-separated N (default `500,1000`); the unpublish
//! and expand phases run for the first N only (`BENCH_PHASES=create` skips
//! them). `BENCH_SEQ`: lives one at a time (default 10). `BENCH_JITTER`:
//! percent by which the emulator spreads each delay (default 20; real EC2
//! varies by seconds, and with fixed delays every transition falls at the
//! same phase of the driver's poll ticks, which skews the lag; 0 for the
//! fixed delays of earlier runs).

mod common;
#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use common::*;
use ebs_csi_driver::csi;
use ebs_csi_driver::csi::controller_client::ControllerClient;
use support::csi::*;
use support::{Ec2Sim, Harness, SimOptions};
use tonic::transport::Channel;

/// EC2's default mutating bucket (the emulator's too).
const MUTATING_BURST: f64 = 200.0;
const MUTATING_RATE: f64 = 5.0;
/// The emulator's `realistic` delays, seconds.
const CREATE_S: f64 = 3.0;
const ATTACH_S: f64 = 5.0;
const DETACH_S: f64 = 5.0;
const MODIFY_S: f64 = 6.0;
/// The driver's `--modify-volume-request-handler-timeout` default (the
/// reference's): an expand waits this long for other changes to the same
/// volume. One at a time that adds to each life; in bulk the bucket refills
/// meanwhile, so the bound of the parallel phase does not change.
const MERGE_S: f64 = 2.0;
/// The issue's target for the controller's peak memory at 500 in flight.
const PEAK_MIB: f64 = 24.0;
/// Volumes per node (instance).
const PER_NODE: usize = 25;

/// One row of the table.
struct Row {
    run: String,
    wall: f64,
    bound: f64,
    lags: Vec<(&'static str, Vec<f64>)>,
    attached_share: Option<f64>,
    describe_per_s: f64,
    throttles: u64,
}

impl Row {
    fn print(&self) {
        let lags: Vec<String> = self
            .lags
            .iter()
            .map(|(what, l)| format!("{what} {}", lag_cell(l)))
            .collect();
        let ratio = if self.bound > 0.0 {
            format!("{:.3}", self.wall / self.bound)
        } else {
            "-".into()
        };
        println!(
            "| {} | {:.1} | {:.1} | {} | {} | {} | {:.2} | {} |",
            self.run,
            self.wall,
            self.bound,
            ratio,
            lags.join(", "),
            self.attached_share
                .map_or("-".to_string(), |s| format!("{s:.2}")),
            self.describe_per_s,
            self.throttles
        );
    }
}

fn header() {
    println!(
        "| run | wall s | bound s | ratio | lag p50/p95 ms | median attached / wall | Describe/s | throttled |"
    );
    println!("|---|---|---|---|---|---|---|---|");
}

/// Tokens left in the emulator's mutating bucket now.
fn mutating_tokens(sim: &Ec2Sim) -> f64 {
    sim.get("config")["throttle"]["mutating"]["tokens"]
        .as_f64()
        .unwrap_or(MUTATING_BURST)
}

/// The least time `calls` mutating calls take from a bucket holding
/// `tokens`, plus the delay of the last one's change.
fn bound(calls: usize, tokens: f64, delay: f64) -> f64 {
    (calls as f64 - tokens).max(0.0) / MUTATING_RATE + delay
}

struct Counts {
    describe: u64,
    throttles: u64,
}

fn counts(sim: &Ec2Sim) -> Counts {
    let c = sim.get("counters");
    Counts {
        describe: counted(&c, "calls", "Describe"),
        throttles: counted(&c, "throttled", ""),
    }
}

/// The row of a phase that took `wall` seconds, from the emulator's
/// counters since they were last reset.
fn row(
    sim: &Ec2Sim,
    run: String,
    wall: f64,
    bound: f64,
    lags: Vec<(&'static str, Vec<f64>)>,
    attached_share: Option<f64>,
) -> Row {
    let c = counts(sim);
    Row {
        run,
        wall,
        bound,
        lags,
        attached_share,
        describe_per_s: c.describe as f64 / wall,
        throttles: c.throttles,
    }
}

async fn start() -> Harness {
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
    h.sim.post(
        "config",
        &serde_json::json!({"delays": {"jitter": jitter(), "seed": 20261207}}),
    );
    h
}

/// The emulator's delay jitter, a fraction (`BENCH_JITTER` percent).
fn jitter() -> f64 {
    env_or("BENCH_JITTER", 20) as f64 / 100.0
}

fn expand_req(vol: &str, gib: i64) -> csi::ControllerExpandVolumeRequest {
    csi::ControllerExpandVolumeRequest {
        volume_id: vol.into(),
        capacity_range: Some(csi::CapacityRange {
            required_bytes: gib << 30,
            limit_bytes: 0,
        }),
        ..Default::default()
    }
}

/// (id, started, returned) of each RPC of a phase, epoch seconds.
type Done = Vec<(String, f64, f64)>;

/// Runs `rpc` for every (volume, node) at once; returns what was done.
async fn phase<F, Fut>(
    client: &ControllerClient<Channel>,
    items: &[(String, String)],
    rpc: F,
) -> Done
where
    F: Fn(ControllerClient<Channel>, String, String) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut tasks = Vec::new();
    for (vol, node) in items {
        let fut = rpc(client.clone(), vol.clone(), node.clone());
        let vol = vol.clone();
        tasks.push(tokio::spawn(async move {
            let t = now();
            fut.await;
            (vol, t, now())
        }));
    }
    let mut done = Vec::new();
    for t in tasks {
        done.push(t.await.unwrap());
    }
    done
}

async fn parallel(n: usize, all_phases: bool, peak: &mut f64) -> Vec<Row> {
    let h = start().await;
    let mut nodes = Vec::new();
    for _ in 0..n.div_ceil(PER_NODE) {
        nodes.push(h.sim.run_instance("us-east-1a").await);
    }
    h.sim.reset_counters();
    h.sim.post("events/reset", &serde_json::json!({}));
    let client = h.driver.controller().await;
    let mut rows = Vec::new();

    // create + publish
    let t0 = now();
    let mut tasks = Vec::new();
    for i in 0..n {
        let mut c = client.clone();
        let node = nodes[i / PER_NODE].clone();
        tasks.push(tokio::spawn(async move {
            let started = now();
            let vol = c
                .create_volume(create_req(&format!("bench-{i}"), 1, user_storage_class()))
                .await
                .expect("create")
                .into_inner()
                .volume
                .unwrap()
                .volume_id;
            let created = now();
            c.controller_publish_volume(publish_req(&vol, &node))
                .await
                .expect("publish");
            (vol, node, started, created, now())
        }));
    }
    let mut lives = Vec::new();
    for t in tasks {
        lives.push(t.await.unwrap());
    }
    let wall = now() - t0;
    *peak = peak.max(status_mib(h.driver.child.id(), "VmHWM"));
    let events = Events::fetch(&h.sim);
    let creates: Done = lives
        .iter()
        .map(|(v, _, s, c, _)| (v.clone(), *s, *c))
        .collect();
    let publishes: Done = lives
        .iter()
        .map(|(v, _, _, c, p)| (v.clone(), *c, *p))
        .collect();
    let created: Vec<f64> = lives.iter().map(|(_, _, _, c, _)| c - t0).collect();
    let attached: Vec<f64> = lives.iter().map(|(_, _, _, _, p)| p - t0).collect();
    println!(
        "{n} create+publish: EC2 calls {}",
        h.sim.get("counters")["calls"]
    );
    let deciles = |v: &[f64]| {
        [0.1, 0.25, 0.5, 0.75, 0.9]
            .map(|p| format!("{:.1}", percentile(v, p)))
            .join("/")
    };
    println!(
        "{n} create+publish: seconds from the start to created {}, to attached {} (p10/p25/p50/p75/p90)",
        deciles(&created),
        deciles(&attached)
    );
    let log = h.driver.log_text();
    for action in ["DescribeVolumes", "CreateVolume", "AttachVolume"] {
        let ms = ec2_call_ms(&log, action);
        println!(
            "{n} create+publish: {action} took {} ms (p50/p95 of {} calls, as the driver timed them)",
            lag_cell(&ms),
            ms.len()
        );
    }
    rows.push(row(
        &h.sim,
        format!("{n} create+publish"),
        wall,
        bound(2 * n, MUTATING_BURST, ATTACH_S),
        vec![
            ("create", lags_ms(&events, "volume", "available", &creates)),
            (
                "attach",
                lags_ms(&events, "attachment", "attached", &publishes),
            ),
        ],
        Some(percentile(&attached, 0.5) / wall),
    ));
    if !all_phases {
        return rows;
    }
    let items: Vec<(String, String)> = lives
        .iter()
        .map(|(v, node, ..)| (v.clone(), node.clone()))
        .collect();

    // unpublish
    h.sim.reset_counters();
    let tokens = mutating_tokens(&h.sim);
    let t0 = now();
    let done = phase(&client, &items, |mut c, vol, node| async move {
        c.controller_unpublish_volume(unpublish_req(&vol, &node))
            .await
            .expect("unpublish");
    })
    .await;
    let wall = now() - t0;
    let events = Events::fetch(&h.sim);
    rows.push(row(
        &h.sim,
        format!("{n} unpublish"),
        wall,
        bound(n, tokens, DETACH_S),
        vec![("detach", lags_ms(&events, "attachment", "detached", &done))],
        None,
    ));

    // expand
    h.sim.reset_counters();
    let tokens = mutating_tokens(&h.sim);
    let t0 = now();
    let done = phase(&client, &items, |mut c, vol, _| async move {
        c.controller_expand_volume(expand_req(&vol, 2))
            .await
            .expect("expand");
    })
    .await;
    let wall = now() - t0;
    *peak = peak.max(status_mib(h.driver.child.id(), "VmHWM"));
    let events = Events::fetch(&h.sim);
    rows.push(row(
        &h.sim,
        format!("{n} expand"),
        wall,
        bound(n, tokens, MODIFY_S),
        vec![(
            "modify",
            lags_ms(&events, "modification", "optimizing", &done),
        )],
        None,
    ));
    rows
}

/// `lives` volumes through create → publish → unpublish → expand, one RPC
/// at a time.
async fn one_at_a_time(lives: usize) -> Row {
    let h = start().await;
    let node = h.sim.run_instance("us-east-1a").await;
    h.sim.reset_counters();
    h.sim.post("events/reset", &serde_json::json!({}));
    let mut c = h.driver.controller().await;
    let (mut creates, mut attaches, mut detaches, mut modifies) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let t0 = now();
    for i in 0..lives {
        let s = now();
        let vol = c
            .create_volume(create_req(&format!("seq-{i}"), 1, user_storage_class()))
            .await
            .expect("create")
            .into_inner()
            .volume
            .unwrap()
            .volume_id;
        creates.push((vol.clone(), s, now()));
        let s = now();
        c.controller_publish_volume(publish_req(&vol, &node))
            .await
            .expect("publish");
        attaches.push((vol.clone(), s, now()));
        let s = now();
        c.controller_unpublish_volume(unpublish_req(&vol, &node))
            .await
            .expect("unpublish");
        detaches.push((vol.clone(), s, now()));
        let s = now();
        c.controller_expand_volume(expand_req(&vol, 2))
            .await
            .expect("expand");
        modifies.push((vol.clone(), s, now()));
    }
    let wall = now() - t0;
    let events = Events::fetch(&h.sim);
    row(
        &h.sim,
        format!("1 at a time ({lives} lives)"),
        wall,
        lives as f64 * (CREATE_S + ATTACH_S + DETACH_S + MERGE_S + MODIFY_S),
        vec![
            ("create", lags_ms(&events, "volume", "available", &creates)),
            (
                "attach",
                lags_ms(&events, "attachment", "attached", &attaches),
            ),
            (
                "detach",
                lags_ms(&events, "attachment", "detached", &detaches),
            ),
            (
                "modify",
                lags_ms(&events, "modification", "optimizing", &modifies),
            ),
        ],
        None,
    )
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let sizes: Vec<usize> = std::env::var("BENCH_VOLUMES")
        .unwrap_or_else(|_| "500,1000".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let all_phases = std::env::var("BENCH_PHASES").map_or(true, |p| p != "create");
    let seq: usize = env_or("BENCH_SEQ", 10);
    println!(
        "provision bench: realistic EC2 delays (create {CREATE_S} s, attach {ATTACH_S} s, detach \
         {DETACH_S} s, modify {MODIFY_S} s, each ±{:.0} %), EC2's default buckets, one gRPC connection",
        jitter() * 100.0
    );
    println!(
        "(snapshots: CreateSnapshot returns at once, the snapshotter polls; no driver wait to measure)"
    );
    let mut rows = Vec::new();
    let mut peak = 0.0;
    if seq > 0 {
        rows.push(one_at_a_time(seq).await);
    }
    let mut peaks = Vec::new();
    for (i, n) in sizes.iter().enumerate() {
        let mut hwm = 0.0;
        rows.extend(parallel(*n, all_phases && i == 0, &mut hwm).await);
        peaks.push((*n, hwm));
        peak = f64::max(peak, hwm);
    }
    header();
    for r in &rows {
        r.print();
    }
    println!("controller peak memory (VmHWM) over the parallel runs: {peak:.1} MiB");
    for (n, hwm) in &peaks {
        println!(
            "controller VmHWM, {n} in flight: {hwm:.1} MiB (target {PEAK_MIB} MiB at 500: ratio {:.2})",
            hwm / PEAK_MIB
        );
    }
}
