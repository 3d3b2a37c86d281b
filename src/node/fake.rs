//! An in-memory [`Mounter`] for the unit tests of the stage/publish/expand/
//! stats rules: devices with contents and sizes, a mount table with the
//! kernel's stacking, directories and files, and a log of the calls.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::mounter::{FsStats, MountEntry, MountError, Mounter, PathKind, Probe};

/// One GiB.
pub const GIB: u64 = 1 << 30;

/// Device number of the fake devtmpfs (what a block bind mount shows).
const DEVTMPFS: u64 = 6;

#[derive(Debug, Clone)]
struct Device {
    rdev: u64,
    size: u64,
    content: Probe,
    fs_size: Option<u64>,
    vanished: bool,
}

#[derive(Debug, Default)]
struct State {
    devices: HashMap<PathBuf, Device>,
    mounts: Vec<MountEntry>,
    /// Files onto which a device node is bind-mounted: target → device path.
    block_binds: HashMap<PathBuf, PathBuf>,
    dirs: HashSet<PathBuf>,
    files: HashSet<PathBuf>,
    calls: Vec<String>,
    grow_error: Option<String>,
    stats: FsStats,
}

/// The double. All methods take `&self`, like the real one.
#[derive(Debug, Default)]
pub struct FakeMounter {
    state: Mutex<State>,
}

fn not_found(op: &'static str, path: &Path) -> MountError {
    MountError::io(op, path, std::io::Error::from(std::io::ErrorKind::NotFound))
}

impl FakeMounter {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    /// Adds a device node at `path` of `size` bytes holding `content`.
    pub fn add_device(&self, path: &str, size: u64, content: Probe) {
        self.with(|s| {
            let rdev = 100 + s.devices.len() as u64;
            let fs_size = matches!(content, Probe::Filesystem(_)).then_some(size);
            s.devices.insert(
                path.into(),
                Device {
                    rdev,
                    size,
                    content,
                    fs_size,
                    vanished: false,
                },
            );
        })
    }

    /// Sets the size of the filesystem on a device.
    pub fn set_fs_size(&self, path: &str, size: u64) {
        self.with(|s| s.devices.get_mut(Path::new(path)).unwrap().fs_size = Some(size))
    }

    /// Sets the device size (the volume grew).
    pub fn set_device_size(&self, path: &str, size: u64) {
        self.with(|s| s.devices.get_mut(Path::new(path)).unwrap().size = size)
    }

    /// Makes the device disappear from the host (detached under a mount).
    pub fn vanish(&self, path: &str) {
        self.with(|s| s.devices.get_mut(Path::new(path)).unwrap().vanished = true)
    }

    /// Makes the next online growth fail with this output.
    pub fn fail_grow(&self, output: &str) {
        self.with(|s| s.grow_error = Some(output.to_string()))
    }

    /// Sets what statvfs answers.
    pub fn set_stats(&self, stats: FsStats) {
        self.with(|s| s.stats = stats)
    }

    /// Marks the topmost mount at `path` as turned read-only by the filesystem.
    pub fn fs_went_read_only(&self, path: &str) {
        self.with(|s| {
            let entry = s
                .mounts
                .iter_mut()
                .rev()
                .find(|e| e.mount_point == Path::new(path))
                .unwrap();
            entry.super_options = vec!["ro".into()];
        })
    }

    /// Creates a directory (as the CO does before calling).
    pub fn add_dir(&self, path: &str) {
        self.with(|s| s.dirs.insert(path.into()));
    }

    /// The calls made so far, one line each.
    pub fn calls(&self) -> Vec<String> {
        self.with(|s| s.calls.clone())
    }
}

impl State {
    fn top(&self, path: &Path) -> Option<&MountEntry> {
        self.mounts.iter().rev().find(|e| e.mount_point == path)
    }

    fn exists(&self, path: &Path) -> bool {
        self.dirs.contains(path) || self.files.contains(path) || self.devices.contains_key(path)
    }

    /// The device behind `path`: a device node, or a file with one bind-mounted on it.
    fn device(&self, path: &Path) -> Option<&Device> {
        let path = match self.top(path) {
            Some(e) if e.dev == DEVTMPFS => self.block_binds.get(path)?,
            _ => path,
        };
        self.devices.get(path).filter(|d| !d.vanished)
    }
}

impl Mounter for FakeMounter {
    fn probe(&self, device: &Path) -> Result<Probe, MountError> {
        self.with(|s| {
            s.devices
                .get(device)
                .map(|d| d.content.clone())
                .ok_or_else(|| not_found("probe", device))
        })
    }

    fn format(&self, device: &Path, fs_type: &str, args: &[String]) -> Result<(), MountError> {
        self.with(|s| {
            s.calls.push(format!(
                "format {fs_type} {} {}",
                args.join(" "),
                device.display()
            ));
            let d = s
                .devices
                .get_mut(device)
                .ok_or_else(|| not_found("format", device))?;
            d.content = Probe::Filesystem(fs_type.into());
            d.fs_size = Some(d.size);
            Ok(())
        })
    }

    fn mount(
        &self,
        device: &Path,
        target: &Path,
        fs_type: &str,
        options: &[String],
    ) -> Result<(), MountError> {
        self.with(|s| {
            s.calls.push(format!(
                "mount {} {} {fs_type} {}",
                device.display(),
                target.display(),
                options.join(",")
            ));
            if !s.dirs.contains(target) {
                return Err(not_found("mount", target));
            }
            let d = s
                .devices
                .get(device)
                .ok_or_else(|| not_found("mount", device))?;
            if d.content != Probe::Filesystem(fs_type.into()) {
                return Err(MountError::io(
                    "mount",
                    target,
                    std::io::Error::from_raw_os_error(22),
                ));
            }
            let ro = options.iter().any(|o| o == "ro");
            s.mounts.push(MountEntry {
                mount_point: target.into(),
                root: "/".into(),
                dev: d.rdev,
                fs_type: fs_type.into(),
                source: device.display().to_string(),
                mount_options: vec![if ro { "ro" } else { "rw" }.into()],
                super_options: vec!["rw".into()],
            });
            Ok(())
        })
    }

    fn bind(
        &self,
        source: &Path,
        target: &Path,
        readonly: bool,
        options: &[String],
    ) -> Result<(), MountError> {
        self.with(|s| {
            s.calls.push(format!(
                "bind {} {} ro={readonly} {}",
                source.display(),
                target.display(),
                options.join(",")
            ));
            if !s.exists(target) {
                return Err(not_found("bind-mount onto", target));
            }
            let mode = vec![if readonly { "ro" } else { "rw" }.to_string()];
            let entry = if s.devices.contains_key(source) {
                s.block_binds.insert(target.into(), source.into());
                MountEntry {
                    mount_point: target.into(),
                    root: source.display().to_string(),
                    dev: DEVTMPFS,
                    fs_type: "devtmpfs".into(),
                    source: "devtmpfs".into(),
                    mount_options: mode,
                    super_options: vec!["rw".into()],
                }
            } else {
                let mut e = s
                    .top(source)
                    .cloned()
                    .ok_or_else(|| not_found("bind", source))?;
                e.mount_point = target.into();
                e.mount_options = mode;
                e
            };
            s.mounts.push(entry);
            Ok(())
        })
    }

    fn unmount(&self, target: &Path) -> Result<(), MountError> {
        self.with(|s| {
            s.calls.push(format!("unmount {}", target.display()));
            if let Some(i) = s.mounts.iter().rposition(|e| e.mount_point == target) {
                s.mounts.remove(i);
                if s.top(target).is_none() {
                    s.block_binds.remove(target);
                }
            }
            Ok(())
        })
    }

    fn mount_at(&self, path: &Path) -> Result<Option<MountEntry>, MountError> {
        self.with(|s| Ok(s.top(path).cloned()))
    }

    fn mounts(&self) -> Result<Vec<MountEntry>, MountError> {
        self.with(|s| Ok(s.mounts.clone()))
    }

    fn device_number(&self, path: &Path) -> Result<Option<u64>, MountError> {
        self.with(|s| {
            if let Some(d) = s.device(path) {
                return Ok(Some(d.rdev));
            }
            if s.exists(path) {
                Ok(None)
            } else {
                Err(not_found("stat", path))
            }
        })
    }

    fn device_exists(&self, dev: u64) -> bool {
        self.with(|s| s.devices.values().any(|d| d.rdev == dev && !d.vanished))
    }

    fn device_size(&self, path: &Path) -> Result<u64, MountError> {
        self.with(|s| {
            s.device(path)
                .map(|d| d.size)
                .ok_or_else(|| not_found("open", path))
        })
    }

    fn fs_size(&self, device: &Path, _fs_type: &str) -> Result<Option<u64>, MountError> {
        self.with(|s| Ok(s.devices.get(device).and_then(|d| d.fs_size)))
    }

    fn grow_offline(&self, device: &Path, fs_type: &str) -> Result<(), MountError> {
        self.with(|s| {
            s.calls
                .push(format!("grow_offline {} {fs_type}", device.display()));
            let d = s
                .devices
                .get_mut(device)
                .ok_or_else(|| not_found("grow", device))?;
            d.fs_size = Some(d.size);
            Ok(())
        })
    }

    fn grow_online(
        &self,
        device: &Path,
        mount_path: &Path,
        fs_type: &str,
    ) -> Result<(), MountError> {
        self.with(|s| {
            s.calls.push(format!(
                "grow_online {} {} {fs_type}",
                device.display(),
                mount_path.display()
            ));
            if let Some(output) = s.grow_error.take() {
                return Err(MountError::Command {
                    command: "grow".into(),
                    status: "exit status: 1".into(),
                    code: Some(1),
                    output,
                });
            }
            let d = s
                .devices
                .get_mut(device)
                .ok_or_else(|| not_found("grow", device))?;
            d.fs_size = Some(d.size);
            Ok(())
        })
    }

    fn statvfs(&self, path: &Path) -> Result<FsStats, MountError> {
        self.with(|s| {
            if s.exists(path) {
                Ok(s.stats)
            } else {
                Err(not_found("statvfs", path))
            }
        })
    }

    fn path_kind(&self, path: &Path) -> Result<PathKind, MountError> {
        self.with(|s| {
            Ok(if s.dirs.contains(path) {
                PathKind::Dir
            } else if s.files.contains(path) || s.devices.contains_key(path) {
                PathKind::File
            } else {
                PathKind::Missing
            })
        })
    }

    fn make_dir(&self, path: &Path) -> Result<(), MountError> {
        self.with(|s| {
            s.calls.push(format!("make_dir {}", path.display()));
            s.dirs.insert(path.into());
            Ok(())
        })
    }

    fn make_file(&self, path: &Path) -> Result<(), MountError> {
        self.with(|s| {
            s.calls.push(format!("make_file {}", path.display()));
            s.files.insert(path.into());
            Ok(())
        })
    }

    fn remove(&self, path: &Path) -> Result<(), MountError> {
        self.with(|s| {
            s.calls.push(format!("remove {}", path.display()));
            if s.top(path).is_some() {
                return Err(MountError::io(
                    "remove",
                    path,
                    std::io::Error::from_raw_os_error(16),
                ));
            }
            s.dirs.remove(path);
            s.files.remove(path);
            Ok(())
        })
    }

    fn set_group(&self, path: &Path, gid: u32) -> Result<(), MountError> {
        self.with(|s| {
            s.calls.push(format!("set_group {} {gid}", path.display()));
            Ok(())
        })
    }
}
