//! The controller's rules, unit-tested on the in-memory Cloud: each case
//! names the rule it checks. Time is paused, so waits on shared ticks and
//! the stuck-attach bound pass in no wall time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tonic::Code;

use super::modifier::Modifier;
use super::tags::DriverTags;
use super::{Ctl, Timeouts, modify, publish, snapshots, volumes};
use crate::cloud::memory::{MemoryCloud, ZONE};
use crate::cloud::{Cloud, CloudError, InstanceId, ModifySpec, VolumeId, VolumeState};
use crate::csi;
use crate::csi::controller_service_capability::rpc::Type as Cap;
use crate::csi::volume_capability::access_mode::Mode;
use crate::csi::volume_capability::{AccessMode, AccessType, MountVolume};
use crate::error::Error;
use crate::readiness::Slot;

mod views;

const GIB: i64 = 1 << 30;

fn ctl(cloud: &Arc<MemoryCloud>) -> Ctl {
    let slot: Slot<Arc<dyn Cloud>> = Slot::new("EC2 client");
    slot.set(cloud.clone() as Arc<dyn Cloud>);
    Ctl {
        cloud: slot,
        tags: DriverTags::default(),
        own_zone: Some(ZONE.into()),
        instance: None,
        inflight: Default::default(),
        devices: Default::default(),
        instances: Default::default(),
        created: Default::default(),
        timeouts: Timeouts::default(),
        modifier: Modifier::new(Duration::from_millis(50)),
    }
}

fn cap() -> csi::VolumeCapability {
    csi::VolumeCapability {
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
        access_type: Some(AccessType::Mount(MountVolume::default())),
    }
}

fn create_req(name: &str, gib: i64, params: &[(&str, &str)]) -> csi::CreateVolumeRequest {
    csi::CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(csi::CapacityRange {
            required_bytes: gib * GIB,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![cap()],
        parameters: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

fn publish_req(vol: &str, node: &InstanceId) -> csi::ControllerPublishVolumeRequest {
    csi::ControllerPublishVolumeRequest {
        volume_id: vol.into(),
        node_id: node.to_string(),
        volume_capability: Some(cap()),
        ..Default::default()
    }
}

async fn create(ctl: &Ctl, name: &str, gib: i64) -> String {
    volumes::create(ctl, create_req(name, gib, &[]))
        .await
        .unwrap()
        .volume
        .unwrap()
        .volume_id
}

/// Asserts an error's code and that its message names `needle`.
fn assert_err(rule: &str, got: Result<impl std::fmt::Debug, Error>, code: Code, needle: &str) {
    match got {
        Err(e) => {
            assert_eq!(e.code(), code, "{rule}: {e}");
            assert!(
                e.to_string().contains(needle),
                "{rule}: {e:?} lacks {needle:?}"
            );
        }
        Ok(v) => panic!("{rule}: expected {code:?}, got {v:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn create_is_idempotent_by_name() {
    let cloud = Arc::new(MemoryCloud::default());
    let ctl = ctl(&cloud);
    let a = create(&ctl, "pvc-1", 10).await;
    let b = create(&ctl, "pvc-1", 10).await;
    assert_eq!(a, b, "same name, same volume");
    assert_eq!(cloud.count("CreateVolume"), 1, "{:?}", cloud.calls());
    assert_err(
        "same name, other size",
        volumes::create(&ctl, create_req("pvc-1", 20, &[])).await,
        Code::AlreadyExists,
        &a,
    );
    assert_err(
        "same name, other type",
        volumes::create(
            &ctl,
            create_req("pvc-1", 10, &[("type", "io2"), ("iops", "100")]),
        )
        .await,
        Code::AlreadyExists,
        "type gp3 (requested io2)",
    );
}

#[tokio::test(start_paused = true)]
async fn create_maps_ec2_failures() {
    /// What a case expects: success, or a code and a word of the message.
    type Want = Result<(), (Code, &'static str)>;
    let cases: Vec<(&str, CloudError, Want)> = vec![
        (
            "a reused ClientToken with other parameters moves to the next token",
            CloudError::IdempotentParameterMismatch("token reused".into()),
            Ok(()),
        ),
        (
            "throttling that outlasts the retries is Unavailable, so the CO retries",
            CloudError::Throttled("RequestLimitExceeded".into()),
            Err((Code::Unavailable, "RequestLimitExceeded")),
        ),
        (
            "EC2's parameter errors are InvalidArgument naming zone, size and type",
            CloudError::InvalidParameter("InvalidParameterValue: bad".into()),
            Err((Code::InvalidArgument, "zone us-east-1a, 10 GiB gp3")),
        ),
        (
            "an exhausted quota is ResourceExhausted",
            CloudError::LimitExceeded("VolumeLimitExceeded".into()),
            Err((Code::ResourceExhausted, "VolumeLimitExceeded")),
        ),
        (
            "an IAM denial points at the policy document",
            CloudError::Unauthorized("UnauthorizedOperation".into()),
            Err((Code::FailedPrecondition, "docs/iam-policy.json")),
        ),
        (
            "a server error is Unavailable",
            CloudError::Unavailable("InternalError".into()),
            Err((Code::Unavailable, "InternalError")),
        ),
    ];
    for (rule, fault, want) in cases {
        let cloud = Arc::new(MemoryCloud::default());
        let ctl = ctl(&cloud);
        cloud.fail_next("CreateVolume", fault);
        let got = volumes::create(&ctl, create_req("pvc-1", 10, &[])).await;
        match want {
            Ok(()) => {
                assert!(got.is_ok(), "{rule}: {got:?}");
                assert_eq!(cloud.volumes().len(), 1, "{rule}: one volume");
            }
            Err((code, needle)) => assert_err(rule, got, code, needle),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_volume_that_fails_while_creating_is_deleted_not_leaked() {
    let cloud = Arc::new(MemoryCloud::default());
    let ctl = ctl(&cloud);
    cloud.finish_creations_as(VolumeState::Error);
    assert_err(
        "an error volume is deleted and reported",
        volumes::create(&ctl, create_req("pvc-1", 10, &[])).await,
        Code::Internal,
        "it was deleted",
    );
    assert!(
        cloud.volumes().is_empty(),
        "nothing left: {:?}",
        cloud.volumes()
    );
}

#[tokio::test(start_paused = true)]
async fn create_refuses_what_ebs_cannot_do() {
    let cloud = Arc::new(MemoryCloud::default());
    let ctl = ctl(&cloud);
    let mut from_missing = create_req("pvc-2", 10, &[]);
    from_missing.volume_content_source = Some(csi::VolumeContentSource {
        r#type: Some(csi::volume_content_source::Type::Snapshot(
            csi::volume_content_source::SnapshotSource {
                snapshot_id: "snap-0000dead".into(),
            },
        )),
    });
    let cases: Vec<(&str, csi::CreateVolumeRequest, Code, &str)> = vec![
        (
            "a name is required",
            create_req("", 10, &[]),
            Code::InvalidArgument,
            "name",
        ),
        (
            "an unknown parameter is named",
            create_req("pvc-1", 10, &[("tpye", "gp3")]),
            Code::InvalidArgument,
            "\"tpye\"",
        ),
        (
            "a size outside the type's range is OutOfRange",
            create_req("pvc-1", 10, &[("type", "st1")]),
            Code::OutOfRange,
            "125..=16384",
        ),
        (
            "a missing source snapshot is NotFound",
            from_missing,
            Code::NotFound,
            "snap-0000dead",
        ),
    ];
    for (rule, req, code, needle) in cases {
        assert_err(rule, volumes::create(&ctl, req).await, code, needle);
    }
    assert_eq!(cloud.count("CreateVolume"), 0, "nothing created");
}

#[tokio::test(start_paused = true)]
async fn publish_rules() {
    let cloud = Arc::new(MemoryCloud::default());
    let ctl = ctl(&cloud);
    let node = cloud.add_instance(ZONE, "m5.large");
    let other = cloud.add_instance(ZONE, "m5.large");
    let far = cloud.add_instance("us-east-1b", "m5.large");
    let vol = create(&ctl, "pvc-1", 10).await;

    let first = publish::publish(&ctl, publish_req(&vol, &node))
        .await
        .unwrap();
    let again = publish::publish(&ctl, publish_req(&vol, &node))
        .await
        .unwrap();
    assert_eq!(first, again, "publishing twice answers the same device");
    assert_eq!(cloud.count("AttachVolume"), 1);
    assert_err(
        "a volume attached elsewhere is FailedPrecondition naming the other node",
        publish::publish(&ctl, publish_req(&vol, &other)).await,
        Code::FailedPrecondition,
        node.as_str(),
    );
    let vol2 = create(&ctl, "pvc-2", 10).await;
    assert_err(
        "zones must match",
        publish::publish(&ctl, publish_req(&vol2, &far)).await,
        Code::FailedPrecondition,
        "us-east-1b",
    );
    assert_err(
        "an unknown node is NotFound",
        publish::publish(&ctl, publish_req(&vol2, &InstanceId::from_ec2("i-0dead"))).await,
        Code::NotFound,
        "i-0dead",
    );
    assert_err(
        "a string that is no volume id is NotFound",
        publish::publish(&ctl, publish_req("disk-1", &node)).await,
        Code::NotFound,
        "not an EBS volume id",
    );
    cloud.limit_attachments(2);
    assert_err(
        "a full node is ResourceExhausted naming node, type and limit",
        publish::publish(&ctl, publish_req(&vol2, &node)).await,
        Code::ResourceExhausted,
        &format!("node {node} (m5.large) cannot take another volume"),
    );
}

#[tokio::test(start_paused = true)]
async fn a_stuck_attachment_is_detached_and_retried_under_another_name() {
    let cloud = Arc::new(MemoryCloud::default());
    let ctl = ctl(&cloud);
    let node = cloud.add_instance(ZONE, "m5.large");
    let vol = create(&ctl, "pvc-1", 10).await;
    cloud.stick_attachments(1);
    let published = publish::publish(&ctl, publish_req(&vol, &node))
        .await
        .unwrap();
    let attaches: Vec<String> = cloud
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("AttachVolume"))
        .collect();
    assert_eq!(attaches.len(), 2, "{attaches:?}");
    assert_eq!(
        cloud.count("DetachVolume"),
        1,
        "the stuck attachment was detached"
    );
    let device = &published.publish_context["devicePath"];
    assert!(
        attaches[1].ends_with(device.as_str()),
        "{attaches:?} vs {device}"
    );
    assert!(
        !attaches[0].ends_with(device.as_str()),
        "another name the second time"
    );
}

#[tokio::test(start_paused = true)]
async fn delete_rules() {
    let cloud = Arc::new(MemoryCloud::default());
    let ctl = ctl(&cloud);
    let node = cloud.add_instance(ZONE, "m5.large");
    let vol = create(&ctl, "pvc-1", 10).await;
    let del = |id: &str| csi::DeleteVolumeRequest {
        volume_id: id.into(),
        ..Default::default()
    };
    publish::publish(&ctl, publish_req(&vol, &node))
        .await
        .unwrap();
    assert_err(
        "an attached volume is FailedPrecondition naming the node",
        volumes::delete(&ctl, del(&vol)).await,
        Code::FailedPrecondition,
        node.as_str(),
    );
    for (rule, id) in [
        (
            "an id that cannot name a volume is already deleted",
            "fake-vol-id",
        ),
        (
            "a volume that does not exist is already deleted",
            "vol-0000dead",
        ),
    ] {
        assert!(volumes::delete(&ctl, del(id)).await.is_ok(), "{rule}");
    }
    let vol2 = create(&ctl, "pvc-2", 10).await;
    cloud.fail_next(
        "DeleteVolume",
        CloudError::NotFound("gone meanwhile".into()),
    );
    assert!(
        volumes::delete(&ctl, del(&vol2)).await.is_ok(),
        "EC2's NotFound on delete is success"
    );
}

#[tokio::test(start_paused = true)]
async fn concurrent_expand_and_modify_become_one_modification() {
    let cloud = Arc::new(MemoryCloud::default());
    let ctl = ctl(&cloud);
    let vol = create(&ctl, "pvc-1", 10).await;
    let expand = modify::expand(
        &ctl,
        csi::ControllerExpandVolumeRequest {
            volume_id: vol.clone(),
            capacity_range: Some(csi::CapacityRange {
                required_bytes: 20 * GIB,
                limit_bytes: 0,
            }),
            ..Default::default()
        },
    );
    let change = modify::modify(
        &ctl,
        csi::ControllerModifyVolumeRequest {
            volume_id: vol.clone(),
            mutable_parameters: HashMap::from([("iops".to_string(), "4000".to_string())]),
            ..Default::default()
        },
    );
    let (e, m) = tokio::join!(expand, change);
    assert_eq!(e.unwrap().capacity_bytes, 20 * GIB);
    m.unwrap();
    let modifies: Vec<String> = cloud
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("ModifyVolume"))
        .collect();
    assert_eq!(modifies.len(), 1, "merged into one: {modifies:?}");
    assert!(
        modifies[0].contains("size_gib: Some(20)") && modifies[0].contains("iops: Some(4000)"),
        "{modifies:?}"
    );
    let v = cloud.peek(&VolumeId::from_ec2(vol)).unwrap();
    assert_eq!((v.size_gib, v.iops), (20, Some(4000)));
}

#[tokio::test(start_paused = true)]
async fn conflicting_modifications_and_busy_volumes() {
    let cloud = Arc::new(MemoryCloud::default());
    let ctl = ctl(&cloud);
    let vol = create(&ctl, "pvc-1", 100).await;
    let req = |iops: &str| csi::ControllerModifyVolumeRequest {
        volume_id: vol.clone(),
        mutable_parameters: HashMap::from([("iops".to_string(), iops.to_string())]),
        ..Default::default()
    };
    let (a, b) = tokio::join!(
        modify::modify(&ctl, req("4000")),
        modify::modify(&ctl, req("5000"))
    );
    let aborted = [&a, &b]
        .iter()
        .filter(|r| r.as_ref().is_err_and(|e| e.code() == Code::Aborted))
        .count();
    assert_eq!(
        aborted, 1,
        "two values at once: one waits for a retry ({a:?}, {b:?})"
    );

    // A modification already under way (from elsewhere) is waited out.
    let id = VolumeId::from_ec2(vol.clone());
    cloud
        .modify_volume(
            &id,
            &ModifySpec {
                throughput: Some(500),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    modify::modify(&ctl, req("6000"))
        .await
        .expect("waits, then modifies");
    assert_eq!(cloud.peek(&id).unwrap().iops, Some(6000));
    assert_err(
        "an unsupported mutable parameter is InvalidArgument",
        modify::modify(
            &ctl,
            csi::ControllerModifyVolumeRequest {
                volume_id: vol.clone(),
                mutable_parameters: HashMap::from([("encrypted".into(), "true".into())]),
                ..Default::default()
            },
        )
        .await,
        Code::InvalidArgument,
        "\"encrypted\"",
    );
}

#[tokio::test(start_paused = true)]
async fn snapshot_rules() {
    let cloud = Arc::new(MemoryCloud::default());
    let ctl = ctl(&cloud);
    let vol = create(&ctl, "pvc-1", 10).await;
    let other = create(&ctl, "pvc-2", 10).await;
    let req = |name: &str, source: &str, params: &[(&str, &str)]| csi::CreateSnapshotRequest {
        name: name.into(),
        source_volume_id: source.into(),
        parameters: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    };
    let a = snapshots::create(&ctl, req("snap-a", &vol, &[]))
        .await
        .unwrap();
    let b = snapshots::create(&ctl, req("snap-a", &vol, &[]))
        .await
        .unwrap();
    assert_eq!(a, b, "same name and source, same snapshot");
    assert_eq!(cloud.count("CreateSnapshot"), 1);
    assert_err(
        "same name, other source",
        snapshots::create(&ctl, req("snap-a", &other, &[])).await,
        Code::AlreadyExists,
        &other,
    );
    assert_err(
        "a missing source volume is NotFound",
        snapshots::create(&ctl, req("snap-b", "vol-0000dead", &[])).await,
        Code::NotFound,
        "vol-0000dead",
    );
    cloud.fail_next(
        "EnableFastSnapshotRestores",
        CloudError::InvalidParameter("not in that zone".into()),
    );
    assert_err(
        "a snapshot whose fast restore EC2 refuses is deleted, not left behind",
        snapshots::create(
            &ctl,
            req(
                "snap-c",
                &vol,
                &[("fastSnapshotRestoreAvailabilityZones", ZONE)],
            ),
        )
        .await,
        Code::FailedPrecondition,
        "the snapshot was deleted",
    );
    assert_eq!(cloud.snapshots().len(), 1, "only snap-a is left");
}

#[test]
fn advertised_capabilities_are_the_references_plus_what_csi_sanity_v5_4_knows() {
    // The reference v1.64 advertises these seven; ours adds only
    // capabilities csi-test v5.4.0 knows (it fails on an unknown one, as
    // GET_SNAPSHOT was).
    let reference = [
        Cap::CreateDeleteVolume,
        Cap::CloneVolume,
        Cap::PublishUnpublishVolume,
        Cap::CreateDeleteSnapshot,
        Cap::ListSnapshots,
        Cap::ExpandVolume,
        Cap::ModifyVolume,
    ];
    for c in reference {
        assert!(super::CAPABILITIES.contains(&c), "{c:?}");
    }
    let known_to_csi_sanity = [
        Cap::CreateDeleteVolume,
        Cap::PublishUnpublishVolume,
        Cap::ListVolumes,
        Cap::GetCapacity,
        Cap::CreateDeleteSnapshot,
        Cap::ListSnapshots,
        Cap::PublishReadonly,
        Cap::CloneVolume,
        Cap::ExpandVolume,
        Cap::ModifyVolume,
        Cap::ListVolumesPublishedNodes,
        Cap::GetVolume,
        Cap::VolumeCondition,
        Cap::SingleNodeMultiWriter,
    ];
    for c in super::CAPABILITIES {
        assert!(
            known_to_csi_sanity.contains(&c),
            "{c:?} is unknown to csi-sanity v5.4.0"
        );
    }
}
