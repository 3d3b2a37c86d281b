//! The node as a drop-in for the reference driver, on real loop devices:
//! volumes whose context came from the reference (lowercase format keys)
//! get exactly those filesystem options, `--legacy-xfs` formats as the
//! reference does, and a static PV's `partition` attribute mounts that
//! partition. Root only.

mod support;

use support::node::{NodeBed, mount_line, mounted_fs, sh, skip_without_root, stage_request};
use support::node::{block_cap, mount_cap, publish_request};
use tonic::Code;

#[tokio::test]
async fn the_references_lowercase_context_keys_shape_the_filesystem() {
    if skip_without_root("reference_context_keys") {
        return;
    }
    let mut bed = NodeBed::start(vec![]).await;

    // ext4: the keys exactly as the reference driver writes them.
    let vol = bed.volume(1).await;
    let staging = bed.path("ext4");
    std::fs::create_dir(&staging).unwrap();
    bed.stage(
        &vol,
        &staging,
        "ext4",
        &[
            ("blocksize", "1024"),
            ("inodesize", "512"),
            ("bytesperinode", "16384"),
            ("ext4encryptionsupport", "true"),
        ],
    )
    .await;
    let dev = vol.device();
    let sb = sh("dumpe2fs", &["-h", dev.to_str().unwrap()]);
    for want in [
        "Block size:               1024",
        "Inode size:\t          512",
    ] {
        assert!(sb.contains(want), "{want:?} in\n{sb}");
    }
    // 1 GiB / 16 KiB per inode.
    assert!(sb.contains("Inode count:              65536"), "{sb}");
    let features = sb
        .lines()
        .find(|l| l.starts_with("Filesystem features:"))
        .unwrap_or_default();
    assert!(features.contains("encrypt"), "{features}");

    // xfs: block and inode sizes.
    let vol = bed.volume(1).await;
    let staging = bed.path("xfs");
    std::fs::create_dir(&staging).unwrap();
    bed.stage(
        &vol,
        &staging,
        "xfs",
        &[("blocksize", "2048"), ("inodesize", "1024")],
    )
    .await;
    let info = sh("xfs_info", &[staging.to_str().unwrap()]);
    assert!(info.contains("isize=1024"), "{info}");
    assert!(info.contains("bsize=2048"), "{info}");
}

#[tokio::test]
async fn legacy_xfs_formats_without_the_features_old_kernels_lack() {
    if skip_without_root("legacy_xfs") {
        return;
    }
    let mut bed = NodeBed::start(vec!["--legacy-xfs".into()]).await;
    let vol = bed.volume(1).await;
    let staging = bed.path("staging");
    std::fs::create_dir(&staging).unwrap();
    bed.stage(&vol, &staging, "xfs", &[]).await;
    let info = sh("xfs_info", &[staging.to_str().unwrap()]);
    for want in ["reflink=0", "bigtime=0", "inobtcount=0"] {
        assert!(info.contains(want), "{want} in\n{info}");
    }
    assert!(
        bed.h
            .driver
            .log_text()
            .contains("--legacy-xfs is deprecated"),
        "the deprecation is logged"
    );
}

/// Writes an MBR with one partition covering the device after 1 MiB, and
/// makes the kernel read it.
fn partition(dev: &std::path::Path) {
    use std::io::Write;
    let mut child = std::process::Command::new("sfdisk")
        .args(["--quiet", "--no-reread", dev.to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("sfdisk");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"label: dos\nstart=2048, type=83\n")
        .unwrap();
    assert!(child.wait().unwrap().success(), "sfdisk");
    // The emulator's loop devices scan partitions; make sure the table is read.
    let _ = std::process::Command::new("partx")
        .args(["-u", dev.to_str().unwrap()])
        .status();
}

#[tokio::test]
async fn a_static_pvs_partition_attribute_stages_that_partition() {
    if skip_without_root("partition_attribute") {
        return;
    }
    if std::process::Command::new("sfdisk")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!(
            "SKIP partition_attribute: sfdisk is not installed (Debian package fdisk; .ci/run installs it)"
        );
        return;
    }
    let mut bed = NodeBed::start(vec![]).await;
    let vol = bed.volume(1).await;
    let dev = vol.device();
    partition(&dev);
    let part = std::path::PathBuf::from(format!("{}p1", dev.display()));
    let staging = bed.path("staging");
    std::fs::create_dir(&staging).unwrap();

    // The whole device holds a partition table: never formatted.
    let err = bed
        .node
        .node_stage_volume(stage_request(&vol, &staging, mount_cap("ext4", &[]), &[]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(
        err.message().contains("partition table"),
        "{}",
        err.message()
    );

    bed.stage(&vol, &staging, "ext4", &[("partition", "1")])
        .await;
    assert_eq!(mounted_fs(&staging).as_deref(), Some("ext4"));
    let line = mount_line(&staging).unwrap();
    assert!(line.contains(&part.display().to_string()), "{line}");
    // The table is intact: the partition, not the disk, was formatted.
    let table = sh("sfdisk", &["--dump", dev.to_str().unwrap()]);
    assert!(table.contains("start=        2048"), "{table}");

    // Block publish of a partition too.
    let target = bed.path("block");
    let mut req = publish_request(&vol, None, &target, block_cap(), false);
    req.volume_context
        .insert("partition".to_string(), "1".to_string());
    bed.node.node_publish_volume(req).await.unwrap();
    let meta = std::fs::metadata(&target).unwrap();
    let part_meta = std::fs::metadata(&part).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(meta.rdev(), part_meta.rdev(), "the partition is published");

    let mut bad = stage_request(&vol, &bed.path("other"), mount_cap("ext4", &[]), &[]);
    bad.volume_context
        .insert("partition".to_string(), "one".to_string());
    let err = bed.node.node_stage_volume(bad).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("\"one\""), "{}", err.message());
}

#[tokio::test]
async fn a_clone_holds_its_sources_data() {
    if skip_without_root("clone_data") {
        return;
    }
    use ebs_csi_driver::csi;
    use support::csi::{create_req, params, publish_req, unpublish_req};
    let h = support::Harness::start("all").await;
    h.wait_ready().await;
    let mut ctl = h.driver.controller().await;
    let mut node = h.driver.node().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cleanup = support::node::Cleanup::default();
    let node_id = h.sim.instance_id.clone();

    // Stage a volume, write a file, take it down again (data on the device).
    let source = ctl
        .create_volume(create_req("pvc-clone-src", 1, params(&[])))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap()
        .volume_id;
    let published =
        |r: tonic::Response<csi::ControllerPublishVolumeResponse>| r.into_inner().publish_context;
    let stage =
        |vol: &str, ctx: std::collections::HashMap<String, String>, path: &std::path::Path| {
            csi::NodeStageVolumeRequest {
                volume_id: vol.to_string(),
                publish_context: ctx,
                staging_target_path: path.display().to_string(),
                volume_capability: Some(support::csi::mount_cap("ext4")),
                ..Default::default()
            }
        };
    let ctx = published(
        ctl.controller_publish_volume(publish_req(&source, &node_id))
            .await
            .unwrap(),
    );
    let staging = dir.path().join("src");
    std::fs::create_dir(&staging).unwrap();
    cleanup.add(&staging);
    node.node_stage_volume(stage(&source, ctx, &staging))
        .await
        .unwrap();
    std::fs::write(staging.join("kept"), b"the source's bytes").unwrap();
    node.node_unstage_volume(csi::NodeUnstageVolumeRequest {
        volume_id: source.clone(),
        staging_target_path: staging.display().to_string(),
    })
    .await
    .unwrap();

    // Clone it and stage the clone: the file is there.
    let mut req = create_req("pvc-clone", 1, params(&[]));
    req.volume_content_source = Some(csi::VolumeContentSource {
        r#type: Some(csi::volume_content_source::Type::Volume(
            csi::volume_content_source::VolumeSource {
                volume_id: source.clone(),
            },
        )),
    });
    let clone = ctl
        .create_volume(req)
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap()
        .volume_id;
    let ctx = published(
        ctl.controller_publish_volume(publish_req(&clone, &node_id))
            .await
            .unwrap(),
    );
    let cloned = dir.path().join("clone");
    std::fs::create_dir(&cloned).unwrap();
    cleanup.add(&cloned);
    node.node_stage_volume(stage(&clone, ctx, &cloned))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(cloned.join("kept")).unwrap(),
        b"the source's bytes",
        "the clone was not reformatted and holds the source's data"
    );
    node.node_unstage_volume(csi::NodeUnstageVolumeRequest {
        volume_id: clone.clone(),
        staging_target_path: cloned.display().to_string(),
    })
    .await
    .unwrap();
    for v in [&source, &clone] {
        ctl.controller_unpublish_volume(unpublish_req(v, &node_id))
            .await
            .unwrap();
    }
}
