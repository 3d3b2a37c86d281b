//! Node-test bed: the emulator and a `node` driver wired to it, a scratch
//! directory for staging and target paths, CSI request builders, and a
//! guard that unmounts everything the test mounted even when it fails.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ebs_csi_driver::csi;
use ebs_csi_driver::csi::node_client::NodeClient;
use ebs_csi_driver::csi::volume_capability::{
    AccessMode, AccessType, BlockVolume, MountVolume, access_mode::Mode,
};
use tonic::transport::Channel;

use super::volumes::AttachedVolume;
use super::{Harness, SimOptions, is_root};

/// The host tools the node tests (and the driver) run.
pub const NODE_TOOLS: &[&str] = &[
    "blkid",
    "mkfs.ext4",
    "mkfs.xfs",
    "dumpe2fs",
    "e2fsck",
    "resize2fs",
    "xfs_info",
    "xfs_growfs",
    "mount",
    "umount",
];

/// True (after saying why) when the test cannot run here: it needs root
/// for loop devices and mounts, and e2fsprogs, xfsprogs and util-linux.
pub fn skip_without_root(test: &str) -> bool {
    if !is_root() {
        eprintln!(
            "SKIP {test}: needs root (loop devices, mkfs, mount); run the node tests as root"
        );
        return true;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path)
        .chain(["/sbin", "/usr/sbin"].map(PathBuf::from))
        .collect();
    let missing: Vec<&str> = NODE_TOOLS
        .iter()
        .copied()
        .filter(|tool| !dirs.iter().any(|d| d.join(tool).is_file()))
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "SKIP {test}: missing host tools {missing:?} (install e2fsprogs, xfsprogs, util-linux)"
        );
        return true;
    }
    false
}

/// Unmounts (lazily, so a busy mount cannot wedge the test) every
/// registered path on drop, most recent first, until nothing is left.
#[derive(Default)]
pub struct Cleanup {
    paths: Vec<PathBuf>,
}

impl Cleanup {
    /// Registers `path` for unmounting.
    pub fn add(&mut self, path: &Path) {
        self.paths.push(path.to_path_buf());
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for path in self.paths.iter().rev() {
            for _ in 0..8 {
                if nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH).is_err() {
                    break;
                }
            }
        }
    }
}

/// The emulator, a node driver, a scratch dir and the unmount guard.
/// Fields drop in order: mounts go first, then the driver and emulator
/// (which detaches its loop devices).
pub struct NodeBed {
    /// Unmounts what the test mounted.
    pub cleanup: Cleanup,
    /// A Node client of the driver.
    pub node: NodeClient<Channel>,
    /// Scratch directory for staging/target paths.
    pub dir: tempfile::TempDir,
    /// Emulator and driver.
    pub h: Harness,
}

impl NodeBed {
    /// Starts the emulator and a ready `node` driver with extra `args`.
    pub async fn start(args: Vec<String>) -> NodeBed {
        NodeBed::start_with(SimOptions::default(), args).await
    }

    /// As [`NodeBed::start`], with emulator options.
    pub async fn start_with(opts: SimOptions, args: Vec<String>) -> NodeBed {
        let h = Harness::start_with("node", opts, args).await;
        h.wait_ready().await;
        let node = h.driver.node().await;
        NodeBed {
            cleanup: Cleanup::default(),
            node,
            dir: tempfile::Builder::new()
                .prefix("node-test-")
                .tempdir()
                .expect("temp dir"),
            h,
        }
    }

    /// `<scratch>/<name>`, registered for unmounting.
    pub fn path(&mut self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        self.cleanup.add(&p);
        p
    }

    /// A new volume of `size_gib` attached to this node.
    pub async fn volume(&self, size_gib: i32) -> AttachedVolume {
        self.h.sim.create_and_attach(size_gib).await
    }

    /// Stages `vol` at `staging` as `fs` with `context`, panicking on error.
    pub async fn stage(
        &mut self,
        vol: &AttachedVolume,
        staging: &Path,
        fs: &str,
        context: &[(&str, &str)],
    ) {
        let req = stage_request(vol, staging, mount_cap(fs, &[]), context);
        self.node.node_stage_volume(req).await.unwrap_or_else(|e| {
            panic!(
                "stage {}: {e:?}\nlog:\n{}",
                vol.volume_id,
                self.h.driver.log_text()
            )
        });
    }

    /// Unstages, panicking on error.
    pub async fn unstage(&mut self, volume_id: &str, staging: &Path) {
        self.node
            .node_unstage_volume(unstage_request(volume_id, staging))
            .await
            .unwrap_or_else(|e| panic!("unstage {volume_id}: {e:?}"));
    }
}

/// A SINGLE_NODE_WRITER mount capability.
pub fn mount_cap(fs: &str, flags: &[&str]) -> csi::VolumeCapability {
    csi::VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: fs.to_string(),
            mount_flags: flags.iter().map(|f| f.to_string()).collect(),
            volume_mount_group: String::new(),
        })),
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
    }
}

/// A SINGLE_NODE_WRITER block capability.
pub fn block_cap() -> csi::VolumeCapability {
    csi::VolumeCapability {
        access_type: Some(AccessType::Block(BlockVolume {})),
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
    }
}

fn publish_context(vol: &AttachedVolume) -> HashMap<String, String> {
    HashMap::from([("devicePath".to_string(), vol.device_name.clone())])
}

/// NodeStageVolume as kubelet sends it after ControllerPublish.
pub fn stage_request(
    vol: &AttachedVolume,
    staging: &Path,
    cap: csi::VolumeCapability,
    context: &[(&str, &str)],
) -> csi::NodeStageVolumeRequest {
    csi::NodeStageVolumeRequest {
        volume_id: vol.volume_id.clone(),
        publish_context: publish_context(vol),
        staging_target_path: staging.display().to_string(),
        volume_capability: Some(cap),
        secrets: Default::default(),
        volume_context: context
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// NodeUnstageVolume.
pub fn unstage_request(volume_id: &str, staging: &Path) -> csi::NodeUnstageVolumeRequest {
    csi::NodeUnstageVolumeRequest {
        volume_id: volume_id.to_string(),
        staging_target_path: staging.display().to_string(),
    }
}

/// NodePublishVolume.
pub fn publish_request(
    vol: &AttachedVolume,
    staging: Option<&Path>,
    target: &Path,
    cap: csi::VolumeCapability,
    readonly: bool,
) -> csi::NodePublishVolumeRequest {
    csi::NodePublishVolumeRequest {
        volume_id: vol.volume_id.clone(),
        publish_context: publish_context(vol),
        staging_target_path: staging.map(|s| s.display().to_string()).unwrap_or_default(),
        target_path: target.display().to_string(),
        volume_capability: Some(cap),
        readonly,
        secrets: Default::default(),
        volume_context: Default::default(),
    }
}

/// NodeUnpublishVolume.
pub fn unpublish_request(volume_id: &str, target: &Path) -> csi::NodeUnpublishVolumeRequest {
    csi::NodeUnpublishVolumeRequest {
        volume_id: volume_id.to_string(),
        target_path: target.display().to_string(),
    }
}

/// The line of /proc/self/mountinfo for the topmost mount at `path`.
pub fn mount_line(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let wanted = path.display().to_string();
    text.lines()
        .rev()
        .find(|l| l.split(' ').nth(4) == Some(wanted.as_str()))
        .map(str::to_string)
}

/// The filesystem type of the mount at `path`, if mounted.
pub fn mounted_fs(path: &Path) -> Option<String> {
    let line = mount_line(path)?;
    let after = line.split(" - ").nth(1)?;
    after.split(' ').next().map(str::to_string)
}

/// Runs a command, panicking with its output on failure; returns stdout.
pub fn sh(program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
