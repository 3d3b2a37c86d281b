//! NodeExpandVolume: grow the mounted filesystem to the (already grown)
//! device. Block volumes need no filesystem work.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::contract::format::FsType;
use crate::error::{Error, Result};
use crate::node::mounter::{MountError, Mounter, PathKind};

/// How long to wait for the device to reach the requested size: EBS makes
/// the new size visible a moment after the modification reaches `optimizing`.
pub const DEVICE_GROWTH_WAIT: Duration = Duration::from_secs(10);

/// What to expand.
#[derive(Debug, Clone, Copy)]
pub struct ExpandSpec<'a> {
    /// The EBS volume id, for messages.
    pub volume_id: &'a str,
    /// The published (or staged) path.
    pub volume_path: &'a Path,
    /// The volume's device, if found by its NVMe link; without it the
    /// device mounted at `volume_path` is used.
    pub device: Option<&'a Path>,
    /// The capability says block.
    pub block: bool,
    /// capacity_range.required_bytes (0 when not given).
    pub required_bytes: u64,
    /// Bound on waiting for the device to grow.
    pub wait: Duration,
}

/// Grows the filesystem at `spec.volume_path`; returns the capacity in bytes.
pub fn expand(m: &dyn Mounter, spec: &ExpandSpec<'_>) -> Result<u64> {
    let ExpandSpec {
        volume_id,
        volume_path: path,
        ..
    } = *spec;
    let kind = m.path_kind(path)?;
    if kind == PathKind::Missing {
        return Err(Error::NotFound(format!(
            "volume path {} does not exist",
            path.display()
        )));
    }
    let entry = m.mount_at(path)?.ok_or_else(|| {
        Error::NotFound(format!(
            "nothing is mounted at {}: volume {volume_id} is not published there",
            path.display()
        ))
    })?;
    let block = spec.block || kind == PathKind::File;
    let device: PathBuf = match spec.device {
        Some(d) => d.to_path_buf(),
        // No NVMe link (Xen instances) and no devicePath in this request:
        // the device is whatever is mounted there.
        None if block => path.to_path_buf(),
        None => PathBuf::from(&entry.source),
    };
    let device = device.as_path();
    let dev = m.device_number(device).ok().flatten();
    let mounted = if block {
        m.device_number(path)?
    } else {
        Some(entry.dev)
    };
    if dev.is_none() || mounted != dev {
        return Err(Error::NotFound(format!(
            "{} is a mount of {}, not of volume {volume_id} ({})",
            path.display(),
            entry.source,
            device.display()
        )));
    }
    let size = wait_for_size(m, device, spec)?;
    if block {
        return Ok(size);
    }
    m.grow_online(device, path, &entry.fs_type)
        .map_err(|e| explain(e, &entry.fs_type))?;
    tracing::info!(volume_id, path = %path.display(), fs_type = entry.fs_type, size, "filesystem grown");
    Ok(size)
}

/// The device size once it reaches `required_bytes` (bounded wait).
/// Growing before the device has would "succeed" at the old size and the
/// CO would record an expansion that never happened.
fn wait_for_size(m: &dyn Mounter, device: &Path, spec: &ExpandSpec<'_>) -> Result<u64> {
    let start = Instant::now();
    loop {
        let size = m.device_size(device)?;
        if size >= spec.required_bytes {
            return Ok(size);
        }
        if start.elapsed() >= spec.wait {
            return Err(Error::Unavailable(format!(
                "device {} of volume {} is {size} bytes, less than the requested {}; \
                 EBS has not finished growing it yet",
                device.display(),
                spec.volume_id,
                spec.required_bytes
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Names the usual cause of a refused online ext growth.
fn explain(err: MountError, fs_type: &str) -> Error {
    let text = err.to_string();
    if FsType::is_ext_name(fs_type) && text.contains("Permission denied") {
        return Error::Internal(format!(
            "{text} (online ext growth needs CAP_SYS_RESOURCE in the driver's container)"
        ));
    }
    err.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::fake::{FakeMounter, GIB};
    use crate::node::mounter::Probe;

    fn spec<'a>(path: &'a str, device: Option<&'a str>, required: u64) -> ExpandSpec<'a> {
        ExpandSpec {
            volume_id: "vol-1",
            volume_path: Path::new(path),
            device: device.map(Path::new),
            block: false,
            required_bytes: required,
            wait: Duration::from_millis(50),
        }
    }

    fn mounted(m: &FakeMounter, dev: &str, path: &str, fs: &str) {
        m.add_device(dev, GIB, Probe::Filesystem(fs.into()));
        m.add_dir(path);
        m.mount(Path::new(dev), Path::new(path), fs, &[]).unwrap();
    }

    #[test]
    fn a_mounted_filesystem_grows_to_the_device() {
        let m = FakeMounter::default();
        mounted(&m, "/dev/a", "/t", "xfs");
        m.set_device_size("/dev/a", 2 * GIB);
        assert_eq!(
            expand(&m, &spec("/t", Some("/dev/a"), 2 * GIB)).unwrap(),
            2 * GIB
        );
        assert!(m.calls().contains(&"grow_online /dev/a /t xfs".to_string()));
    }

    #[test]
    fn a_device_not_yet_grown_is_unavailable() {
        let m = FakeMounter::default();
        mounted(&m, "/dev/a", "/t", "ext4");
        let err = expand(&m, &spec("/t", Some("/dev/a"), 2 * GIB)).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable);
        assert!(!m.calls().iter().any(|c| c.starts_with("grow")));
    }

    #[test]
    fn unknown_paths_and_other_volumes_are_not_found() {
        let m = FakeMounter::default();
        mounted(&m, "/dev/a", "/t", "ext4");
        m.add_device("/dev/b", GIB, Probe::Empty);
        assert_eq!(
            expand(&m, &spec("/nope", Some("/dev/a"), 0))
                .unwrap_err()
                .code(),
            tonic::Code::NotFound
        );
        m.add_dir("/empty");
        assert_eq!(
            expand(&m, &spec("/empty", Some("/dev/a"), 0))
                .unwrap_err()
                .code(),
            tonic::Code::NotFound
        );
        let err = expand(&m, &spec("/t", Some("/dev/b"), 0)).unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
        assert!(err.to_string().contains("/dev/b"), "{err}");
    }

    #[test]
    fn without_a_known_device_the_mounted_one_is_grown() {
        let m = FakeMounter::default();
        mounted(&m, "/dev/a", "/t", "xfs");
        m.set_device_size("/dev/a", 2 * GIB);
        assert_eq!(expand(&m, &spec("/t", None, 0)).unwrap(), 2 * GIB);
        assert!(m.calls().contains(&"grow_online /dev/a /t xfs".to_string()));
    }

    #[test]
    fn ext_permission_errors_name_the_capability() {
        let m = FakeMounter::default();
        mounted(&m, "/dev/a", "/t", "ext4");
        m.fail_grow("resize2fs: Permission denied to resize filesystem");
        let err = expand(&m, &spec("/t", Some("/dev/a"), 0)).unwrap_err();
        assert!(err.to_string().contains("CAP_SYS_RESOURCE"), "{err}");
    }
}
