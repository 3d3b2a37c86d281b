//! A fault storm: 100 volume lives (create → publish → snapshot → unpublish
//! → restore → delete the restore → delete snapshot → delete) run 20 at a
//! time while the emulator fails over a fifth of *every* EC2 call — 500s
//! after executing the request (`internal-after`), 500s and 503s before
//! (`internal`, `unavailable`) and RequestLimitExceeded (`throttle`) — with
//! a fixed seed. The test client retries failed RPCs the way the Kubernetes
//! sidecars do (same request, backoff, no giving up). Afterwards every life
//! has finished and EC2 holds no volume and no snapshot with the test's
//! names: nothing leaked, nothing was made twice.
//!
//! The emulator's own throttling is off (only injected throttles), the
//! driver's limiter starts high so the run takes seconds, and delays are
//! `fast`. The dice come from one seeded generator, but concurrent lives
//! roll them in scheduling order, so the counts printed vary a little from
//! run to run; the outcome asserted does not.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ebs_csi_driver::csi;
use ebs_csi_driver::csi::controller_client::ControllerClient;
use serde_json::json;
use support::csi::*;
use support::{Ec2Sim, Harness, SimOptions};
use tonic::transport::Channel;

const LIVES: usize = 100;
const CONCURRENCY: usize = 20;
const NODES: usize = 5;
const SEED: u64 = 20261202;
/// First matching rule wins: 1 − 0.91·0.94·0.94·0.97 ≈ 22 % of calls fail.
const FAULTS: &str = "*:internal-after:0.09,*:internal:0.06,*:unavailable:0.06,*:throttle:0.03";
const ZONE: &str = "us-east-1a";
/// How long one RPC may keep failing before the test gives up on it (a
/// sidecar would retry forever; a test must end).
const RPC_DEADLINE: Duration = Duration::from_secs(180);

/// RPC retries the test client made, by RPC.
#[derive(Default)]
struct Retries(Mutex<BTreeMap<&'static str, u64>>);

impl Retries {
    fn add(&self, rpc: &'static str) {
        *self.0.lock().unwrap().entry(rpc).or_default() += 1;
    }
}

/// Calls `rpc` until it succeeds, as a sidecar does: the same request
/// again after a growing pause, whatever the error.
async fn retry<T, F, Fut>(retries: &Retries, rpc: &'static str, mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let started = Instant::now();
    let mut pause = Duration::from_millis(50);
    loop {
        match call().await {
            Ok(r) => return r.into_inner(),
            Err(status) => {
                assert!(
                    started.elapsed() < RPC_DEADLINE,
                    "{rpc} still failing after {RPC_DEADLINE:?}: {status:?}"
                );
                retries.add(rpc);
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// `retry` of one RPC with a fresh client handle and request per attempt.
macro_rules! rpc {
    ($retries:expr, $name:literal, $client:ident . $method:ident ( $req:expr )) => {
        retry($retries, $name, || {
            let mut client = $client.clone();
            let req = $req.clone();
            async move { client.$method(req).await }
        })
        .await
    };
}

fn in_zone(mut req: csi::CreateVolumeRequest) -> csi::CreateVolumeRequest {
    req.accessibility_requirements = Some(zone_requirement(
        "topology.ebs.csi.aws.com/zone",
        &[ZONE],
        &[ZONE],
    ));
    req
}

/// One volume's life; every RPC retried until it succeeds.
async fn life(i: usize, channel: Channel, node: String, retries: Arc<Retries>) {
    let c = ControllerClient::new(channel);
    let r = &retries;
    let vol_req = in_zone(create_req(&format!("storm-vol-{i}"), 1, params(&[])));
    let vol = rpc!(r, "CreateVolume", c.create_volume(vol_req))
        .volume
        .unwrap()
        .volume_id;
    let publish = publish_req(&vol, &node);
    rpc!(
        r,
        "ControllerPublishVolume",
        c.controller_publish_volume(publish)
    );
    // The snapshotter calls CreateSnapshot again until it is ready.
    let snap_req = csi::CreateSnapshotRequest {
        name: format!("storm-snap-{i}"),
        source_volume_id: vol.clone(),
        ..Default::default()
    };
    let snap = loop {
        let s = rpc!(r, "CreateSnapshot", c.create_snapshot(snap_req))
            .snapshot
            .unwrap();
        if s.ready_to_use {
            break s.snapshot_id;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let unpublish = unpublish_req(&vol, &node);
    rpc!(
        r,
        "ControllerUnpublishVolume",
        c.controller_unpublish_volume(unpublish)
    );
    let mut restore_req = in_zone(create_req(&format!("storm-restore-{i}"), 1, params(&[])));
    restore_req.volume_content_source = Some(csi::VolumeContentSource {
        r#type: Some(csi::volume_content_source::Type::Snapshot(
            csi::volume_content_source::SnapshotSource {
                snapshot_id: snap.clone(),
            },
        )),
    });
    let restored = rpc!(r, "CreateVolume", c.create_volume(restore_req))
        .volume
        .unwrap()
        .volume_id;
    let delete = |id: &str| csi::DeleteVolumeRequest {
        volume_id: id.to_string(),
        ..Default::default()
    };
    let (del_restored, del_vol) = (delete(&restored), delete(&vol));
    rpc!(r, "DeleteVolume", c.delete_volume(del_restored));
    let del_snap = csi::DeleteSnapshotRequest {
        snapshot_id: snap,
        ..Default::default()
    };
    rpc!(r, "DeleteSnapshot", c.delete_snapshot(del_snap));
    rpc!(r, "DeleteVolume", c.delete_volume(del_vol));
}

/// Volumes and snapshots carrying the test's names that EC2 still lists.
async fn leftovers(sim: &Ec2Sim) -> (Vec<String>, Vec<String>) {
    let sdk = sim.sdk();
    let named = |tags: &[aws_sdk_ec2::types::Tag], key: &str| {
        tags.iter()
            .any(|t| t.key() == Some(key) && t.value().is_some_and(|v| v.starts_with("storm-")))
    };
    let volumes = sdk
        .describe_volumes()
        .send()
        .await
        .expect("DescribeVolumes")
        .volumes()
        .iter()
        .filter(|v| named(v.tags(), "CSIVolumeName"))
        .map(|v| format!("{} ({:?})", v.volume_id().unwrap_or("?"), v.state()))
        .collect();
    let snapshots = sdk
        .describe_snapshots()
        .send()
        .await
        .expect("DescribeSnapshots")
        .snapshots()
        .iter()
        .filter(|s| named(s.tags(), "CSIVolumeSnapshotName"))
        .map(|s| s.snapshot_id().unwrap_or("?").to_string())
        .collect();
    (volumes, snapshots)
}

fn sum(v: &serde_json::Value) -> u64 {
    v.as_object()
        .map(|o| o.values().filter_map(|n| n.as_u64()).sum())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_lives_under_a_fault_storm_leak_nothing() {
    let h = Harness::start_with(
        "controller",
        SimOptions {
            throttle: false,
            seed: Some(SEED),
            ..SimOptions::default()
        },
        [
            "--ec2-mutating-rate=200",
            "--ec2-mutating-burst=400",
            "--ec2-describe-rate=200",
            "--ec2-describe-burst=400",
        ]
        .map(String::from)
        .to_vec(),
    )
    .await;
    h.wait_ready().await;
    let mut nodes = Vec::new();
    for _ in 0..NODES {
        nodes.push(h.sim.run_instance(ZONE).await);
    }
    let channel = h.driver.channel().await;
    h.sim.post("config", &json!({ "faults": FAULTS }));
    h.sim.reset_counters();

    let started = Instant::now();
    let retries = Arc::new(Retries::default());
    let gate = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    let mut lives = tokio::task::JoinSet::new();
    for i in 0..LIVES {
        let (channel, node, retries, gate) = (
            channel.clone(),
            nodes[i % NODES].clone(),
            retries.clone(),
            gate.clone(),
        );
        lives.spawn(async move {
            let _slot = gate.acquire_owned().await.unwrap();
            life(i, channel, node, retries).await;
        });
    }
    let mut finished = 0;
    while let Some(done) = lives.join_next().await {
        done.expect("a life failed");
        finished += 1;
    }
    let wall = started.elapsed();
    let counters = h.sim.get("counters");
    h.sim.post("config", &json!({ "faults": "" }));

    // Deletions end in `deleting` for a moment; give them time to go.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (volumes, snapshots) = loop {
        let left = leftovers(&h.sim).await;
        if (left.0.is_empty() && left.1.is_empty()) || Instant::now() > deadline {
            break left;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };

    let calls = counters["total_calls"].as_u64().unwrap_or(0);
    let faults = sum(&counters["faults"]);
    let mut by_kind: BTreeMap<String, u64> = BTreeMap::new();
    if let Some(actions) = counters["fault_kinds"].as_object() {
        for kinds in actions.values() {
            for (kind, n) in kinds.as_object().into_iter().flatten() {
                *by_kind.entry(kind.clone()).or_default() += n.as_u64().unwrap_or(0);
            }
        }
    }
    let per_action: BTreeMap<String, (u64, u64)> = counters["calls"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(a, n)| {
            let f = counters["faults"][a].as_u64().unwrap_or(0);
            (a.clone(), (n.as_u64().unwrap_or(0), f))
        })
        .collect();
    let rpc_retries = retries.0.lock().unwrap().clone();
    println!("fault storm: {finished}/{LIVES} lives, {CONCURRENCY} at a time, seed {SEED}");
    println!("  wall time {:.1} s", wall.as_secs_f64());
    println!(
        "  EC2 calls {calls}, faults injected {faults} ({:.1} %): {by_kind:?}",
        100.0 * faults as f64 / calls.max(1) as f64
    );
    for (action, (n, f)) in &per_action {
        println!("    {action:<30} {n:>6} calls {f:>5} faults");
    }
    println!(
        "  RPC retries by the client: {} {rpc_retries:?}",
        rpc_retries.values().sum::<u64>()
    );
    println!(
        "  left in EC2: {} volumes, {} snapshots",
        volumes.len(),
        snapshots.len()
    );

    assert_eq!(finished, LIVES);
    assert!(
        volumes.is_empty(),
        "volumes leaked or made twice: {volumes:?}"
    );
    assert!(
        snapshots.is_empty(),
        "snapshots leaked or made twice: {snapshots:?}"
    );
    assert!(
        faults as f64 >= 0.2 * calls as f64,
        "the storm was too mild: {faults} faults in {calls} calls"
    );
    let used: HashMap<_, _> = per_action.iter().collect();
    for action in [
        "CreateVolume",
        "AttachVolume",
        "DetachVolume",
        "DeleteVolume",
        "CreateSnapshot",
        "DeleteSnapshot",
        "DescribeVolumes",
        "DescribeSnapshots",
    ] {
        let (n, f) = used.get(&action.to_string()).map(|p| **p).unwrap_or((0, 0));
        assert!(n > 0 && f > 0, "{action}: {n} calls, {f} faults");
    }
    for kind in ["internal-after", "internal", "unavailable", "throttle"] {
        assert!(
            by_kind.get(kind).copied().unwrap_or(0) > 0,
            "no {kind} fault"
        );
    }
}
