//! NodeGetVolumeStats and NodeExpandVolume on real loop devices: usage that
//! follows writes, xfs growing online and ext4 growing offline after the
//! emulator grows the volume. Online ext4 growth is refused on the CI
//! machines (no CAP_SYS_RESOURCE); that test detects it and says so. Root only.

mod support;

use std::io::Write;
use std::path::Path;

use ebs_csi_driver::csi;
use ebs_csi_driver::csi::node_client::NodeClient;
use ebs_csi_driver::csi::volume_usage::Unit;
use support::node::{
    NodeBed, block_cap, mount_cap, publish_request, skip_without_root, stage_request,
    unpublish_request,
};
use tonic::Code;
use tonic::transport::Channel;

const GIB: i64 = 1 << 30;

async fn stats(
    node: &mut NodeClient<Channel>,
    volume_id: &str,
    path: &Path,
) -> Result<csi::NodeGetVolumeStatsResponse, tonic::Status> {
    node.node_get_volume_stats(csi::NodeGetVolumeStatsRequest {
        volume_id: volume_id.to_string(),
        volume_path: path.display().to_string(),
        staging_target_path: String::new(),
    })
    .await
    .map(|r| r.into_inner())
}

fn usage(resp: &csi::NodeGetVolumeStatsResponse, unit: Unit) -> csi::VolumeUsage {
    resp.usage
        .iter()
        .find(|u| u.unit == unit as i32)
        .cloned()
        .unwrap_or_else(|| panic!("no {unit:?} usage in {resp:?}"))
}

async fn expand(
    node: &mut NodeClient<Channel>,
    volume_id: &str,
    path: &Path,
    required: i64,
    cap: Option<csi::VolumeCapability>,
) -> Result<i64, tonic::Status> {
    node.node_expand_volume(csi::NodeExpandVolumeRequest {
        volume_id: volume_id.to_string(),
        volume_path: path.display().to_string(),
        capacity_range: Some(csi::CapacityRange {
            required_bytes: required,
            limit_bytes: 0,
        }),
        staging_target_path: String::new(),
        volume_capability: cap,
        secrets: Default::default(),
    })
    .await
    .map(|r| r.into_inner().capacity_bytes)
}

#[tokio::test]
async fn stats_follow_writes_and_name_unknown_paths() {
    if skip_without_root("stats_follow_writes") {
        return;
    }
    let mut bed = NodeBed::start(vec![]).await;
    let vol = bed.volume(1).await;
    let (staging, target) = (bed.path("staging"), bed.path("target"));
    bed.stage(&vol, &staging, "ext4", &[]).await;
    let req = publish_request(&vol, Some(&staging), &target, mount_cap("ext4", &[]), false);
    bed.node.node_publish_volume(req).await.unwrap();

    let before = stats(&mut bed.node, &vol.volume_id, &target).await.unwrap();
    let cond = before.volume_condition.clone().expect("condition reported");
    assert!(!cond.abnormal, "{cond:?}");
    let (b0, i0) = (usage(&before, Unit::Bytes), usage(&before, Unit::Inodes));
    assert!(b0.total > GIB * 9 / 10 && b0.total <= GIB, "{b0:?}");
    // -m0: no 5% (51 MiB) reserve for root; ext4's own delalloc reserve
    // (at most 4096 clusters, 16 MiB) is all that is held back.
    assert!(b0.total - b0.used - b0.available <= 16 << 20, "{b0:?}");

    let mut f = std::fs::File::create(target.join("blob")).unwrap();
    f.write_all(&vec![7u8; 64 << 20]).unwrap();
    f.sync_all().unwrap();
    drop(f);
    for i in 0..10 {
        std::fs::write(target.join(format!("small-{i}")), b"x").unwrap();
    }
    let after = stats(&mut bed.node, &vol.volume_id, &target).await.unwrap();
    let (b1, i1) = (usage(&after, Unit::Bytes), usage(&after, Unit::Inodes));
    assert!(
        b1.used - b0.used >= 60 << 20,
        "bytes used grew by 64 MiB: {b0:?} → {b1:?}"
    );
    assert!(b1.available < b0.available);
    assert_eq!(i1.used - i0.used, 11, "{i0:?} → {i1:?}");

    // The staging path reports the same filesystem.
    let staged = stats(&mut bed.node, &vol.volume_id, &staging)
        .await
        .unwrap();
    assert_eq!(usage(&staged, Unit::Bytes).total, b1.total);

    // Not a path of this volume: NotFound, naming it.
    let err = stats(&mut bed.node, &vol.volume_id, Path::new("some/path"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let missing = bed.dir.path().join("missing");
    let err = stats(&mut bed.node, &vol.volume_id, &missing)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("missing"), "{}", err.message());
    let other = bed.volume(1).await;
    let err = stats(&mut bed.node, &other.volume_id, &target)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(
        err.message().contains(&other.volume_id),
        "{}",
        err.message()
    );
    let err = stats(&mut bed.node, "", &target).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // The filesystem turns read-only under a read-write publish (what
    // errors=remount-ro does): an abnormal condition naming it.
    support::node::sh("mount", &["-o", "remount,ro", staging.to_str().unwrap()]);
    let ro = stats(&mut bed.node, &vol.volume_id, &target).await.unwrap();
    support::node::sh("mount", &["-o", "remount,rw", staging.to_str().unwrap()]);
    let cond = ro.volume_condition.unwrap();
    assert!(
        cond.abnormal && cond.message.contains("read-only"),
        "{cond:?}"
    );
    let ok = stats(&mut bed.node, &vol.volume_id, &target).await.unwrap();
    assert!(!ok.volume_condition.unwrap().abnormal);

    // Mount gone: reported as an abnormal condition, not an error.
    bed.node
        .node_unpublish_volume(unpublish_request(&vol.volume_id, &target))
        .await
        .unwrap();
    std::fs::create_dir(&target).unwrap();
    let gone = stats(&mut bed.node, &vol.volume_id, &target).await.unwrap();
    let cond = gone.volume_condition.unwrap();
    assert!(cond.abnormal && cond.message.contains("gone"), "{cond:?}");
}

#[tokio::test]
async fn block_volumes_report_their_size_and_expand_without_fs_work() {
    if skip_without_root("block_stats") {
        return;
    }
    let mut bed = NodeBed::start(vec![]).await;
    let vol = bed.volume(2).await;
    let target = bed.path("block");
    let req = publish_request(&vol, None, &target, block_cap(), false);
    bed.node.node_publish_volume(req).await.unwrap();
    let resp = stats(&mut bed.node, &vol.volume_id, &target).await.unwrap();
    assert_eq!(usage(&resp, Unit::Bytes).total, 2 * GIB);
    assert!(!resp.volume_condition.unwrap().abnormal);

    bed.h.sim.grow_volume(&vol, 3).await;
    let capacity = expand(
        &mut bed.node,
        &vol.volume_id,
        &target,
        3 * GIB,
        Some(block_cap()),
    )
    .await
    .unwrap();
    assert_eq!(capacity, 3 * GIB);
}

#[tokio::test]
async fn xfs_grows_online_after_the_volume_grows() {
    if skip_without_root("xfs_grows_online") {
        return;
    }
    let mut bed = NodeBed::start(vec![]).await;
    let vol = bed.volume(1).await;
    let (staging, target) = (bed.path("staging"), bed.path("target"));
    bed.stage(&vol, &staging, "xfs", &[]).await;
    let req = publish_request(&vol, Some(&staging), &target, mount_cap("xfs", &[]), false);
    bed.node.node_publish_volume(req).await.unwrap();
    std::fs::write(target.join("kept"), b"data").unwrap();
    let before = usage(
        &stats(&mut bed.node, &vol.volume_id, &target).await.unwrap(),
        Unit::Bytes,
    );

    // Asking before EC2 has grown the device would record a growth that
    // never happened: refused as Unavailable (kubelet retries).
    let err = expand(&mut bed.node, &vol.volume_id, &target, 3 * GIB, None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");

    bed.h.sim.grow_volume(&vol, 3).await;
    let capacity = expand(&mut bed.node, &vol.volume_id, &target, 3 * GIB, None)
        .await
        .unwrap();
    assert_eq!(capacity, 3 * GIB);
    let after = usage(
        &stats(&mut bed.node, &vol.volume_id, &target).await.unwrap(),
        Unit::Bytes,
    );
    assert!(after.total > before.total * 2, "{before:?} → {after:?}");
    assert!(after.total > 2 * GIB + GIB / 2, "{after:?}");
    assert_eq!(std::fs::read(target.join("kept")).unwrap(), b"data");
    // Again: nothing to do, still OK.
    expand(&mut bed.node, &vol.volume_id, &target, 3 * GIB, None)
        .await
        .unwrap();

    let err = expand(
        &mut bed.node,
        &vol.volume_id,
        Path::new("some/path"),
        0,
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = expand(&mut bed.node, "", &target, 0, None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn ext4_grows_offline_when_restaged_after_the_volume_grows() {
    if skip_without_root("ext4_grows_offline") {
        return;
    }
    let mut bed = NodeBed::start(vec![]).await;
    let vol = bed.volume(1).await;
    let staging = bed.path("staging");
    bed.stage(&vol, &staging, "ext4", &[]).await;
    std::fs::write(staging.join("kept"), b"data").unwrap();
    let before = usage(
        &stats(&mut bed.node, &vol.volume_id, &staging)
            .await
            .unwrap(),
        Unit::Bytes,
    );
    bed.unstage(&vol.volume_id, &staging).await;

    bed.h.sim.grow_volume(&vol, 2).await;
    bed.stage(&vol, &staging, "ext4", &[]).await;
    let after = usage(
        &stats(&mut bed.node, &vol.volume_id, &staging)
            .await
            .unwrap(),
        Unit::Bytes,
    );
    assert!(
        after.total > before.total * 18 / 10,
        "{before:?} → {after:?}"
    );
    assert_eq!(std::fs::read(staging.join("kept")).unwrap(), b"data");
    let log = bed.h.driver.log_text();
    assert!(
        log.contains("growing ext4"),
        "grown by NodeStage, before mounting"
    );
}

#[tokio::test]
async fn ext4_online_growth_grows_or_names_the_missing_capability() {
    if skip_without_root("ext4_online_growth") {
        return;
    }
    let mut bed = NodeBed::start(vec![]).await;
    let vol = bed.volume(1).await;
    let (staging, target) = (bed.path("staging"), bed.path("target"));
    bed.stage(&vol, &staging, "ext4", &[]).await;
    let req = stage_request(&vol, &staging, mount_cap("ext4", &[]), &[]);
    bed.node.node_stage_volume(req).await.unwrap();
    let req = publish_request(&vol, Some(&staging), &target, mount_cap("ext4", &[]), false);
    bed.node.node_publish_volume(req).await.unwrap();
    bed.h.sim.grow_volume(&vol, 2).await;
    match expand(&mut bed.node, &vol.volume_id, &target, 2 * GIB, None).await {
        Ok(capacity) => {
            assert_eq!(capacity, 2 * GIB);
            let after = usage(
                &stats(&mut bed.node, &vol.volume_id, &target).await.unwrap(),
                Unit::Bytes,
            );
            assert!(after.total > GIB * 18 / 10, "{after:?}");
        }
        Err(status) => {
            // Only the documented environment limit is tolerated, and it is
            // reported as a skip, never as a pass.
            let msg = status.message();
            assert!(
                msg.contains("Permission denied") && msg.contains("CAP_SYS_RESOURCE"),
                "online ext4 growth failed for another reason: {status:?}"
            );
            eprintln!(
                "SKIP ext4_online_growth: environment limit — resize2fs on a mounted ext4 gets \
                 EPERM here (no CAP_SYS_RESOURCE); the driver named it: {msg}"
            );
        }
    }
}
