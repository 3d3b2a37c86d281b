//! The CSI behaviours csi-sanity checks, for the capabilities we advertise,
//! in Rust against the EC2 emulator and (as root) real devices: argument
//! validation before anything else, NotFound/AlreadyExists/Aborted codes,
//! exact sizes, idempotency by repeating calls, paths created and removed
//! the way csi-sanity stats them, and teardown in its order.
//! (../shared/CONFORMANCE.md lists them; tests/csi-sanity.sh runs the real
//! suite when it is installed.)

mod support;

use std::collections::HashMap;
use std::path::Path;

use ebs_csi_driver::csi;
use ebs_csi_driver::csi::volume_capability::access_mode::Mode;
use support::csi::*;
use support::{Harness, SimOptions, is_root};
use tonic::Code;

async fn all_mode() -> Harness {
    let h = Harness::start_with("all", SimOptions::default(), vec![]).await;
    h.wait_ready().await;
    h
}

fn assert_code<T: std::fmt::Debug>(
    what: &str,
    got: Result<tonic::Response<T>, tonic::Status>,
    code: Code,
) {
    match got {
        Err(s) if s.code() == code => {}
        other => panic!("{what}: expected {code:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn missing_fields_are_invalid_argument_before_anything_else() {
    let h = all_mode().await;
    let mut c = h.driver.controller().await;
    let mut n = h.driver.node().await;
    let cap = mount_cap("ext4");
    assert_code(
        "CreateVolume no name",
        c.create_volume(csi::CreateVolumeRequest {
            volume_capabilities: vec![cap.clone()],
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
    );
    assert_code(
        "CreateVolume no caps",
        c.create_volume(csi::CreateVolumeRequest {
            name: "x".into(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
    );
    assert_code(
        "DeleteVolume no id",
        c.delete_volume(csi::DeleteVolumeRequest::default()).await,
        Code::InvalidArgument,
    );
    assert_code(
        "Publish no volume",
        c.controller_publish_volume(csi::ControllerPublishVolumeRequest {
            node_id: "i-1".into(),
            volume_capability: Some(cap.clone()),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
    );
    assert_code(
        "Publish no node",
        c.controller_publish_volume(csi::ControllerPublishVolumeRequest {
            volume_id: "vol-1".into(),
            volume_capability: Some(cap.clone()),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
    );
    assert_code(
        "Publish no cap",
        c.controller_publish_volume(csi::ControllerPublishVolumeRequest {
            volume_id: "vol-1".into(),
            node_id: "i-1".into(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
    );
    assert_code(
        "Unpublish no volume",
        c.controller_unpublish_volume(csi::ControllerUnpublishVolumeRequest {
            node_id: "i-1".into(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
    );
    assert_code(
        "Validate no volume",
        c.validate_volume_capabilities(csi::ValidateVolumeCapabilitiesRequest {
            volume_capabilities: vec![cap.clone()],
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
    );
    assert_code(
        "Validate no caps",
        c.validate_volume_capabilities(csi::ValidateVolumeCapabilitiesRequest {
            volume_id: "vol-1".into(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
    );
    assert_code(
        "CreateSnapshot no name",
        c.create_snapshot(csi::CreateSnapshotRequest {
            source_volume_id: "vol-1".into(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
    );
    assert_code(
        "CreateSnapshot no source",
        c.create_snapshot(csi::CreateSnapshotRequest {
            name: "s".into(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
    );
    assert_code(
        "DeleteSnapshot no id",
        c.delete_snapshot(csi::DeleteSnapshotRequest::default())
            .await,
        Code::InvalidArgument,
    );
    assert_code(
        "Expand no volume",
        c.controller_expand_volume(csi::ControllerExpandVolumeRequest {
            capacity_range: Some(csi::CapacityRange {
                required_bytes: GIB,
                limit_bytes: 0,
            }),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
    );
    assert_code(
        "Expand no range",
        c.controller_expand_volume(csi::ControllerExpandVolumeRequest {
            volume_id: "vol-1".into(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
    );
    assert_code(
        "Modify no volume",
        c.controller_modify_volume(csi::ControllerModifyVolumeRequest::default())
            .await,
        Code::InvalidArgument,
    );

    assert_code(
        "NodeStage no volume",
        n.node_stage_volume(csi::NodeStageVolumeRequest {
            staging_target_path: "/tmp/x".into(),
            volume_capability: Some(cap.clone()),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
    );
    assert_code(
        "NodeStage no path",
        n.node_stage_volume(csi::NodeStageVolumeRequest {
            volume_id: "vol-1".into(),
            volume_capability: Some(cap.clone()),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
    );
    assert_code(
        "NodeStage no cap",
        n.node_stage_volume(csi::NodeStageVolumeRequest {
            volume_id: "vol-1".into(),
            staging_target_path: "/tmp/x".into(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
    );
    assert_code(
        "NodeUnstage no path",
        n.node_unstage_volume(csi::NodeUnstageVolumeRequest {
            volume_id: "vol-1".into(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
    );
    assert_code(
        "NodePublish no target",
        n.node_publish_volume(csi::NodePublishVolumeRequest {
            volume_id: "vol-1".into(),
            staging_target_path: "/tmp/x".into(),
            volume_capability: Some(cap.clone()),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
    );
    assert_code(
        "NodeUnpublish no target",
        n.node_unpublish_volume(csi::NodeUnpublishVolumeRequest {
            volume_id: "vol-1".into(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
    );
    assert_code(
        "NodeExpand no volume",
        n.node_expand_volume(csi::NodeExpandVolumeRequest {
            volume_path: "/tmp/x".into(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
    );
    assert_code(
        "NodeGetVolumeStats no path",
        n.node_get_volume_stats(csi::NodeGetVolumeStatsRequest {
            volume_id: "vol-1".into(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
    );
    assert_eq!(
        h.sim.get("counters")["total_calls"].as_u64().unwrap_or(0),
        1,
        "only start-up's DescribeAvailabilityZones reached EC2"
    );
}

#[tokio::test]
async fn sizes_names_and_idempotency() {
    let h = all_mode().await;
    let mut c = h.driver.controller().await;
    let exact = |name: &str, gib: i64| csi::CreateVolumeRequest {
        capacity_range: Some(csi::CapacityRange {
            required_bytes: gib * GIB,
            limit_bytes: gib * GIB,
        }),
        ..create_req(name, gib, HashMap::new())
    };
    let v = c
        .create_volume(exact("sanity-size", 10))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(
        v.capacity_bytes,
        10 * GIB,
        "required = limit = 10 GiB gives exactly that"
    );
    let again = c
        .create_volume(exact("sanity-size", 10))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(again.volume_id, v.volume_id);
    assert_code(
        "same name 2x size",
        c.create_volume(exact("sanity-size", 20)).await,
        Code::AlreadyExists,
    );
    let long = "n".repeat(128);
    let lv = c
        .create_volume(exact(&long, 1))
        .await
        .expect("128-character name")
        .into_inner()
        .volume
        .unwrap();

    let count = |c: &mut ebs_csi_driver::csi::controller_client::ControllerClient<_>| {
        let mut c = c.clone();
        async move {
            c.list_volumes(csi::ListVolumesRequest::default())
                .await
                .unwrap()
                .into_inner()
                .entries
                .len()
        }
    };
    let before = count(&mut c).await;
    let s = c
        .create_volume(create_req("sanity", 1, HashMap::new()))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(count(&mut c).await, before + 1);
    c.delete_volume(csi::DeleteVolumeRequest {
        volume_id: s.volume_id,
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(count(&mut c).await, before);
    assert_code(
        "bad token",
        c.list_volumes(csi::ListVolumesRequest {
            starting_token: "x".into(),
            ..Default::default()
        })
        .await,
        Code::Aborted,
    );

    let expanded = c
        .controller_expand_volume(csi::ControllerExpandVolumeRequest {
            volume_id: v.volume_id.clone(),
            capacity_range: Some(csi::CapacityRange {
                required_bytes: 11 * GIB,
                limit_bytes: 0,
            }),
            volume_capability: Some(mount_cap("ext4")),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        expanded.capacity_bytes,
        11 * GIB,
        "exactly the requested size"
    );

    assert_code(
        "modify unsupported",
        c.controller_modify_volume(csi::ControllerModifyVolumeRequest {
            volume_id: v.volume_id.clone(),
            mutable_parameters: params(&[("foo", "bar")]),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
    );
    c.delete_volume(csi::DeleteVolumeRequest {
        volume_id: "fake-vol-id".into(),
        ..Default::default()
    })
    .await
    .expect("fake id OK");
    c.delete_snapshot(csi::DeleteSnapshotRequest {
        snapshot_id: "snap-0000000000000dead".into(),
        ..Default::default()
    })
    .await
    .expect("unknown snapshot OK");
    for id in [v.volume_id, lv.volume_id] {
        c.delete_volume(csi::DeleteVolumeRequest {
            volume_id: id,
            ..Default::default()
        })
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn unknown_objects_are_not_found() {
    let h = all_mode().await;
    let mut c = h.driver.controller().await;
    let mut n = h.driver.node().await;
    let ghost = "vol-0000000000000dead";
    let node_id = n
        .node_get_info(csi::NodeGetInfoRequest {})
        .await
        .unwrap()
        .into_inner()
        .node_id;
    assert_code(
        "publish",
        c.controller_publish_volume(publish_req(ghost, &node_id))
            .await,
        Code::NotFound,
    );
    assert_code(
        "validate",
        c.validate_volume_capabilities(csi::ValidateVolumeCapabilitiesRequest {
            volume_id: ghost.into(),
            volume_capabilities: vec![mount_cap("")],
            ..Default::default()
        })
        .await,
        Code::NotFound,
    );
    assert_code(
        "stats",
        n.node_get_volume_stats(csi::NodeGetVolumeStatsRequest {
            volume_id: ghost.into(),
            volume_path: "some/path".into(),
            ..Default::default()
        })
        .await,
        Code::NotFound,
    );
    assert_code(
        "node expand",
        n.node_expand_volume(csi::NodeExpandVolumeRequest {
            volume_id: ghost.into(),
            volume_path: "/tmp/nowhere".into(),
            capacity_range: Some(csi::CapacityRange {
                required_bytes: GIB,
                limit_bytes: 0,
            }),
            ..Default::default()
        })
        .await,
        Code::NotFound,
    );
    let from_ghost = csi::CreateVolumeRequest {
        volume_content_source: Some(csi::VolumeContentSource {
            r#type: Some(csi::volume_content_source::Type::Snapshot(
                csi::volume_content_source::SnapshotSource {
                    snapshot_id: "snap-0000000000000dead".into(),
                },
            )),
        }),
        ..create_req("from-ghost", 1, HashMap::new())
    };
    assert_code(
        "create from unknown snapshot",
        c.create_volume(from_ghost).await,
        Code::NotFound,
    );
    let listed = c
        .list_snapshots(csi::ListSnapshotsRequest {
            snapshot_id: "snap-0000000000000dead".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        listed.into_inner().entries.is_empty(),
        "unknown ids list empty, not an error"
    );
    let listed = c
        .list_snapshots(csi::ListSnapshotsRequest {
            source_volume_id: ghost.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(listed.into_inner().entries.is_empty());
}

#[tokio::test]
async fn node_info_and_capabilities() {
    let h = all_mode().await;
    let mut n = h.driver.node().await;
    let info = n
        .node_get_info(csi::NodeGetInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.node_id, h.sim.instance_id);
    let topo = info
        .accessible_topology
        .expect("topology is advertised")
        .segments;
    assert_eq!(topo["topology.kubernetes.io/zone"], h.sim.zone);
    assert_eq!(topo["topology.ebs.csi.aws.com/zone"], h.sim.zone);
    // CreateVolume with exactly that topology lands in that zone.
    let mut c = h.driver.controller().await;
    let mut req = create_req("topo", 1, HashMap::new());
    req.accessibility_requirements = Some(csi::TopologyRequirement {
        requisite: vec![csi::Topology {
            segments: topo.clone(),
        }],
        preferred: vec![csi::Topology { segments: topo }],
    });
    let v = c
        .create_volume(req)
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(
        v.accessible_topology[0].segments["topology.kubernetes.io/zone"],
        h.sim.zone
    );
}

/// The node flow as csi-sanity drives it, ten times each, with its stat
/// checks on the target path, then its teardown order.
async fn node_flow(block: bool) {
    if !is_root() {
        eprintln!("SKIP conformance node flow: needs root for loop devices and mounts");
        return;
    }
    let h = all_mode().await;
    let mut c = h.driver.controller().await;
    let mut n = h.driver.node().await;
    let work = tempfile::tempdir().unwrap();
    let staging = work.path().join("staging");
    let mount_dir = work.path().join("mount");
    std::fs::create_dir(&staging).unwrap();
    std::fs::create_dir(&mount_dir).unwrap();
    let target = mount_dir.join("target");
    let cap = if block {
        block_cap(Mode::SingleNodeWriter)
    } else {
        mount_cap("xfs")
    };
    let node_id = n
        .node_get_info(csi::NodeGetInfoRequest {})
        .await
        .unwrap()
        .into_inner()
        .node_id;
    let v = c
        .create_volume(csi::CreateVolumeRequest {
            volume_capabilities: vec![cap.clone()],
            ..create_req("node-flow", 10, HashMap::new())
        })
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();

    let mut context = HashMap::new();
    for _ in 0..10 {
        let mut req = publish_req(&v.volume_id, &node_id);
        req.volume_capability = Some(cap.clone());
        context = c
            .controller_publish_volume(req)
            .await
            .expect("ControllerPublish")
            .into_inner()
            .publish_context;
    }
    let stage = csi::NodeStageVolumeRequest {
        volume_id: v.volume_id.clone(),
        publish_context: context.clone(),
        staging_target_path: staging.display().to_string(),
        volume_capability: Some(cap.clone()),
        volume_context: v.volume_context.clone(),
        ..Default::default()
    };
    let publish = csi::NodePublishVolumeRequest {
        volume_id: v.volume_id.clone(),
        publish_context: context.clone(),
        staging_target_path: staging.display().to_string(),
        target_path: target.display().to_string(),
        volume_capability: Some(cap.clone()),
        volume_context: v.volume_context.clone(),
        ..Default::default()
    };
    assert!(
        !target.exists(),
        "csi-sanity leaves the target to the driver"
    );
    for _ in 0..10 {
        n.node_stage_volume(stage.clone()).await.expect("NodeStage");
    }
    for _ in 0..10 {
        n.node_publish_volume(publish.clone())
            .await
            .expect("NodePublish");
    }
    let meta = std::fs::metadata(&target).expect("target created");
    assert_eq!(
        meta.is_dir(),
        !block,
        "a directory for mount access, a file for block"
    );

    let stats = n
        .node_get_volume_stats(csi::NodeGetVolumeStatsRequest {
            volume_id: v.volume_id.clone(),
            volume_path: target.display().to_string(),
            ..Default::default()
        })
        .await
        .expect("stats")
        .into_inner();
    assert!(!stats.usage.is_empty());
    if !block {
        let grown = c
            .controller_expand_volume(csi::ControllerExpandVolumeRequest {
                volume_id: v.volume_id.clone(),
                capacity_range: Some(csi::CapacityRange {
                    required_bytes: 11 * GIB,
                    limit_bytes: 0,
                }),
                volume_capability: Some(cap.clone()),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(grown.capacity_bytes, 11 * GIB);
        n.node_expand_volume(csi::NodeExpandVolumeRequest {
            volume_id: v.volume_id.clone(),
            volume_path: target.display().to_string(),
            capacity_range: Some(csi::CapacityRange {
                required_bytes: 11 * GIB,
                limit_bytes: 0,
            }),
            staging_target_path: staging.display().to_string(),
            volume_capability: Some(cap.clone()),
            ..Default::default()
        })
        .await
        .expect("NodeExpand after ControllerExpand (xfs grows online)");
    }

    // Teardown in csi-sanity's order, twice: the second round finds nothing
    // mounted and paths gone, and must still say OK.
    for round in 0..2 {
        n.node_unpublish_volume(csi::NodeUnpublishVolumeRequest {
            volume_id: v.volume_id.clone(),
            target_path: target.display().to_string(),
        })
        .await
        .unwrap_or_else(|e| panic!("NodeUnpublish round {round}: {e}"));
        assert!(
            !Path::new(&target).exists(),
            "NodeUnpublish removes the target"
        );
        n.node_unstage_volume(csi::NodeUnstageVolumeRequest {
            volume_id: v.volume_id.clone(),
            staging_target_path: staging.display().to_string(),
        })
        .await
        .unwrap_or_else(|e| panic!("NodeUnstage round {round}: {e}"));
        c.controller_unpublish_volume(unpublish_req(&v.volume_id, &node_id))
            .await
            .expect("ControllerUnpublish");
        c.delete_volume(csi::DeleteVolumeRequest {
            volume_id: v.volume_id.clone(),
            ..Default::default()
        })
        .await
        .expect("DeleteVolume");
    }
    assert!(h.sim.all_volumes().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn node_flow_mount() {
    node_flow(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn node_flow_block() {
    node_flow(true).await;
}
