//! Every EC2 action that is not safe to send twice, failed by the emulator
//! with `internal-after` (the request is executed, then EC2 answers 500):
//! the RPC succeeds, the action is not sent a second time, and exactly the
//! one resource exists. And `internal` (500 without executing) for the
//! lookup actions: the lookup finds nothing and the request is sent again.

mod support;

use ebs_csi_driver::csi;
use ebs_csi_driver::csi::group_controller_client::GroupControllerClient;
use serde_json::json;
use support::csi::*;
use support::{Ec2Sim, Harness};

async fn controller() -> Harness {
    let h = Harness::start_with("controller", Default::default(), vec![]).await;
    h.wait_ready().await;
    h
}

/// Fails the next call of `action` with `kind` and zeroes the counters.
fn fail_next(sim: &Ec2Sim, action: &str, kind: &str) {
    sim.post(
        "config",
        &json!({ "faults": format!("{action}:{kind}:1:1") }),
    );
    sim.reset_counters();
}

/// How many faults the emulator injected since the counters were reset.
fn faults_injected(sim: &Ec2Sim) -> u64 {
    let counters = sim.get("counters");
    counters["faults"]
        .as_object()
        .map(|by_action| by_action.values().filter_map(|n| n.as_u64()).sum())
        .unwrap_or(0)
}

async fn snapshots_named(sim: &Ec2Sim, key: &str, value: &str) -> Vec<String> {
    sim.sdk()
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
        .filter_map(|s| s.snapshot_id().map(str::to_string))
        .collect()
}

async fn new_volume(h: &Harness, name: &str) -> String {
    h.driver
        .controller()
        .await
        .create_volume(create_req(name, 2, params(&[])))
        .await
        .expect("create")
        .into_inner()
        .volume
        .unwrap()
        .volume_id
}

async fn attachments(sim: &Ec2Sim, vol: &str) -> Vec<(String, String)> {
    let out = sim
        .sdk()
        .describe_volumes()
        .volume_ids(vol)
        .send()
        .await
        .expect("DescribeVolumes");
    out.volumes()[0]
        .attachments()
        .iter()
        .map(|a| {
            (
                a.instance_id().unwrap_or_default().to_string(),
                a.state()
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default(),
            )
        })
        .collect()
}

fn snap_req(name: &str, vol: &str) -> csi::CreateSnapshotRequest {
    csi::CreateSnapshotRequest {
        name: name.into(),
        source_volume_id: vol.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn create_snapshot_answered_500_after_it_was_made_makes_one() {
    let h = controller().await;
    let vol = new_volume(&h, "pvc-i1").await;
    fail_next(&h.sim, "CreateSnapshot", "internal-after");
    let snap = h
        .driver
        .controller()
        .await
        .create_snapshot(snap_req("snap-i1", &vol))
        .await
        .expect("CreateSnapshot despite the lost answer")
        .into_inner()
        .snapshot
        .unwrap();
    assert_eq!(faults_injected(&h.sim), 1, "the fault fired");
    assert_eq!(h.sim.calls("CreateSnapshot"), 1, "not sent a second time");
    let named = snapshots_named(&h.sim, "CSIVolumeSnapshotName", "snap-i1").await;
    assert_eq!(named, vec![snap.snapshot_id], "exactly the one snapshot");
}

#[tokio::test]
async fn create_snapshot_failed_before_it_was_made_is_sent_again() {
    let h = controller().await;
    let vol = new_volume(&h, "pvc-i2").await;
    fail_next(&h.sim, "CreateSnapshot", "internal");
    let snap = h
        .driver
        .controller()
        .await
        .create_snapshot(snap_req("snap-i2", &vol))
        .await
        .expect("CreateSnapshot after a 500")
        .into_inner()
        .snapshot
        .unwrap();
    assert_eq!(faults_injected(&h.sim), 1);
    assert_eq!(
        h.sim.calls("CreateSnapshot"),
        2,
        "looked up, found nothing, sent again"
    );
    let named = snapshots_named(&h.sim, "CSIVolumeSnapshotName", "snap-i2").await;
    assert_eq!(named, vec![snap.snapshot_id]);
}

#[tokio::test]
async fn group_snapshot_answered_500_after_it_was_made_makes_one_set() {
    let h = controller().await;
    let mut c = h.driver.controller().await;
    let node = h.sim.run_instance("us-east-1a").await;
    let a = new_volume(&h, "pvc-ia").await;
    let b = new_volume(&h, "pvc-ib").await;
    for v in [&a, &b] {
        c.controller_publish_volume(publish_req(v, &node))
            .await
            .expect("publish");
    }
    fail_next(&h.sim, "CreateSnapshots", "internal-after");
    let mut g = GroupControllerClient::new(h.driver.channel().await);
    let group = g
        .create_volume_group_snapshot(csi::CreateVolumeGroupSnapshotRequest {
            name: "group-i".into(),
            source_volume_ids: vec![a.clone(), b.clone()],
            ..Default::default()
        })
        .await
        .expect("CreateVolumeGroupSnapshot despite the lost answer")
        .into_inner()
        .group_snapshot
        .unwrap();
    assert_eq!(faults_injected(&h.sim), 1);
    assert_eq!(h.sim.calls("CreateSnapshots"), 1, "not sent a second time");
    let mut got: Vec<String> = group
        .snapshots
        .iter()
        .map(|s| s.snapshot_id.clone())
        .collect();
    let mut named = snapshots_named(&h.sim, "CSIVolumeGroupSnapshotName", "group-i").await;
    got.sort();
    named.sort();
    assert_eq!(got.len(), 2);
    assert_eq!(named, got, "exactly one snapshot per volume");
}

#[tokio::test]
async fn attach_answered_500_after_it_was_done_is_not_sent_again() {
    let h = controller().await;
    let node = h.sim.run_instance("us-east-1a").await;
    let vol = new_volume(&h, "pvc-i3").await;
    fail_next(&h.sim, "AttachVolume", "internal-after");
    h.driver
        .controller()
        .await
        .controller_publish_volume(publish_req(&vol, &node))
        .await
        .expect("publish despite the lost answer");
    assert_eq!(faults_injected(&h.sim), 1);
    assert_eq!(h.sim.calls("AttachVolume"), 1, "state check, not a resend");
    assert_eq!(
        attachments(&h.sim, &vol).await,
        vec![(node, "attached".to_string())]
    );
}

#[tokio::test]
async fn detach_answered_500_after_it_was_done_is_not_sent_again() {
    let h = controller().await;
    let mut c = h.driver.controller().await;
    let node = h.sim.run_instance("us-east-1a").await;
    let vol = new_volume(&h, "pvc-i4").await;
    c.controller_publish_volume(publish_req(&vol, &node))
        .await
        .expect("publish");
    fail_next(&h.sim, "DetachVolume", "internal-after");
    c.controller_unpublish_volume(unpublish_req(&vol, &node))
        .await
        .expect("unpublish despite the lost answer");
    assert_eq!(faults_injected(&h.sim), 1);
    assert_eq!(h.sim.calls("DetachVolume"), 1, "state check, not a resend");
    assert!(attachments(&h.sim, &vol).await.is_empty());
}

#[tokio::test]
async fn delete_volume_answered_500_after_it_was_done_is_not_sent_again() {
    let h = controller().await;
    let vol = new_volume(&h, "pvc-i5").await;
    fail_next(&h.sim, "DeleteVolume", "internal-after");
    h.driver
        .controller()
        .await
        .delete_volume(csi::DeleteVolumeRequest {
            volume_id: vol.clone(),
            ..Default::default()
        })
        .await
        .expect("delete despite the lost answer");
    assert_eq!(faults_injected(&h.sim), 1);
    assert_eq!(h.sim.calls("DeleteVolume"), 1, "state check, not a resend");
    assert!(h.sim.all_volumes().await.is_empty());
}

#[tokio::test]
async fn delete_snapshot_answered_500_after_it_was_done_is_not_sent_again() {
    let h = controller().await;
    let mut c = h.driver.controller().await;
    let vol = new_volume(&h, "pvc-i6").await;
    let snap = c
        .create_snapshot(snap_req("snap-i6", &vol))
        .await
        .expect("snapshot")
        .into_inner()
        .snapshot
        .unwrap();
    fail_next(&h.sim, "DeleteSnapshot", "internal-after");
    c.delete_snapshot(csi::DeleteSnapshotRequest {
        snapshot_id: snap.snapshot_id,
        ..Default::default()
    })
    .await
    .expect("delete despite the lost answer");
    assert_eq!(faults_injected(&h.sim), 1);
    assert_eq!(
        h.sim.calls("DeleteSnapshot"),
        1,
        "state check, not a resend"
    );
    assert!(
        snapshots_named(&h.sim, "CSIVolumeSnapshotName", "snap-i6")
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn modify_answered_500_after_it_was_accepted_is_not_sent_again() {
    let h = controller().await;
    let vol = new_volume(&h, "pvc-i7").await;
    fail_next(&h.sim, "ModifyVolume", "internal-after");
    h.driver
        .controller()
        .await
        .controller_expand_volume(csi::ControllerExpandVolumeRequest {
            volume_id: vol.clone(),
            capacity_range: Some(csi::CapacityRange {
                required_bytes: 5 << 30,
                limit_bytes: 0,
            }),
            ..Default::default()
        })
        .await
        .expect("expand despite the lost answer");
    assert_eq!(faults_injected(&h.sim), 1);
    assert_eq!(h.sim.calls("ModifyVolume"), 1, "state check, not a resend");
    let size = h
        .sim
        .sdk()
        .describe_volumes()
        .volume_ids(&vol)
        .send()
        .await
        .unwrap()
        .volumes()[0]
        .size();
    assert_eq!(size, Some(5));
}
