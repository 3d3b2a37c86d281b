//! Controller volume RPCs against the EC2 emulator: placement, parameters,
//! tags, idempotency and deletion.

mod support;

use std::collections::HashMap;

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

fn tags_of(v: &aws_sdk_ec2::types::Volume) -> HashMap<String, String> {
    v.tags()
        .iter()
        .map(|t| {
            (
                t.key().unwrap().to_string(),
                t.value().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn creates_the_users_storage_class_volume_with_tags() {
    let h = controller("realistic").await;
    let mut c = h.driver.controller().await;
    let mut req = create_req("pvc-1111", 10, user_storage_class());
    req.parameters.extend(params(&[
        ("csi.storage.k8s.io/pvc/name", "data-mysql-0"),
        ("csi.storage.k8s.io/pvc/namespace", "db"),
        ("csi.storage.k8s.io/pv/name", "pvc-1111"),
        ("tagSpecification_1", "app={{ .PVCNamespace }}-mysql"),
    ]));
    req.accessibility_requirements = Some(zone_requirement(
        "topology.kubernetes.io/zone",
        &["us-east-1b", "us-east-1c"],
        &["us-east-1c"],
    ));
    let vol = c
        .create_volume(req)
        .await
        .expect("create")
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(vol.capacity_bytes, 10 * GIB);
    assert!(vol.volume_id.starts_with("vol-"));
    assert_eq!(
        vol.accessible_topology[0].segments["topology.kubernetes.io/zone"], "us-east-1c",
        "preferred zone first"
    );

    let ec2 = h.sim.all_volumes().await;
    assert_eq!(ec2.len(), 1);
    let v = &ec2[0];
    assert_eq!(v.volume_id(), Some(vol.volume_id.as_str()));
    assert_eq!(v.state().map(|s| s.as_str()), Some("available"));
    assert_eq!(v.volume_type().map(|t| t.as_str()), Some("gp3"));
    assert_eq!(
        (v.iops(), v.throughput(), v.encrypted()),
        (Some(3000), Some(125), Some(true))
    );
    let tags = tags_of(v);
    for (k, want) in [
        ("CSIVolumeName", "pvc-1111"),
        ("ebs.csi.aws.com/cluster", "true"),
        ("kubernetes.io/created-for/pvc/name", "data-mysql-0"),
        ("kubernetes.io/created-for/pvc/namespace", "db"),
        ("kubernetes.io/created-for/pv/name", "pvc-1111"),
        ("app", "db-mysql"),
    ] {
        assert_eq!(
            tags.get(k).map(String::as_str),
            Some(want),
            "tag {k} in {tags:?}"
        );
    }
}

#[tokio::test]
async fn same_name_is_idempotent_and_different_params_already_exist() {
    let h = controller("fast").await;
    let mut c = h.driver.controller().await;
    let first = c
        .create_volume(create_req("pvc-idem", 5, params(&[])))
        .await
        .unwrap()
        .into_inner();
    let again = c
        .create_volume(create_req("pvc-idem", 5, params(&[])))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        first.volume.unwrap().volume_id,
        again.volume.unwrap().volume_id
    );

    let err = c
        .create_volume(create_req("pvc-idem", 6, params(&[])))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    assert!(err.message().contains("size"), "{}", err.message());
    let err = c
        .create_volume(create_req(
            "pvc-idem",
            5,
            params(&[("type", "io2"), ("iops", "1000")]),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert!(err.message().contains("type gp3"), "{}", err.message());
    assert_eq!(h.sim.all_volumes().await.len(), 1, "no second volume");
}

#[tokio::test]
async fn create_accepts_mutable_parameters() {
    let h = controller("fast").await;
    let mut c = h.driver.controller().await;
    let mut req = create_req("pvc-vac", 10, params(&[("type", "gp3")]));
    // A VolumeAttributesClass named at creation: its values win.
    req.mutable_parameters = params(&[
        ("iops", "5000"),
        ("throughput", "300"),
        ("tagSpecification_1", "class=fast"),
    ]);
    c.create_volume(req)
        .await
        .expect("create with mutable parameters");
    let v = &h.sim.all_volumes().await[0];
    assert_eq!((v.iops(), v.throughput()), (Some(5000), Some(300)));
    assert_eq!(tags_of(v).get("class").map(String::as_str), Some("fast"));
    let mut bad = create_req("pvc-vac2", 10, params(&[]));
    bad.mutable_parameters = params(&[("size", "1")]);
    let err = c.create_volume(bad).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("\"size\""), "{}", err.message());
}

#[tokio::test]
async fn bad_requests_name_the_bad_value() {
    let h = controller("fast").await;
    let mut c = h.driver.controller().await;
    let cases: Vec<(csi::CreateVolumeRequest, Code, &str)> = vec![
        (
            create_req("", 1, params(&[])),
            Code::InvalidArgument,
            "name",
        ),
        (
            create_req("a", 1, params(&[("tpye", "gp3")])),
            Code::InvalidArgument,
            "tpye",
        ),
        (
            create_req("b", 1, params(&[("type", "gp7")])),
            Code::InvalidArgument,
            "gp7",
        ),
        (
            // Above the per-GiB limit where capping cannot apply (the cap
            // would fall below gp3's baseline): EC2 would refuse it.
            create_req("c", 4, params(&[("type", "gp3"), ("iops", "4000")])),
            Code::InvalidArgument,
            "500 IOPS per GiB",
        ),
        (
            create_req("d", 10, params(&[("type", "sc1")])),
            Code::OutOfRange,
            "125..=16384",
        ),
        (
            create_req("e", 10, params(&[("throughput", "500"), ("type", "gp2")])),
            Code::InvalidArgument,
            "only valid for gp3",
        ),
        (
            csi::CreateVolumeRequest {
                volume_capabilities: vec![],
                ..create_req("f", 1, params(&[]))
            },
            Code::InvalidArgument,
            "volume_capabilities",
        ),
        (
            csi::CreateVolumeRequest {
                capacity_range: Some(csi::CapacityRange {
                    required_bytes: 2 * GIB,
                    limit_bytes: GIB,
                }),
                ..create_req("g", 1, params(&[]))
            },
            Code::InvalidArgument,
            "exceeds limit_bytes",
        ),
    ];
    for (req, code, needle) in cases {
        let name = req.name.clone();
        let err = c.create_volume(req).await.expect_err(&name);
        assert_eq!(err.code(), code, "{name}: {err:?}");
        assert!(
            err.message().contains(needle),
            "{name}: {:?} lacks {needle:?}",
            err.message()
        );
    }
    assert!(
        h.sim.all_volumes().await.is_empty(),
        "nothing created by bad requests"
    );

    let missing_snapshot = csi::CreateVolumeRequest {
        volume_content_source: Some(csi::VolumeContentSource {
            r#type: Some(csi::volume_content_source::Type::Snapshot(
                csi::volume_content_source::SnapshotSource {
                    snapshot_id: "snap-0123456789abcdef0".into(),
                },
            )),
        }),
        ..create_req("from-snap", 1, params(&[]))
    };
    let err = c.create_volume(missing_snapshot).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains("snap-0123456789abcdef0"));
}

#[tokio::test]
async fn zone_defaults_and_topology_keys() {
    let h = controller("fast").await;
    let mut c = h.driver.controller().await;
    // No topology, no own zone: the region's first available zone.
    let v = c
        .create_volume(create_req("pvc-z1", 1, params(&[])))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(
        v.accessible_topology[0].segments["topology.kubernetes.io/zone"],
        "us-east-1a"
    );
    // The reference driver's own key is accepted too.
    let mut req = create_req("pvc-z2", 1, params(&[]));
    req.accessibility_requirements = Some(zone_requirement(
        "topology.ebs.csi.aws.com/zone",
        &["us-east-1d"],
        &[],
    ));
    let v = c
        .create_volume(req)
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(
        v.accessible_topology[0].segments["topology.kubernetes.io/zone"],
        "us-east-1d"
    );
    // Default size when no capacity range is given.
    let mut req = create_req("pvc-z3", 1, params(&[]));
    req.capacity_range = None;
    let v = c
        .create_volume(req)
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(v.capacity_bytes, 100 * GIB);
}

#[tokio::test]
async fn delete_is_idempotent_and_refuses_attached_volumes() {
    let h = controller("fast").await;
    let mut c = h.driver.controller().await;
    let vol = c
        .create_volume(create_req("pvc-del", 1, params(&[])))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    let node = h.sim.run_instance(&h.sim.zone).await;
    c.controller_publish_volume(publish_req(&vol.volume_id, &node))
        .await
        .expect("publish");

    let del = |id: &str| csi::DeleteVolumeRequest {
        volume_id: id.into(),
        ..Default::default()
    };
    let err = c.delete_volume(del(&vol.volume_id)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains(&node), "{}", err.message());

    c.controller_unpublish_volume(unpublish_req(&vol.volume_id, &node))
        .await
        .expect("unpublish");
    c.delete_volume(del(&vol.volume_id)).await.expect("delete");
    c.delete_volume(del(&vol.volume_id))
        .await
        .expect("delete again");
    c.delete_volume(del("vol-0000000000000dead"))
        .await
        .expect("unknown id");
    c.delete_volume(del("not-a-volume"))
        .await
        .expect("malformed id");
    let err = c.delete_volume(del("")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(h.sim.all_volumes().await.is_empty());
}

#[tokio::test]
async fn list_and_get_volume() {
    let h = controller("fast").await;
    let mut c = h.driver.controller().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let v = c
            .create_volume(create_req(&format!("pvc-l{i}"), 1, params(&[])))
            .await
            .unwrap();
        ids.push(v.into_inner().volume.unwrap().volume_id);
    }
    let node = h.sim.run_instance(&h.sim.zone).await;
    c.controller_publish_volume(publish_req(&ids[2], &node))
        .await
        .unwrap();

    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .list_volumes(csi::ListVolumesRequest {
                max_entries: 2,
                starting_token: token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.entries.len() <= 2);
        for e in &page.entries {
            let id = e.volume.as_ref().unwrap().volume_id.clone();
            let published = &e.status.as_ref().unwrap().published_node_ids;
            assert_eq!(
                published.contains(&node),
                id == ids[2],
                "{id}: {published:?}"
            );
            seen.push(id);
        }
        if page.next_token.is_empty() {
            break;
        }
        token = page.next_token;
    }
    let mut want = ids.clone();
    want.sort();
    assert_eq!(seen, want);

    let err = c
        .list_volumes(csi::ListVolumesRequest {
            max_entries: 0,
            starting_token: "garbage".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted);

    let got = c
        .controller_get_volume(csi::ControllerGetVolumeRequest {
            volume_id: ids[2].clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.status.unwrap().published_node_ids, vec![node]);
    let err = c
        .controller_get_volume(csi::ControllerGetVolumeRequest {
            volume_id: "vol-0000000000000dead".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    let err = c
        .validate_volume_capabilities(csi::ValidateVolumeCapabilitiesRequest {
            volume_id: "vol-0000000000000dead".into(),
            volume_capabilities: vec![mount_cap("ext4")],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let ok = c
        .validate_volume_capabilities(csi::ValidateVolumeCapabilitiesRequest {
            volume_id: ids[0].clone(),
            volume_capabilities: vec![mount_cap("xfs")],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(ok.confirmed.is_some());
    let no = c
        .validate_volume_capabilities(csi::ValidateVolumeCapabilitiesRequest {
            volume_id: ids[0].clone(),
            volume_capabilities: vec![block_cap(
                csi::volume_capability::access_mode::Mode::MultiNodeMultiWriter,
            )],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(no.confirmed.is_none());
    assert!(no.message.contains("io2"), "{}", no.message);
}
