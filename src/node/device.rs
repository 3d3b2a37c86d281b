//! Finding the block device of an attached EBS volume.
//!
//! On Nitro instances EBS volumes are NVMe devices whose names (`nvme1n1`)
//! have nothing to do with the device name EC2 was asked for; udev links them
//! by serial as `/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol<id>`.
//! On Xen instances the device appears under the requested name, or its
//! `sd`↔`xvd` alias. So: the NVMe link first, then the publish context's
//! `devicePath` and its alias; links are resolved to the real node, and a
//! device whose NVMe serial names another volume is never used.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Prefix of the by-id link name of an EBS NVMe device.
pub const NVME_LINK_PREFIX: &str = "nvme-Amazon_Elastic_Block_Store_";

/// How long to wait for a device that has not appeared yet: udev usually
/// links it within a second of the attachment; kubelet retries after this.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(10);

/// Locates volume devices on this host.
#[derive(Debug, Clone)]
pub struct DeviceFinder {
    /// Directory holding the NVMe links (`--device-dir`).
    pub dir: PathBuf,
    /// Where block devices describe themselves (`/sys/block`).
    pub sys_block: PathBuf,
    /// Bound on waiting for the device to appear.
    pub wait: Duration,
    /// Interval between looks while waiting.
    pub poll: Duration,
    /// Accept only block device nodes (off in unit tests, which use files).
    pub require_block: bool,
}

impl DeviceFinder {
    /// A finder for this host with the link directory `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DeviceFinder {
            dir: dir.into(),
            sys_block: PathBuf::from("/sys/block"),
            wait: DEFAULT_WAIT,
            poll: Duration::from_millis(100),
            require_block: true,
        }
    }

    /// The NVMe link for `volume_id`: `vol-0abc` → `<dir>/nvme-Amazon_Elastic_Block_Store_vol0abc`.
    pub fn nvme_link(&self, volume_id: &str) -> PathBuf {
        self.dir
            .join(format!("{NVME_LINK_PREFIX}{}", volume_id.replace('-', "")))
    }

    /// Every path that may name the device, in the order they are tried.
    pub fn candidates(&self, volume_id: &str, device_path: Option<&str>) -> Vec<PathBuf> {
        let mut paths = vec![self.nvme_link(volume_id)];
        if let Some(dp) = device_path.map(str::trim).filter(|p| p.starts_with('/')) {
            paths.push(PathBuf::from(dp));
            let alias = if let Some(rest) = dp.strip_prefix("/dev/xvd") {
                Some(format!("/dev/sd{rest}"))
            } else {
                dp.strip_prefix("/dev/sd")
                    .map(|rest| format!("/dev/xvd{rest}"))
            };
            paths.extend(alias.map(PathBuf::from));
        }
        paths
    }

    /// Looks once: the resolved device, or None when no candidate exists.
    /// A candidate whose serial names another volume is skipped, and
    /// reported when nothing else matches.
    pub fn find_now(&self, volume_id: &str, device_path: Option<&str>) -> Result<Option<PathBuf>> {
        let mut mismatch = None;
        for candidate in self.candidates(volume_id, device_path) {
            let Ok(resolved) = candidate.canonicalize() else {
                continue;
            };
            if self.require_block && !is_block_device(&resolved) {
                tracing::warn!(path = %candidate.display(), resolved = %resolved.display(), "not a block device; skipped");
                continue;
            }
            match self.serial_of(&resolved) {
                Some(serial) if serial_names_other_volume(&serial, volume_id) => {
                    tracing::warn!(path = %candidate.display(), serial, volume_id, "device belongs to another volume; skipped");
                    mismatch = Some(format!(
                        "{} (→ {}) has serial {serial:?}, which is not volume {volume_id}",
                        candidate.display(),
                        resolved.display()
                    ));
                }
                _ => return Ok(Some(resolved)),
            }
        }
        match mismatch {
            Some(m) => Err(Error::FailedPrecondition(format!(
                "no device for volume {volume_id}: {m}"
            ))),
            None => Ok(None),
        }
    }

    /// Waits (bounded) for the device of `volume_id` and returns its real
    /// path; NotFound naming every path looked at when it does not appear.
    pub fn find(&self, volume_id: &str, device_path: Option<&str>) -> Result<PathBuf> {
        let start = Instant::now();
        loop {
            if let Some(found) = self.find_now(volume_id, device_path)? {
                tracing::debug!(volume_id, device = %found.display(), "device found");
                return Ok(found);
            }
            if start.elapsed() >= self.wait {
                let looked: Vec<String> = self
                    .candidates(volume_id, device_path)
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect();
                return Err(Error::NotFound(format!(
                    "no device for volume {volume_id} after {:?}: looked for {}",
                    self.wait,
                    looked.join(", ")
                )));
            }
            std::thread::sleep(self.poll);
        }
    }

    /// Partition `n` of `device`, the way the kernel names partitions
    /// (`nvme1n1` → `nvme1n1p2`, `loop3` → `loop3p2`, `xvdf` → `xvdf2`),
    /// waiting (bounded) for it to appear; NotFound naming it otherwise.
    pub fn partition(&self, device: &Path, n: u32) -> Result<PathBuf> {
        let name = device.to_string_lossy();
        let path = if name.ends_with(|c: char| c.is_ascii_digit()) {
            PathBuf::from(format!("{name}p{n}"))
        } else {
            PathBuf::from(format!("{name}{n}"))
        };
        let start = Instant::now();
        loop {
            if path.exists() && (!self.require_block || is_block_device(&path)) {
                return Ok(path);
            }
            if start.elapsed() >= self.wait {
                return Err(Error::NotFound(format!(
                    "partition {n} of {} does not exist (no {})",
                    device.display(),
                    path.display()
                )));
            }
            std::thread::sleep(self.poll);
        }
    }

    /// The serial the device reports in sysfs (NVMe devices do; EBS puts
    /// the volume id without its dash there), if any.
    fn serial_of(&self, device: &Path) -> Option<String> {
        let name = device.file_name()?.to_str()?;
        let text = std::fs::read_to_string(self.sys_block.join(name).join("device/serial")).ok()?;
        let serial = text.trim().to_string();
        (!serial.is_empty()).then_some(serial)
    }
}

/// Whether `serial` is an EBS serial (`vol…`) of a volume other than `volume_id`.
fn serial_names_other_volume(serial: &str, volume_id: &str) -> bool {
    serial.starts_with("vol") && serial != volume_id.replace('-', "")
}

fn is_block_device(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finder(dir: &Path) -> DeviceFinder {
        DeviceFinder {
            dir: dir.join("by-id"),
            sys_block: dir.join("sys"),
            wait: Duration::from_millis(150),
            poll: Duration::from_millis(20),
            require_block: false,
        }
    }

    fn fake_device(dir: &Path, name: &str, serial: Option<&str>) -> PathBuf {
        let dev = dir.join(name);
        std::fs::write(&dev, b"").unwrap();
        if let Some(s) = serial {
            let sys = dir.join("sys").join(name).join("device");
            std::fs::create_dir_all(&sys).unwrap();
            std::fs::write(sys.join("serial"), format!("{s}   \n")).unwrap();
        }
        dev
    }

    #[test]
    fn the_nvme_link_is_resolved_to_the_device() {
        let tmp = tempfile::tempdir().unwrap();
        let f = finder(tmp.path());
        std::fs::create_dir_all(&f.dir).unwrap();
        let dev = fake_device(tmp.path(), "nvme1n1", Some("vol0abc"));
        std::os::unix::fs::symlink(&dev, f.dir.join("nvme-Amazon_Elastic_Block_Store_vol0abc"))
            .unwrap();
        let found = f.find("vol-0abc", Some("/dev/xvdba")).unwrap();
        assert_eq!(found, dev.canonicalize().unwrap());
    }

    #[test]
    fn device_path_and_its_alias_are_candidates() {
        let f = DeviceFinder::new("/dev/disk/by-id");
        let c = f.candidates("vol-1", Some("/dev/xvdba"));
        assert_eq!(
            c,
            [
                PathBuf::from("/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol1"),
                PathBuf::from("/dev/xvdba"),
                PathBuf::from("/dev/sdba"),
            ]
        );
        assert_eq!(
            f.candidates("vol-1", Some("/dev/sdf"))[2],
            PathBuf::from("/dev/xvdf")
        );
        assert_eq!(f.candidates("vol-1", Some("relative")).len(), 1);
    }

    #[test]
    fn a_device_of_another_volume_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let f = finder(tmp.path());
        let dev = fake_device(tmp.path(), "nvme2n1", Some("vol0other"));
        let err = f.find("vol-0abc", dev.to_str()).unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        assert!(err.to_string().contains("vol0other") && err.to_string().contains("vol-0abc"));
        // No serial (Xen, loop devices): accepted.
        let plain = fake_device(tmp.path(), "xvdf", None);
        assert!(f.find("vol-0abc", plain.to_str()).is_ok());
    }

    #[test]
    fn a_missing_device_is_not_found_after_the_wait_naming_the_paths() {
        let tmp = tempfile::tempdir().unwrap();
        let f = finder(tmp.path());
        let start = Instant::now();
        let err = f.find("vol-0abc", Some("/dev/xvdzz")).unwrap_err();
        assert!(start.elapsed() >= f.wait);
        assert_eq!(err.code(), tonic::Code::NotFound);
        let msg = err.to_string();
        assert!(
            msg.contains("nvme-Amazon_Elastic_Block_Store_vol0abc") && msg.contains("/dev/sdzz"),
            "{msg}"
        );
    }
}
