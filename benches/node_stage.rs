//! NodeStageVolume's own cost: on the same loop device, a plain `mkfs` +
//! mount(2) (what no driver can avoid) against NodeStageVolume of the empty
//! device (probe with blkid, the blank-device check, mkfs, mount, the
//! checks around them, and the gRPC call). Alternating which goes first;
//! between the two the device is made blank again (its first 8 MiB and
//! last MiB zeroed, where the probes look). Needs root.
//!
//! ```sh
//! sudo cargo bench --bench node_stage      # BENCH_STAGES=20, BENCH_FS=ext4
//! ```

mod common;
#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use common::*;
use ebs_csi_driver::contract::format::FormatOptions;
use ebs_csi_driver::node::format::mkfs_args;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use support::node::{NodeBed, mount_cap, stage_request, unstage_request};
use support::{is_root, volumes::device_size};

/// Zeroes where blkid and the blank-device check look.
fn blank(device: &Path) {
    let size = device_size(device);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(device)
        .expect("open device");
    let zeros = vec![0u8; 8 << 20];
    f.write_all(&zeros).expect("zero head");
    f.seek(SeekFrom::Start(size - (1 << 20))).expect("seek");
    f.write_all(&zeros[..1 << 20]).expect("zero tail");
    f.sync_all().expect("sync");
}

/// mkfs with the driver's own arguments, then mount(2); seconds.
fn plain(device: &Path, fs: &str, dir: &Path) -> f64 {
    let fs_type = ebs_csi_driver::node::format::fs_type(fs).expect("fs type");
    let args = mkfs_args(fs_type, &FormatOptions::default(), false);
    let t = Instant::now();
    let out = Command::new(format!("mkfs.{fs}"))
        .args(&args)
        .arg(device)
        .output()
        .expect("mkfs");
    assert!(
        out.status.success(),
        "mkfs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    mount(Some(device), dir, Some(fs), MsFlags::empty(), None::<&str>).expect("mount");
    let took = t.elapsed().as_secs_f64();
    umount2(dir, MntFlags::MNT_DETACH).expect("umount");
    took
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    if !is_root() {
        println!("SKIP node_stage bench: needs root (loop devices, mkfs, mount)");
        return;
    }
    let n: usize = env_or("BENCH_STAGES", 20);
    let fs = std::env::var("BENCH_FS").unwrap_or_else(|_| "ext4".into());
    let mut bed = NodeBed::start(vec![]).await;
    let (mut plains, mut stages, mut overheads) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let vol = bed.volume(1).await;
        let device = vol.device();
        let dir = bed.path(&format!("plain-{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let staging = bed.path(&format!("staging-{i}"));
        let run_stage = async |bed: &mut NodeBed| {
            let t = Instant::now();
            bed.node
                .node_stage_volume(stage_request(&vol, &staging, mount_cap(&fs, &[]), &[]))
                .await
                .expect("stage");
            let took = t.elapsed().as_secs_f64();
            bed.node
                .node_unstage_volume(unstage_request(&vol.volume_id, &staging))
                .await
                .expect("unstage");
            took
        };
        let (p, s) = if i % 2 == 0 {
            let p = plain(&device, &fs, &dir);
            blank(&device);
            (p, run_stage(&mut bed).await)
        } else {
            let s = run_stage(&mut bed).await;
            blank(&device);
            (plain(&device, &fs, &dir), s)
        };
        plains.push(p * 1000.0);
        stages.push(s * 1000.0);
        overheads.push((s - p) * 1000.0);
    }
    println!("node_stage bench: {n} empty 1 GiB loop devices, {fs}");
    println!("| | p50 ms | p95 ms |");
    println!("|---|---|---|");
    for (what, v) in [
        ("mkfs + mount", &plains),
        ("NodeStageVolume", &stages),
        ("overhead", &overheads),
    ] {
        println!(
            "| {what} | {:.1} | {:.1} |",
            percentile(v, 0.5),
            percentile(v, 0.95)
        );
    }
    if std::env::var("SHOW_LOG").is_ok() {
        println!("{}", bed.h.driver.log_text());
    }
    println!(
        "overhead p50 {:.1} ms, target ≤ 10 ms (ratio {:.2})",
        percentile(&overheads, 0.5),
        percentile(&overheads, 0.5) / 10.0
    );
}
