//! NodeGetVolumeStats: usage from statvfs (filesystems) or the device size
//! (block), and the volume's condition.

use std::path::Path;

use crate::error::{Error, Result};
use crate::node::mounter::{FsStats, MountEntry, Mounter, PathKind};

/// What NodeGetVolumeStats reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeStats {
    /// Usage of a filesystem volume.
    pub fs: Option<FsStats>,
    /// Size of a block volume.
    pub block_bytes: Option<u64>,
    /// A problem with the volume, or None when healthy.
    pub abnormal: Option<String>,
}

impl VolumeStats {
    fn abnormal(message: String) -> Self {
        VolumeStats {
            fs: None,
            block_bytes: None,
            abnormal: Some(message),
        }
    }
}

/// Stats of volume `volume_id` at `path`; `device` is its device when found.
pub fn stats(
    m: &dyn Mounter,
    volume_id: &str,
    path: &Path,
    device: Option<&Path>,
) -> Result<VolumeStats> {
    let kind = match m.path_kind(path) {
        Ok(PathKind::Missing) => {
            return Err(Error::NotFound(format!(
                "volume path {} does not exist",
                path.display()
            )));
        }
        Ok(kind) => kind,
        // A mount whose device is gone answers stat with EIO or ENOTCONN.
        Err(e) => {
            return Ok(VolumeStats::abnormal(format!(
                "cannot stat the volume path: {e}"
            )));
        }
    };
    let Some(entry) = m.mount_at(path)? else {
        return Ok(VolumeStats::abnormal(format!(
            "nothing is mounted at {}: the mount of volume {volume_id} is gone",
            path.display()
        )));
    };
    let target = Target {
        volume_id,
        path,
        entry: &entry,
        volume_dev: device.and_then(|d| m.device_number(d).ok().flatten()),
    };
    if kind == PathKind::File {
        block_stats(m, &target)
    } else {
        fs_stats(m, &target)
    }
}

/// A published (or staged) volume path and what is mounted there.
struct Target<'a> {
    volume_id: &'a str,
    path: &'a Path,
    entry: &'a MountEntry,
    /// The device number of the volume's device, when it was found.
    volume_dev: Option<u64>,
}

impl Target<'_> {
    /// NotFound: the path holds a mount of something else.
    fn not_this_volume(&self, found: &str) -> Error {
        Error::NotFound(format!(
            "{} is a mount of {found}, not of volume {}",
            self.path.display(),
            self.volume_id
        ))
    }
}

/// A block volume: its device's size, or why it is abnormal.
fn block_stats(m: &dyn Mounter, t: &Target<'_>) -> Result<VolumeStats> {
    let (volume_id, path) = (t.volume_id, t.path);
    let Some(rdev) = m.device_number(path).ok().flatten() else {
        return Ok(VolumeStats::abnormal(format!(
            "{} no longer shows a block device: the device of volume {volume_id} vanished",
            path.display()
        )));
    };
    if t.volume_dev.is_some_and(|v| v != rdev) {
        return Err(t.not_this_volume(&t.entry.root));
    }
    if !m.device_exists(rdev) {
        return Ok(VolumeStats::abnormal(format!(
            "the device of volume {volume_id} at {} vanished",
            path.display()
        )));
    }
    Ok(VolumeStats {
        fs: None,
        block_bytes: Some(m.device_size(path)?),
        abnormal: None,
    })
}

/// A filesystem volume: statvfs, and whether its device vanished or the
/// filesystem turned itself read-only.
fn fs_stats(m: &dyn Mounter, t: &Target<'_>) -> Result<VolumeStats> {
    let (volume_id, path, entry) = (t.volume_id, t.path, t.entry);
    if t.volume_dev.is_some_and(|v| v != entry.dev) {
        return Err(t.not_this_volume(&entry.source));
    }
    let fs = m.statvfs(path)?;
    let abnormal = if !m.device_exists(entry.dev) {
        Some(format!(
            "device {} of volume {volume_id} vanished while mounted at {}",
            entry.source,
            path.display()
        ))
    } else if entry.went_read_only() {
        Some(format!(
            "the {} filesystem of volume {volume_id} at {} is read-only although mounted \
             read-write (it hit an I/O or consistency error)",
            entry.fs_type,
            path.display()
        ))
    } else {
        None
    };
    Ok(VolumeStats {
        fs: Some(fs),
        block_bytes: None,
        abnormal,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::fake::{FakeMounter, GIB};
    use crate::node::mounter::Probe;

    fn mounted() -> FakeMounter {
        let m = FakeMounter::default();
        m.add_device("/dev/a", GIB, Probe::Filesystem("ext4".into()));
        m.add_dir("/t");
        m.mount(Path::new("/dev/a"), Path::new("/t"), "ext4", &[])
            .unwrap();
        m.set_stats(FsStats {
            bytes_total: GIB,
            bytes_used: 10,
            ..Default::default()
        });
        m
    }

    #[test]
    fn a_healthy_mount_reports_usage() {
        let m = mounted();
        let s = stats(&m, "vol-1", Path::new("/t"), Some(Path::new("/dev/a"))).unwrap();
        assert_eq!(s.fs.unwrap().bytes_used, 10);
        assert_eq!(s.abnormal, None);
    }

    #[test]
    fn missing_paths_and_other_volumes_are_not_found() {
        let m = mounted();
        m.add_device("/dev/b", GIB, Probe::Empty);
        let err = stats(&m, "vol-1", Path::new("some/path"), None).unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
        let err = stats(&m, "vol-2", Path::new("/t"), Some(Path::new("/dev/b"))).unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
        assert!(
            err.to_string().contains("/dev/a") && err.to_string().contains("vol-2"),
            "{err}"
        );
    }

    #[test]
    fn conditions_name_what_is_wrong() {
        let m = mounted();
        m.fs_went_read_only("/t");
        let s = stats(&m, "vol-1", Path::new("/t"), None).unwrap();
        assert!(s.abnormal.unwrap().contains("read-only"));

        let m = mounted();
        m.vanish("/dev/a");
        let s = stats(&m, "vol-1", Path::new("/t"), None).unwrap();
        assert!(s.abnormal.unwrap().contains("vanished"));

        let m = FakeMounter::default();
        m.add_dir("/gone");
        let s = stats(&m, "vol-1", Path::new("/gone"), None).unwrap();
        assert!(s.abnormal.unwrap().contains("gone"));
    }

    #[test]
    fn block_volumes_report_their_size() {
        let m = FakeMounter::default();
        m.add_device("/dev/a", 3 * GIB, Probe::Empty);
        crate::node::publish::publish_block(
            &m,
            "vol-1",
            Path::new("/dev/a"),
            Path::new("/b"),
            false,
            false,
        )
        .unwrap();
        let s = stats(&m, "vol-1", Path::new("/b"), Some(Path::new("/dev/a"))).unwrap();
        assert_eq!(
            (s.block_bytes, s.fs, s.abnormal),
            (Some(3 * GIB), None, None)
        );
    }
}
