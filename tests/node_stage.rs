//! NodeStageVolume / NodeUnstageVolume on real loop devices attached through
//! the EC2 emulator, with the real mkfs, blkid and mount. Root only.

mod support;

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use support::node::{
    NodeBed, block_cap, mount_cap, mount_line, mounted_fs, sh, skip_without_root, stage_request,
};
use tonic::Code;

#[tokio::test]
async fn stage_formats_a_fresh_device_with_the_context_options_and_mounts_it() {
    if skip_without_root("stage_formats_a_fresh_device") {
        return;
    }
    let mut bed = NodeBed::start(vec![]).await;
    let vol = bed.volume(2).await;
    let staging = bed.path("staging");
    std::fs::create_dir(&staging).unwrap();
    bed.stage(
        &vol,
        &staging,
        "ext4",
        &[("inodeSize", "512"), ("bytesPerInode", "65536")],
    )
    .await;

    assert_eq!(
        mounted_fs(&staging).as_deref(),
        Some("ext4"),
        "{:?}",
        mount_line(&staging)
    );
    let dev = vol.device();
    let line = mount_line(&staging).unwrap();
    assert!(line.contains(&dev.display().to_string()), "{line}");
    let super_block = sh("dumpe2fs", &["-h", dev.to_str().unwrap()]);
    assert!(
        super_block.contains("Inode size:\t          512"),
        "{super_block}"
    );
    // 2 GiB / 64 KiB per inode = 32768 inodes.
    assert!(
        super_block.contains("Inode count:              32768"),
        "{super_block}"
    );
    std::fs::write(staging.join("hello"), b"world").unwrap();
}

#[tokio::test]
async fn data_survives_unstage_and_restage_never_reformatted() {
    if skip_without_root("data_survives_unstage_and_restage") {
        return;
    }
    let mut bed = NodeBed::start(vec![]).await;
    let vol = bed.volume(1).await;
    let staging = bed.path("staging");
    for fs in ["xfs", "xfs"] {
        bed.stage(&vol, &staging, fs, &[]).await;
        assert_eq!(mounted_fs(&staging).as_deref(), Some("xfs"));
        if !staging.join("kept").exists() {
            std::fs::write(staging.join("kept"), b"precious").unwrap();
        }
        bed.unstage(&vol.volume_id, &staging).await;
        assert!(mount_line(&staging).is_none(), "unstage must unmount");
        assert!(staging.is_dir(), "the CO's staging directory stays");
    }
    bed.stage(&vol, &staging, "xfs", &[]).await;
    assert_eq!(std::fs::read(staging.join("kept")).unwrap(), b"precious");
}

#[tokio::test]
async fn a_device_formatted_xfs_staged_as_ext4_keeps_its_filesystem_and_data() {
    if skip_without_root("xfs_device_staged_as_ext4") {
        return;
    }
    let mut bed = NodeBed::start(vec![]).await;
    let vol = bed.volume(1).await;
    let dev = vol.device();
    sh("mkfs.xfs", &["-q", dev.to_str().unwrap()]);
    let manual = bed.path("manual");
    std::fs::create_dir(&manual).unwrap();
    sh("mount", &[dev.to_str().unwrap(), manual.to_str().unwrap()]);
    std::fs::write(manual.join("data"), b"not yours to format").unwrap();
    sh("umount", &[manual.to_str().unwrap()]);
    let uuid_before = sh(
        "blkid",
        &["-p", "-s", "UUID", "-o", "value", dev.to_str().unwrap()],
    );

    let staging = bed.path("staging");
    bed.stage(&vol, &staging, "ext4", &[]).await;
    assert_eq!(
        mounted_fs(&staging).as_deref(),
        Some("xfs"),
        "staged as it is"
    );
    assert_eq!(
        std::fs::read(staging.join("data")).unwrap(),
        b"not yours to format"
    );
    let uuid_after = sh(
        "blkid",
        &["-p", "-s", "UUID", "-o", "value", dev.to_str().unwrap()],
    );
    assert_eq!(uuid_before, uuid_after, "same filesystem, not a new one");
    assert!(
        bed.h.driver.log_text().contains("different filesystem"),
        "a warning is logged"
    );
}

/// Reads the first `len` bytes of `path`.
fn head(path: &Path, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    std::fs::File::open(path)
        .unwrap()
        .read_exact(&mut buf)
        .unwrap();
    buf
}

#[tokio::test]
async fn random_bytes_without_a_filesystem_are_refused_and_left_untouched() {
    if skip_without_root("random_bytes_are_refused") {
        return;
    }
    let mut bed = NodeBed::start(vec![]).await;
    let vol = bed.volume(1).await;
    let dev = vol.device();
    // Data blkid cannot name, past the first sectors where a signature would be.
    let mut noise = vec![0u8; 256 << 10];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut noise)
        .unwrap();
    {
        let mut f = std::fs::OpenOptions::new().write(true).open(&dev).unwrap();
        f.seek(SeekFrom::Start(1 << 20)).unwrap();
        f.write_all(&noise).unwrap();
        f.sync_all().unwrap();
    }
    let out = std::process::Command::new("blkid")
        .args(["-p", dev.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "blkid must see nothing, or the test proves nothing"
    );
    let before = head(&dev, 4 << 20);

    let staging = bed.path("staging");
    let err = bed
        .node
        .node_stage_volume(stage_request(&vol, &staging, mount_cap("ext4", &[]), &[]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let msg = err.message();
    assert!(
        msg.contains(&vol.volume_id) && msg.contains("no recognisable filesystem"),
        "{msg}"
    );
    assert!(
        msg.contains(&(1u64 << 20).to_string()),
        "names the offset: {msg}"
    );
    assert!(mount_line(&staging).is_none());
    assert_eq!(head(&dev, 4 << 20), before, "not a byte changed");
}

#[tokio::test]
async fn data_just_past_four_mib_is_refused_too() {
    if skip_without_root("data_just_past_four_mib") {
        return;
    }
    // The blank check decides alone when it finds only zeros (blkid is run
    // only for devices holding something), so its head must reach every
    // signature blkid knows: LUKS2's last secondary header sits at 4 MiB.
    let mut bed = NodeBed::start(vec![]).await;
    let vol = bed.volume(1).await;
    let dev = vol.device();
    let at: u64 = (4 << 20) + 512;
    {
        let mut f = std::fs::OpenOptions::new().write(true).open(&dev).unwrap();
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(b"data a driver must not format over").unwrap();
        f.sync_all().unwrap();
    }
    let staging = bed.path("staging");
    let err = bed
        .node
        .node_stage_volume(stage_request(&vol, &staging, mount_cap("xfs", &[]), &[]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains(&at.to_string()),
        "names the offset: {}",
        err.message()
    );
    assert!(mount_line(&staging).is_none());
}

#[tokio::test]
async fn staging_is_idempotent_and_refuses_a_second_device_on_the_path() {
    if skip_without_root("staging_is_idempotent") {
        return;
    }
    let mut bed = NodeBed::start(vec![]).await;
    let (a, b) = (bed.volume(1).await, bed.volume(1).await);
    let staging = bed.path("staging");
    for _ in 0..5 {
        bed.stage(&a, &staging, "ext4", &[]).await;
    }
    let layers = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.split(' ').nth(4) == Some(staging.to_str().unwrap()))
        .count();
    assert_eq!(layers, 1, "staged once, not stacked");

    let err = bed
        .node
        .node_stage_volume(stage_request(&b, &staging, mount_cap("ext4", &[]), &[]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains(&b.volume_id), "{}", err.message());

    // Unstage: twice, and for a path that never existed — always OK.
    bed.unstage(&a.volume_id, &staging).await;
    bed.unstage(&a.volume_id, &staging).await;
    let never = bed.dir.path().join("never-there");
    bed.unstage(&a.volume_id, &never).await;

    // Block access: nothing is mounted at the staging path.
    let block_staging = bed.path("block-staging");
    std::fs::create_dir(&block_staging).unwrap();
    bed.node
        .node_stage_volume(stage_request(&b, &block_staging, block_cap(), &[]))
        .await
        .unwrap();
    assert!(mount_line(&block_staging).is_none());
}

#[tokio::test]
async fn bad_requests_are_invalid_argument_before_anything_is_touched() {
    if skip_without_root("bad_stage_requests") {
        return;
    }
    let mut bed = NodeBed::start(vec![]).await;
    let vol = bed.volume(1).await;
    let staging = bed.path("staging");
    let good = stage_request(&vol, &staging, mount_cap("ext4", &[]), &[]);
    let mut cases = Vec::new();
    let mut r = good.clone();
    r.volume_id.clear();
    cases.push((r, "volume_id"));
    let mut r = good.clone();
    r.staging_target_path.clear();
    cases.push((r, "staging_target_path"));
    let mut r = good.clone();
    r.staging_target_path = "relative/stage".into();
    cases.push((r, "relative/stage"));
    let mut r = good.clone();
    r.staging_target_path = format!("{}/../escape", staging.display());
    cases.push((r, ".."));
    let mut r = good.clone();
    r.volume_capability = None;
    cases.push((r, "volume_capability"));
    let r = stage_request(&vol, &staging, mount_cap("ntfs", &[]), &[]);
    cases.push((r, "ntfs"));
    let r = stage_request(
        &vol,
        &staging,
        mount_cap("xfs", &[]),
        &[("bytesPerInode", "4096")],
    );
    cases.push((r, "bytesPerInode"));
    for (req, named) in cases {
        let err = bed.node.node_stage_volume(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{named}: {err:?}");
        assert!(err.message().contains(named), "{named}: {}", err.message());
    }
    assert!(!staging.exists(), "nothing created");
    let out = std::process::Command::new("blkid")
        .args(["-p", vol.device().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "nothing formatted");
}

#[tokio::test]
async fn a_device_that_never_appears_is_not_found_and_concurrent_stages_abort() {
    if skip_without_root("device_never_appears") {
        return;
    }
    let mut bed = NodeBed::start(vec![]).await;
    // Created but not attached: the node waits for its device, then gives up.
    let volume_id = bed.h.sim.create_volume(1).await;
    let vol = support::volumes::AttachedVolume {
        link: bed.h.sim.link_path(&volume_id),
        volume_id,
        device_name: "/dev/xvdcz".into(),
        size_gib: 1,
    };
    let staging = bed.path("staging");
    let mut first_client = bed.node.clone();
    let req = stage_request(&vol, &staging, mount_cap("ext4", &[]), &[]);
    let started = Instant::now();
    let first = tokio::spawn(async move { first_client.node_stage_volume(req).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = bed
        .node
        .node_stage_volume(stage_request(&vol, &staging, mount_cap("ext4", &[]), &[]))
        .await
        .unwrap_err();
    assert_eq!(second.code(), Code::Aborted, "{second:?}");
    assert!(
        second.message().contains(&vol.volume_id),
        "{}",
        second.message()
    );

    let first = first.await.unwrap().unwrap_err();
    assert_eq!(first.code(), Code::NotFound, "{first:?}");
    assert!(started.elapsed() < Duration::from_secs(30), "bounded wait");
    let msg = first.message();
    assert!(
        msg.contains(&vol.link.display().to_string()) && msg.contains("/dev/sdcz"),
        "names what it looked for: {msg}"
    );
}

/// Median of a few timings.
fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test]
async fn stage_wall_time_vs_raw_mkfs_and_mount() {
    if skip_without_root("stage_wall_time") {
        return;
    }
    const SIZE_GIB: i32 = 10;
    const RUNS: usize = 3;
    let mut bed = NodeBed::start(vec![]).await;
    let mut report = Vec::new();
    for fs in ["ext4", "xfs"] {
        let (mut staged, mut raw_same, mut raw_default) = (Vec::new(), Vec::new(), Vec::new());
        for run in 0..RUNS {
            let vol = bed.volume(SIZE_GIB).await;
            let staging = bed.path(&format!("{fs}-stage-{run}"));
            std::fs::create_dir(&staging).unwrap();
            let req = stage_request(&vol, &staging, mount_cap(fs, &[]), &[]);
            let t = Instant::now();
            bed.node.node_stage_volume(req).await.unwrap();
            staged.push(t.elapsed());
            bed.unstage(&vol.volume_id, &staging).await;

            // The same work by hand, with the driver's mkfs arguments, then
            // with mkfs defaults (discard pass, eager init) for reference.
            for (label, args, into) in [
                (
                    "same",
                    if fs == "ext4" {
                        vec![
                            "-F",
                            "-m0",
                            "-E",
                            "lazy_itable_init=1,lazy_journal_init=1,nodiscard",
                        ]
                    } else {
                        vec!["-f", "-K"]
                    },
                    &mut raw_same,
                ),
                (
                    "default",
                    if fs == "ext4" { vec!["-F"] } else { vec!["-f"] },
                    &mut raw_default,
                ),
            ] {
                let other = bed.volume(SIZE_GIB).await;
                let dev = other.device();
                let dir = bed.path(&format!("{fs}-raw-{run}-{label}"));
                std::fs::create_dir(&dir).unwrap();
                let t = Instant::now();
                let mut all = args.clone();
                all.push(dev.to_str().unwrap());
                sh(&format!("mkfs.{fs}"), &all);
                sh("mount", &[dev.to_str().unwrap(), dir.to_str().unwrap()]);
                into.push(t.elapsed());
                sh("umount", &[dir.to_str().unwrap()]);
            }
        }
        report.push(format!(
            "{fs} {SIZE_GIB} GiB: NodeStage (RPC, incl. lookup+blkid+zero-check) median {:?} {:?}; \
             raw mkfs+mount same args median {:?} {:?}; raw mkfs defaults+mount median {:?} {:?}",
            median(staged.clone()),
            staged,
            median(raw_same.clone()),
            raw_same,
            median(raw_default.clone()),
            raw_default
        ));
    }
    for line in &report {
        eprintln!("TIMING {line}");
    }
}
