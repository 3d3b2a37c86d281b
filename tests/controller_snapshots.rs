//! Snapshots, group snapshots, expansion and modification against the EC2
//! emulator.

mod support;

use std::time::{Duration, Instant};

use ebs_csi_driver::csi;
use support::csi::*;
use support::{Harness, SimOptions};
use tonic::Code;

async fn controller(delays: &'static str) -> Harness {
    let h = Harness::start_with(
        "controller",
        SimOptions {
            delays,
            ..SimOptions::default()
        },
        vec![],
    )
    .await;
    h.wait_ready().await;
    h
}

fn snap_req(
    name: &str,
    vol: &str,
    params: std::collections::HashMap<String, String>,
) -> csi::CreateSnapshotRequest {
    csi::CreateSnapshotRequest {
        name: name.into(),
        source_volume_id: vol.into(),
        parameters: params,
        ..Default::default()
    }
}

async fn new_volume(h: &Harness, name: &str, gib: i64) -> String {
    let mut c = h.driver.controller().await;
    c.create_volume(create_req(name, gib, params(&[])))
        .await
        .expect("create")
        .into_inner()
        .volume
        .unwrap()
        .volume_id
}

#[tokio::test]
async fn snapshot_life_and_idempotency() {
    let h = controller("realistic").await;
    let mut c = h.driver.controller().await;
    let vol = new_volume(&h, "pvc-s1", 3).await;
    let other = new_volume(&h, "pvc-s2", 3).await;

    let mut req = snap_req(
        "snap-a",
        &vol,
        params(&[
            ("tagSpecification_1", "owner={{ .VolumeSnapshotNamespace }}"),
            ("csi.storage.k8s.io/volumesnapshot/namespace", "db"),
        ]),
    );
    let first = c
        .create_snapshot(req.clone())
        .await
        .expect("create snapshot")
        .into_inner()
        .snapshot
        .unwrap();
    assert!(first.snapshot_id.starts_with("snap-"));
    assert_eq!(first.source_volume_id, vol);
    assert_eq!(first.size_bytes, 3 * GIB);
    assert!(first.creation_time.is_some());
    assert!(
        !first.ready_to_use,
        "pending right after creation (realistic delays)"
    );

    // Polled like the snapshotter does, until ready; always the same id.
    let started = Instant::now();
    loop {
        let again = c
            .create_snapshot(req.clone())
            .await
            .unwrap()
            .into_inner()
            .snapshot
            .unwrap();
        assert_eq!(again.snapshot_id, first.snapshot_id);
        if again.ready_to_use {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "never ready");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    req.source_volume_id = other.clone();
    let err = c.create_snapshot(req).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");

    let err = c
        .create_snapshot(snap_req("snap-b", "vol-0000000000000dead", params(&[])))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = c
        .create_snapshot(snap_req("snap-c", &vol, params(&[("fsrZones", "x")])))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("fsrZones"));

    let tags = h
        .sim
        .sdk()
        .describe_snapshots()
        .snapshot_ids(&first.snapshot_id)
        .send()
        .await
        .unwrap();
    let tags: Vec<_> = tags.snapshots()[0]
        .tags()
        .iter()
        .map(|t| (t.key().unwrap().to_string(), t.value().unwrap().to_string()))
        .collect();
    for want in [
        ("CSIVolumeSnapshotName", "snap-a"),
        ("ebs.csi.aws.com/cluster", "true"),
        ("owner", "db"),
    ] {
        assert!(
            tags.contains(&(want.0.into(), want.1.into())),
            "{want:?} in {tags:?}"
        );
    }

    let got = c
        .get_snapshot(csi::GetSnapshotRequest {
            snapshot_id: first.snapshot_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(got.into_inner().snapshot.unwrap().ready_to_use);

    let del = |id: &str| csi::DeleteSnapshotRequest {
        snapshot_id: id.into(),
        ..Default::default()
    };
    c.delete_snapshot(del(&first.snapshot_id))
        .await
        .expect("delete");
    c.delete_snapshot(del(&first.snapshot_id))
        .await
        .expect("delete again");
    c.delete_snapshot(del("snap-0000000000000dead"))
        .await
        .expect("unknown");
    assert_eq!(
        c.delete_snapshot(del("")).await.unwrap_err().code(),
        Code::InvalidArgument
    );
}

#[tokio::test]
async fn list_snapshots_by_id_volume_and_pages() {
    let h = controller("fast").await;
    let mut c = h.driver.controller().await;
    let vol = new_volume(&h, "pvc-ls", 1).await;
    let other = new_volume(&h, "pvc-ls2", 1).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let s = c
            .create_snapshot(snap_req(&format!("ls-{i}"), &vol, params(&[])))
            .await
            .unwrap();
        ids.push(s.into_inner().snapshot.unwrap().snapshot_id);
    }
    c.create_snapshot(snap_req("ls-other", &other, params(&[])))
        .await
        .unwrap();

    let list = |req: csi::ListSnapshotsRequest| {
        let mut c = c.clone();
        async move { c.list_snapshots(req).await }
    };
    let by_id = list(csi::ListSnapshotsRequest {
        snapshot_id: ids[3].clone(),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner();
    assert_eq!(by_id.entries.len(), 1);
    let unknown = list(csi::ListSnapshotsRequest {
        snapshot_id: "snap-0000000000000dead".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(unknown.into_inner().entries.is_empty());
    let by_vol = list(csi::ListSnapshotsRequest {
        source_volume_id: vol.clone(),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner();
    assert_eq!(by_vol.entries.len(), 5);
    let all = list(csi::ListSnapshotsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.entries.len(), 6);

    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = list(csi::ListSnapshotsRequest {
            max_entries: 2,
            starting_token: token.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
        assert!(page.entries.len() <= 2);
        seen.extend(
            page.entries
                .iter()
                .map(|e| e.snapshot.as_ref().unwrap().snapshot_id.clone()),
        );
        if page.next_token.is_empty() {
            break;
        }
        token = page.next_token;
    }
    assert_eq!(seen.len(), 6);
    let err = list(csi::ListSnapshotsRequest {
        starting_token: "bogus".into(),
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::Aborted);
}

#[tokio::test]
async fn fast_snapshot_restore_and_refused_lock_delete_the_snapshot() {
    let h = controller("fast").await;
    let mut c = h.driver.controller().await;
    let vol = new_volume(&h, "pvc-fsr", 1).await;
    let ok = c
        .create_snapshot(snap_req(
            "fsr-ok",
            &vol,
            params(&[("fastSnapshotRestoreAvailabilityZones", "us-east-1a")]),
        ))
        .await
        .expect("fsr in a real zone")
        .into_inner()
        .snapshot
        .unwrap();
    assert_eq!(h.sim.calls("EnableFastSnapshotRestores"), 1);
    let fsr = h
        .sim
        .sdk()
        .describe_fast_snapshot_restores()
        .send()
        .await
        .unwrap();
    assert!(
        fsr.fast_snapshot_restores()
            .iter()
            .any(|f| f.snapshot_id() == Some(ok.snapshot_id.as_str()))
    );

    let before = h.sim.own_snapshots().await.len();
    let err = c
        .create_snapshot(snap_req(
            "fsr-bad",
            &vol,
            params(&[("fastSnapshotRestoreAvailabilityZones", "us-east-1z")]),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("us-east-1z") && err.message().contains("deleted"),
        "{}",
        err.message()
    );
    // The emulator (moto) has no LockSnapshot: the same rule applies.
    let err = c
        .create_snapshot(snap_req(
            "locked",
            &vol,
            params(&[("lockMode", "governance"), ("lockDuration", "1")]),
        ))
        .await
        .unwrap_err();
    assert!(
        err.message().contains("lock") && err.message().contains("deleted"),
        "{}",
        err.message()
    );
    let after = h.sim.own_snapshots().await.len();
    assert_eq!(before, after, "refused snapshots were deleted, not leaked");
}

#[tokio::test]
async fn expand_and_modify_merge_into_one_modification() {
    let h = controller("realistic").await;
    let mut c = h.driver.controller().await;
    let vol = new_volume(&h, "pvc-grow", 10).await;

    let expand = |gib: i64| csi::ControllerExpandVolumeRequest {
        volume_id: vol.clone(),
        capacity_range: Some(csi::CapacityRange {
            required_bytes: gib * GIB,
            limit_bytes: 0,
        }),
        volume_capability: Some(mount_cap("ext4")),
        ..Default::default()
    };
    let modify = csi::ControllerModifyVolumeRequest {
        volume_id: vol.clone(),
        mutable_parameters: params(&[
            ("iops", "4000"),
            ("throughput", "250"),
            ("tagSpecification_1", "tier=gold"),
        ]),
        ..Default::default()
    };
    h.sim.reset_counters();
    let (mut c1, mut c2) = (c.clone(), c.clone());
    let e = expand(12);
    let m = modify.clone();
    let (grown, modified) = tokio::join!(
        c1.controller_expand_volume(e),
        c2.controller_modify_volume(m)
    );
    let grown = grown.expect("expand").into_inner();
    modified.expect("modify");
    assert_eq!(grown.capacity_bytes, 12 * GIB);
    assert!(grown.node_expansion_required);
    assert_eq!(h.sim.calls("ModifyVolume"), 1, "expand and modify merged");
    let v = &h
        .sim
        .sdk()
        .describe_volumes()
        .volume_ids(&vol)
        .send()
        .await
        .unwrap()
        .volumes()[0]
        .clone();
    assert_eq!(
        (v.size(), v.iops(), v.throughput()),
        (Some(12), Some(4000), Some(250))
    );
    assert!(
        v.tags()
            .iter()
            .any(|t| t.key() == Some("tier") && t.value() == Some("gold"))
    );

    // A second expand while the first modification is still optimizing
    // (realistic: 20 s) is waited out, not failed.
    let again = c
        .controller_expand_volume(expand(14))
        .await
        .expect("expand during optimizing")
        .into_inner();
    assert_eq!(again.capacity_bytes, 14 * GIB);
    // Smaller than it is: OK, current size.
    let same = c
        .controller_expand_volume(expand(5))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(same.capacity_bytes, 14 * GIB);
    let mut block = expand(14);
    block.volume_capability = Some(block_cap(
        csi::volume_capability::access_mode::Mode::SingleNodeWriter,
    ));
    assert!(
        !c.controller_expand_volume(block)
            .await
            .unwrap()
            .into_inner()
            .node_expansion_required
    );

    let bad = csi::ControllerModifyVolumeRequest {
        volume_id: vol.clone(),
        mutable_parameters: params(&[("encrypted", "true")]),
        ..Default::default()
    };
    assert_eq!(
        c.controller_modify_volume(bad).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let mut unknown = expand(20);
    unknown.volume_id = "vol-0000000000000dead".into();
    assert_eq!(
        c.controller_expand_volume(unknown)
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
}

#[tokio::test]
async fn group_snapshots_need_one_instance() {
    let h = controller("fast").await;
    let mut c = h.driver.controller().await;
    let mut g = ebs_csi_driver::csi::group_controller_client::GroupControllerClient::new(
        h.driver.channel().await,
    );
    let a = new_volume(&h, "pvc-ga", 1).await;
    let b = new_volume(&h, "pvc-gb", 1).await;
    let node = h.sim.run_instance("us-east-1a").await;
    let other = h.sim.run_instance("us-east-1a").await;
    c.controller_publish_volume(publish_req(&a, &node))
        .await
        .unwrap();
    c.controller_publish_volume(publish_req(&b, &other))
        .await
        .unwrap();

    let req = csi::CreateVolumeGroupSnapshotRequest {
        name: "group-1".into(),
        source_volume_ids: vec![a.clone(), b.clone()],
        ..Default::default()
    };
    let err = g
        .create_volume_group_snapshot(req.clone())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains(&node) && err.message().contains(&other),
        "{}",
        err.message()
    );

    c.controller_unpublish_volume(unpublish_req(&b, &other))
        .await
        .unwrap();
    c.controller_publish_volume(publish_req(&b, &node))
        .await
        .unwrap();
    let group = g
        .create_volume_group_snapshot(req.clone())
        .await
        .expect("group")
        .into_inner()
        .group_snapshot
        .unwrap();
    assert_eq!(group.snapshots.len(), 2);
    let again = g
        .create_volume_group_snapshot(req)
        .await
        .unwrap()
        .into_inner()
        .group_snapshot
        .unwrap();
    assert_eq!(again.group_snapshot_id, group.group_snapshot_id);
    let ids: Vec<String> = group
        .snapshots
        .iter()
        .map(|s| s.snapshot_id.clone())
        .collect();
    let got = g
        .get_volume_group_snapshot(csi::GetVolumeGroupSnapshotRequest {
            group_snapshot_id: group.group_snapshot_id.clone(),
            snapshot_ids: ids.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.group_snapshot.unwrap().snapshots.len(), 2);
    g.delete_volume_group_snapshot(csi::DeleteVolumeGroupSnapshotRequest {
        group_snapshot_id: group.group_snapshot_id.clone(),
        snapshot_ids: ids.clone(),
        ..Default::default()
    })
    .await
    .expect("delete group");
    for id in ids {
        let listed = c
            .list_snapshots(csi::ListSnapshotsRequest {
                snapshot_id: id,
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(listed.into_inner().entries.is_empty());
    }
}
