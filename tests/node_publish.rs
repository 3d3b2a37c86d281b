//! NodePublishVolume / NodeUnpublishVolume on real loop devices attached
//! through the EC2 emulator: bind mounts, read-only, block devices, and the
//! idempotency and refusal rules. Root only.

mod support;

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use support::node::{
    NodeBed, block_cap, mount_cap, mount_line, publish_request, skip_without_root,
    unpublish_request,
};
use tonic::Code;

#[tokio::test]
async fn mount_publish_binds_the_staged_filesystem_and_unpublish_removes_the_target() {
    if skip_without_root("mount_publish") {
        return;
    }
    let mut bed = NodeBed::start(vec![]).await;
    let vol = bed.volume(1).await;
    let staging = bed.path("staging");
    let target = bed.path("pod/target");
    bed.stage(&vol, &staging, "ext4", &[]).await;
    for _ in 0..3 {
        let req = publish_request(
            &vol,
            Some(&staging),
            &target,
            mount_cap("ext4", &["noexec"]),
            false,
        );
        bed.node.node_publish_volume(req).await.unwrap();
    }
    let line = mount_line(&target).expect("target mounted");
    assert!(line.contains("noexec"), "mount flags honoured: {line}");
    std::fs::write(target.join("from-pod"), b"hi").unwrap();
    assert_eq!(
        std::fs::read(staging.join("from-pod")).unwrap(),
        b"hi",
        "same filesystem"
    );

    for _ in 0..2 {
        bed.node
            .node_unpublish_volume(unpublish_request(&vol.volume_id, &target))
            .await
            .unwrap();
    }
    assert!(!target.exists(), "unpublish removes the target directory");
    assert!(mount_line(&staging).is_some(), "staging mount untouched");
}

#[tokio::test]
async fn read_only_publish_rejects_writes_and_a_mode_change_is_already_exists() {
    if skip_without_root("read_only_publish") {
        return;
    }
    let mut bed = NodeBed::start(vec![]).await;
    let vol = bed.volume(1).await;
    let staging = bed.path("staging");
    let target = bed.path("ro-target");
    bed.stage(&vol, &staging, "xfs", &[]).await;
    std::fs::write(staging.join("existing"), b"read me").unwrap();
    let req = publish_request(&vol, Some(&staging), &target, mount_cap("xfs", &[]), true);
    bed.node.node_publish_volume(req.clone()).await.unwrap();
    bed.node.node_publish_volume(req.clone()).await.unwrap();

    let err = std::fs::write(target.join("new"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(nix::libc::EROFS), "{err}");
    assert_eq!(std::fs::read(target.join("existing")).unwrap(), b"read me");
    std::fs::write(staging.join("still-writable"), b"x").expect("staging stays read-write");

    let mut rw = req;
    rw.readonly = false;
    let err = bed.node.node_publish_volume(rw).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    assert!(err.message().contains("read-only"), "{}", err.message());
}

#[tokio::test]
async fn another_volume_at_the_target_is_failed_precondition() {
    if skip_without_root("another_volume_at_target") {
        return;
    }
    let mut bed = NodeBed::start(vec![]).await;
    let (a, b) = (bed.volume(1).await, bed.volume(1).await);
    let (sa, sb) = (bed.path("stage-a"), bed.path("stage-b"));
    let target = bed.path("target");
    bed.stage(&a, &sa, "ext4", &[]).await;
    bed.stage(&b, &sb, "ext4", &[]).await;
    let req = publish_request(&a, Some(&sa), &target, mount_cap("ext4", &[]), false);
    bed.node.node_publish_volume(req).await.unwrap();
    let req = publish_request(&b, Some(&sb), &target, mount_cap("ext4", &[]), false);
    let err = bed.node.node_publish_volume(req).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains(&b.volume_id), "{}", err.message());

    // Publishing a volume that was never staged is refused too.
    let c = bed.volume(1).await;
    let sc = bed.path("stage-c");
    std::fs::create_dir(&sc).unwrap();
    let tc = bed.path("target-c");
    let req = publish_request(&c, Some(&sc), &tc, mount_cap("ext4", &[]), false);
    let err = bed.node.node_publish_volume(req).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(!tc.exists(), "nothing created for a refused publish");
}

#[tokio::test]
async fn block_publish_gives_a_usable_device_node() {
    if skip_without_root("block_publish") {
        return;
    }
    let mut bed = NodeBed::start(vec![]).await;
    let vol = bed.volume(1).await;
    let staging = bed.path("staging");
    let target = bed.path("pod/dev/xvda");
    std::fs::create_dir(&staging).unwrap();
    let stage = support::node::stage_request(&vol, &staging, block_cap(), &[]);
    bed.node.node_stage_volume(stage).await.unwrap();
    for _ in 0..3 {
        let req = publish_request(&vol, Some(&staging), &target, block_cap(), false);
        bed.node.node_publish_volume(req).await.unwrap();
    }
    let device = vol.device();
    assert_eq!(
        std::fs::metadata(&target).unwrap().rdev(),
        std::fs::metadata(&device).unwrap().rdev(),
        "the target is the volume's device node"
    );
    {
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&target)
            .unwrap();
        f.seek(SeekFrom::Start(4096)).unwrap();
        f.write_all(b"raw block bytes").unwrap();
        f.sync_all().unwrap();
    }
    let mut back = [0u8; 15];
    let mut f = std::fs::File::open(&device).unwrap();
    f.seek(SeekFrom::Start(4096)).unwrap();
    f.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"raw block bytes");

    bed.node
        .node_unpublish_volume(unpublish_request(&vol.volume_id, &target))
        .await
        .unwrap();
    assert!(!target.exists(), "unpublish removes the target file");
}

#[tokio::test]
async fn volume_mount_group_makes_the_root_group_writable() {
    if skip_without_root("volume_mount_group") {
        return;
    }
    let mut bed = NodeBed::start(vec![]).await;
    let vol = bed.volume(1).await;
    let staging = bed.path("staging");
    let target = bed.path("target");
    bed.stage(&vol, &staging, "ext4", &[]).await;
    let mut cap = mount_cap("ext4", &[]);
    if let Some(ebs_csi_driver::csi::volume_capability::AccessType::Mount(m)) =
        cap.access_type.as_mut()
    {
        m.volume_mount_group = "4321".into();
    }
    let req = publish_request(&vol, Some(&staging), &target, cap, false);
    bed.node.node_publish_volume(req).await.unwrap();
    let meta = std::fs::metadata(&target).unwrap();
    assert_eq!(meta.gid(), 4321);
    assert_eq!(
        meta.permissions().mode() & 0o2070,
        0o2070,
        "setgid and g+rwx"
    );
}

#[tokio::test]
async fn bad_publish_requests_are_invalid_argument_before_anything_is_touched() {
    if skip_without_root("bad_publish_requests") {
        return;
    }
    let mut bed = NodeBed::start(vec![]).await;
    let vol = bed.volume(1).await;
    let staging = bed.path("staging");
    let target = bed.path("target");
    bed.stage(&vol, &staging, "ext4", &[]).await;
    let good = publish_request(&vol, Some(&staging), &target, mount_cap("ext4", &[]), false);
    let mut cases = Vec::new();
    let mut r = good.clone();
    r.volume_id.clear();
    cases.push((r, "volume_id"));
    let mut r = good.clone();
    r.target_path.clear();
    cases.push((r, "target_path"));
    let mut r = good.clone();
    r.target_path = "pods/target".into();
    cases.push((r, "pods/target"));
    let mut r = good.clone();
    r.target_path = format!("{}/x/../../escape", target.display());
    cases.push((r, ".."));
    let mut r = good.clone();
    r.staging_target_path.clear();
    cases.push((r, "staging_target_path"));
    let mut r = good.clone();
    r.volume_capability = None;
    cases.push((r, "volume_capability"));
    for (req, named) in cases {
        let err = bed.node.node_publish_volume(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{named}: {err:?}");
        assert!(err.message().contains(named), "{named}: {}", err.message());
    }
    assert!(!target.exists(), "nothing created");
    assert!(!bed.dir.path().join("escape").exists());
    for (req, named) in [
        (unpublish_request("", &target), "volume_id"),
        (
            unpublish_request(&vol.volume_id, std::path::Path::new("rel")),
            "rel",
        ),
    ] {
        let err = bed.node.node_unpublish_volume(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{named}: {err:?}");
    }
}
