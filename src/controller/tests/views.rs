//! Fewer Describe calls on the publish path: the instance views
//! (`instances`) and the records of created volumes (`created`), counted
//! on the in-memory Cloud.

use std::collections::HashSet;
use std::sync::Arc;

use tonic::Code;

use super::{assert_err, create, ctl, publish_req};
use crate::cloud::memory::{MemoryCloud, ZONE};
use crate::cloud::{Cloud, CloudError, InstanceId, VolumeId};
use crate::controller::{Ctl, instances, publish};
use crate::csi;

async fn device(ctl: &Ctl, vol: &str, node: &InstanceId) -> String {
    publish::publish(ctl, publish_req(vol, node))
        .await
        .unwrap()
        .publish_context["devicePath"]
        .clone()
}

async fn unpublish(ctl: &Ctl, vol: &str, node: &InstanceId) {
    let req = csi::ControllerUnpublishVolumeRequest {
        volume_id: vol.into(),
        node_id: node.to_string(),
        ..Default::default()
    };
    publish::unpublish(ctl, req).await.unwrap();
}

/// The devices AttachVolume was called with for `vol`, in order.
fn attach_names(cloud: &MemoryCloud, vol: &str) -> Vec<String> {
    cloud
        .calls()
        .iter()
        .filter_map(|c| c.strip_prefix("AttachVolume "))
        .filter(|c| c.starts_with(vol))
        .map(|c| c.rsplit(' ').next().unwrap().to_string())
        .collect()
}

/// An in-memory Cloud with one m5.large and two created volumes.
async fn two_volumes() -> (Arc<MemoryCloud>, Ctl, InstanceId, String, String) {
    let cloud = Arc::new(MemoryCloud::default());
    let ctl = ctl(&cloud);
    let node = cloud.add_instance(ZONE, "m5.large");
    let a = create(&ctl, "pvc-a", 1).await;
    let b = create(&ctl, "pvc-b", 1).await;
    (cloud, ctl, node, a, b)
}

#[tokio::test(start_paused = true)]
async fn publishes_to_one_instance_cost_one_describe_instances_within_the_ttl() {
    let cloud = Arc::new(MemoryCloud::default());
    let ctl = ctl(&cloud);
    let node = cloud.add_instance(ZONE, "m5.large");
    let mut vols = Vec::new();
    for i in 0..10 {
        vols.push(create(&ctl, &format!("pvc-{i}"), 1).await);
    }
    let described = cloud.count("DescribeVolumes");
    let devices = futures_util::future::join_all(vols.iter().map(|v| device(&ctl, v, &node))).await;
    let unique: HashSet<_> = devices.iter().collect();
    assert_eq!(
        unique.len(),
        10,
        "concurrent publishes, distinct names: {devices:?}"
    );
    assert_eq!(cloud.count("AttachVolume"), 10, "no name was refused");
    assert_eq!(cloud.count("DescribeInstances"), 1, "{:?}", cloud.calls());
    // Just created and seen available: only the waits for `attached`
    // describe the volumes, one look each here.
    assert_eq!(cloud.count("DescribeVolumes") - described, 10);
    // Later publishes within the TTL, and a re-publish, still read nothing.
    let late = create(&ctl, "pvc-late", 1).await;
    // Well inside the TTL: the waits for `available` and `attached` move
    // the paused clock too.
    tokio::time::advance(instances::TTL / 3).await;
    let d = device(&ctl, &late, &node).await;
    assert!(!unique.contains(&d), "{d} is taken");
    assert_eq!(device(&ctl, &vols[0], &node).await, devices[0]);
    // (This once failed one run in three: waits ticked on one process-wide
    // pacer whose next tick came from another test's paused clock, a
    // minute ahead, so this test's clock jumped past the TTL. Each Cloud
    // has its own pacer now.)
    assert_eq!(cloud.count("DescribeInstances"), 1, "{:?}", cloud.calls());
}

#[tokio::test(start_paused = true)]
async fn the_view_is_read_again_after_the_ttl() {
    let (cloud, ctl, node, a, b) = two_volumes().await;
    assert_eq!(device(&ctl, &a, &node).await, "/dev/xvdaa");
    // Someone else takes the next name; once the view has expired it is
    // read again, so the name is never tried.
    cloud.set_mapped(&node, "/dev/xvdab", true);
    tokio::time::advance(instances::TTL).await;
    assert_eq!(device(&ctl, &b, &node).await, "/dev/xvdac");
    assert_eq!(cloud.count("DescribeInstances"), 2);
    assert_eq!(attach_names(&cloud, &b), ["/dev/xvdac"]);
}

#[tokio::test(start_paused = true)]
async fn a_name_in_use_rereads_the_view_and_takes_another_name() {
    let (cloud, ctl, node, a, b) = two_volumes().await;
    assert_eq!(device(&ctl, &a, &node).await, "/dev/xvdaa");
    // Within the TTL someone else maps two names the view does not know.
    cloud.set_mapped(&node, "/dev/xvdab", true);
    cloud.set_mapped(&node, "/dev/xvdac", true);
    assert_eq!(device(&ctl, &b, &node).await, "/dev/xvdad");
    // One refusal: the re-read showed xvdac too (cooling down the refused
    // name alone would have tried xvdac next).
    assert_eq!(attach_names(&cloud, &b), ["/dev/xvdab", "/dev/xvdad"]);
    assert_eq!(cloud.count("DescribeInstances"), 2);
}

#[tokio::test(start_paused = true)]
async fn a_completed_detach_frees_the_name_in_the_view() {
    let (cloud, ctl, node, a, b) = two_volumes().await;
    assert_eq!(device(&ctl, &a, &node).await, "/dev/xvdaa");
    assert_eq!(device(&ctl, &b, &node).await, "/dev/xvdab");
    unpublish(&ctl, &a, &node).await;
    let c = create(&ctl, "pvc-c", 1).await;
    assert_eq!(device(&ctl, &c, &node).await, "/dev/xvdaa", "freed, reused");
    assert_eq!(cloud.count("DescribeInstances"), 1, "{:?}", cloud.calls());
    assert_eq!(cloud.count("AttachVolume"), 3, "no name was refused");
}

#[tokio::test(start_paused = true)]
async fn a_full_view_kept_from_earlier_is_read_again_before_refusing() {
    let (cloud, ctl, node, a, b) = two_volumes().await;
    let all = crate::cloud::devices::candidates();
    for name in &all {
        cloud.set_mapped(&node, name, true);
    }
    assert_err(
        "a node whose every name is mapped is full",
        publish::publish(&ctl, publish_req(&a, &node)).await,
        Code::ResourceExhausted,
        "no device name is left",
    );
    assert_eq!(cloud.count("DescribeInstances"), 1);
    // Others free names; the kept view still says full, so it is read again.
    for name in &all[5..] {
        cloud.set_mapped(&node, name, false);
    }
    assert_eq!(device(&ctl, &b, &node).await, all[5]);
    assert_eq!(cloud.count("DescribeInstances"), 2);
}

#[tokio::test(start_paused = true)]
async fn attach_refusals_that_question_the_view_reread_it() {
    let cases: Vec<(&str, CloudError, Code, usize)> = vec![
        (
            "an attachment limit reached: others may have filled slots",
            CloudError::LimitExceeded("AttachmentLimitExceeded".into()),
            Code::ResourceExhausted,
            2,
        ),
        (
            "the instance not found",
            CloudError::NotFound("InvalidInstanceID.NotFound".into()),
            Code::NotFound,
            2,
        ),
        (
            "the instance in a state that takes no volumes",
            CloudError::IncorrectState("IncorrectInstanceState".into()),
            Code::FailedPrecondition,
            2,
        ),
        (
            "throttling says nothing about the view",
            CloudError::Throttled("RequestLimitExceeded".into()),
            Code::Unavailable,
            1,
        ),
    ];
    for (rule, fault, code, reads) in cases {
        let cloud = Arc::new(MemoryCloud::default());
        let ctl = ctl(&cloud);
        let node = cloud.add_instance(ZONE, "m5.large");
        let a = create(&ctl, "pvc-a", 1).await;
        cloud.fail_next("AttachVolume", fault);
        let got = publish::publish(&ctl, publish_req(&a, &node)).await;
        assert_eq!(got.map_err(|e| e.code()).err(), Some(code), "{rule}");
        device(&ctl, &a, &node).await;
        assert_eq!(cloud.count("DescribeInstances"), reads, "{rule}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_created_volume_is_published_without_describing_it_once() {
    let cloud = Arc::new(MemoryCloud::default());
    let ctl = ctl(&cloud);
    let node = cloud.add_instance(ZONE, "m5.large");
    let vol = create(&ctl, "pvc-1", 1).await;
    let before = cloud.count("DescribeVolumes");
    let first = device(&ctl, &vol, &node).await;
    assert_eq!(cloud.count("DescribeVolumes") - before, 1, "the wait only");
    // The record served its one publish: a repeat describes, as do
    // publishes of volumes modified or not created here.
    assert_eq!(device(&ctl, &vol, &node).await, first);
    assert_eq!(cloud.count("DescribeVolumes") - before, 2);
    let gone = create(&ctl, "pvc-gone", 1).await;
    let del = csi::DeleteVolumeRequest {
        volume_id: gone.clone(),
        ..Default::default()
    };
    crate::controller::volumes::delete(&ctl, del).await.unwrap();
    assert_err(
        "a deleted volume's record is dropped: NotFound, not an attach",
        publish::publish(&ctl, publish_req(&gone, &node)).await,
        Code::NotFound,
        &gone,
    );
    assert_eq!(attach_names(&cloud, &gone), Vec::<String>::new());
}

#[tokio::test(start_paused = true)]
async fn a_stale_record_falls_back_on_ec2s_answer() {
    let cloud = Arc::new(MemoryCloud::default());
    let ctl = ctl(&cloud);
    let node = cloud.add_instance(ZONE, "m5.large");
    let other = cloud.add_instance(ZONE, "m5.large");
    // Attached behind the record's back: elsewhere, and here (as by an
    // earlier call that timed out).
    let elsewhere = create(&ctl, "pvc-1", 1).await;
    let here = create(&ctl, "pvc-2", 1).await;
    let id = |v: &str| VolumeId::parse(v).unwrap();
    cloud
        .attach_volume(&id(&elsewhere), &other, "/dev/xvdba", None)
        .await
        .unwrap();
    cloud
        .attach_volume(&id(&here), &node, "/dev/xvdbb", None)
        .await
        .unwrap();
    assert_err(
        "VolumeInUse, then described: attached to the other node",
        publish::publish(&ctl, publish_req(&elsewhere, &node)).await,
        Code::FailedPrecondition,
        &format!("is attached to {other}"),
    );
    assert_eq!(
        device(&ctl, &here, &node).await,
        "/dev/xvdbb",
        "VolumeInUse, then described: attached here already"
    );
}
