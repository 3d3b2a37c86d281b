//! NodePublishVolume / NodeUnpublishVolume: bind the staged filesystem (or
//! the raw device) into the pod's target path, and take it away again.

use std::path::Path;

use crate::error::{Error, Result};
use crate::node::mounter::{MountEntry, Mounter, PathKind};
use crate::node::request::MountAccess;
use crate::node::stage::unmount_all;

fn mode(readonly: bool) -> &'static str {
    if readonly { "read-only" } else { "read-write" }
}

/// An existing publish of the same source is fine when its read-only state
/// matches; otherwise the CSI answer is AlreadyExists.
fn check_same_mode(
    existing: &MountEntry,
    readonly: bool,
    volume_id: &str,
    target: &Path,
) -> Result<()> {
    if existing.is_read_only() == readonly {
        tracing::info!(volume_id, target = %target.display(), "already published");
        return Ok(());
    }
    Err(Error::AlreadyExists(format!(
        "volume {volume_id} is already published at {} {}, but {} was requested",
        target.display(),
        mode(existing.is_read_only()),
        mode(readonly)
    )))
}

/// For SINGLE_NODE_SINGLE_WRITER (ReadWriteOncePod): FailedPrecondition
/// when the volume is already published somewhere else than `target`.
/// `is_publish` tells whether a mount is a publish of this volume.
fn refuse_second_publish(
    m: &dyn Mounter,
    volume_id: &str,
    target: &Path,
    is_publish: impl Fn(&MountEntry) -> Result<bool>,
) -> Result<()> {
    for entry in m.mounts()? {
        if entry.mount_point != target && is_publish(&entry)? {
            return Err(Error::FailedPrecondition(format!(
                "volume {volume_id} has access mode SINGLE_NODE_SINGLE_WRITER and is already \
                 published at {}; it cannot also be published at {}",
                entry.mount_point.display(),
                target.display()
            )));
        }
    }
    Ok(())
}

/// Publishes a filesystem volume: bind-mounts the staging path onto the
/// target directory (created if missing). `exclusive`: the access mode is
/// SINGLE_NODE_SINGLE_WRITER, so no other publish may exist.
pub fn publish_mount(
    m: &dyn Mounter,
    volume_id: &str,
    staging: &Path,
    target: &Path,
    readonly: bool,
    mount: &MountAccess,
    exclusive: bool,
) -> Result<()> {
    let staged = m.mount_at(staging)?.ok_or_else(|| {
        Error::FailedPrecondition(format!(
            "volume {volume_id} is not staged: nothing is mounted at {}",
            staging.display()
        ))
    })?;
    if let Some(existing) = m.mount_at(target)? {
        if existing.same_subtree(&staged) {
            return check_same_mode(&existing, readonly, volume_id, target);
        }
        return Err(Error::FailedPrecondition(format!(
            "target path {} already has {} mounted, not volume {volume_id} staged at {}",
            target.display(),
            existing.source,
            staging.display()
        )));
    }
    if exclusive {
        // Publishes are bind mounts of the staged filesystem: the same
        // subtree mounted anywhere but the staging path itself.
        refuse_second_publish(m, volume_id, target, |e| {
            Ok(e.same_subtree(&staged) && e.mount_point != staged.mount_point)
        })?;
    }
    match m.path_kind(target)? {
        PathKind::Missing => m.make_dir(target)?,
        PathKind::Dir => {}
        PathKind::File => {
            return Err(Error::FailedPrecondition(format!(
                "target path {} exists and is not a directory (mount volumes publish on a directory)",
                target.display()
            )));
        }
    }
    if let Some(gid) = mount.group {
        // The filesystem root (reached through the staging mount) becomes
        // group-writable and setgid, so files the pod creates keep the
        // group; kubelet's own fsGroup walk covers existing files.
        m.set_group(staging, gid)?;
    }
    m.bind(staging, target, readonly, &mount.flags)?;
    tracing::info!(volume_id, target = %target.display(), readonly, "published");
    Ok(())
}

/// Publishes a block volume: bind-mounts the device node onto a file at
/// the target (created if missing); `exclusive` as for [`publish_mount`].
pub fn publish_block(
    m: &dyn Mounter,
    volume_id: &str,
    device: &Path,
    target: &Path,
    readonly: bool,
    exclusive: bool,
) -> Result<()> {
    let dev = m.device_number(device)?.ok_or_else(|| {
        Error::FailedPrecondition(format!(
            "{} (device of volume {volume_id}) is not a block device",
            device.display()
        ))
    })?;
    if let Some(existing) = m.mount_at(target)? {
        if m.device_number(target)? == Some(dev) {
            return check_same_mode(&existing, readonly, volume_id, target);
        }
        return Err(Error::FailedPrecondition(format!(
            "target path {} already has another device or filesystem ({}) mounted, not {} of volume {volume_id}",
            target.display(),
            existing.source,
            device.display()
        )));
    }
    if exclusive {
        // A block publish is a bind mount of the device node: its root is
        // the node's path inside devtmpfs, and stat at the mount point
        // yields the device.
        let name = device.file_name().map(|n| n.to_string_lossy().into_owned());
        refuse_second_publish(m, volume_id, target, |e| {
            let root_names_it = name
                .as_deref()
                .is_some_and(|n| Path::new(&e.root).file_name().is_some_and(|r| r == n));
            Ok(root_names_it && m.device_number(&e.mount_point).ok().flatten() == Some(dev))
        })?;
    }
    let created = match m.path_kind(target)? {
        PathKind::Missing => {
            m.make_file(target)?;
            true
        }
        PathKind::File => false,
        PathKind::Dir => {
            return Err(Error::FailedPrecondition(format!(
                "target path {} is a directory (block volumes publish on a file)",
                target.display()
            )));
        }
    };
    if let Err(e) = m.bind(device, target, readonly, &[]) {
        if created {
            let _ = m.remove(target);
        }
        return Err(e.into());
    }
    tracing::info!(volume_id, device = %device.display(), target = %target.display(), readonly, "published block device");
    Ok(())
}

/// NodeUnpublishVolume: unmount and remove the target; OK when it is not
/// mounted or does not exist.
pub fn unpublish(m: &dyn Mounter, volume_id: &str, target: &Path) -> Result<()> {
    unmount_all(m, target)?;
    m.remove(target)?;
    tracing::info!(volume_id, target = %target.display(), "unpublished");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::format::{FormatOptions, FsType};
    use crate::node::fake::{FakeMounter, GIB};
    use crate::node::mounter::Probe;
    use crate::node::stage::{StageSpec, stage};

    fn access(group: Option<u32>) -> MountAccess {
        MountAccess {
            fs_type: FsType::Ext4,
            flags: vec!["nosuid".into()],
            group,
        }
    }

    fn staged(m: &FakeMounter, dev: &str, staging: &str) {
        m.add_device(dev, GIB, Probe::Filesystem("ext4".into()));
        let spec = StageSpec {
            volume_id: "vol-1",
            device: Path::new(dev),
            staging: Path::new(staging),
            mount: &access(None),
            format: &FormatOptions::default(),
            legacy_xfs: false,
        };
        stage(m, &spec).unwrap();
    }

    #[test]
    fn mount_publish_binds_is_idempotent_and_checks_mode() {
        let m = FakeMounter::default();
        staged(&m, "/dev/a", "/stage");
        let (stage, target) = (Path::new("/stage"), Path::new("/pods/t"));
        publish_mount(&m, "vol-1", stage, target, true, &access(Some(1000)), false).unwrap();
        let calls = m.calls();
        assert!(calls.contains(&"make_dir /pods/t".to_string()), "{calls:?}");
        assert!(
            calls.contains(&"set_group /stage 1000".to_string()),
            "{calls:?}"
        );
        assert!(
            calls.contains(&"bind /stage /pods/t ro=true nosuid".to_string()),
            "{calls:?}"
        );
        for _ in 0..3 {
            publish_mount(&m, "vol-1", stage, target, true, &access(None), false).unwrap();
        }
        let err =
            publish_mount(&m, "vol-1", stage, target, false, &access(None), false).unwrap_err();
        assert_eq!(err.code(), tonic::Code::AlreadyExists);
        assert!(err.to_string().contains("read-only"), "{err}");
    }

    #[test]
    fn a_different_source_at_the_target_is_failed_precondition() {
        let m = FakeMounter::default();
        staged(&m, "/dev/a", "/s1");
        staged(&m, "/dev/b", "/s2");
        let target = Path::new("/pods/t");
        publish_mount(
            &m,
            "vol-1",
            Path::new("/s1"),
            target,
            false,
            &access(None),
            false,
        )
        .unwrap();
        let err = publish_mount(
            &m,
            "vol-2",
            Path::new("/s2"),
            target,
            false,
            &access(None),
            false,
        )
        .unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        assert!(
            err.to_string().contains("/dev/a") && err.to_string().contains("vol-2"),
            "{err}"
        );
    }

    #[test]
    fn publishing_an_unstaged_volume_is_refused() {
        let m = FakeMounter::default();
        m.add_dir("/stage");
        let err = publish_mount(
            &m,
            "vol-1",
            Path::new("/stage"),
            Path::new("/t"),
            false,
            &access(None),
            false,
        )
        .unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        assert!(m.calls().is_empty(), "nothing touched: {:?}", m.calls());
    }

    #[test]
    fn block_publish_binds_the_device_onto_a_file() {
        let m = FakeMounter::default();
        m.add_device("/dev/a", GIB, Probe::Empty);
        m.add_device("/dev/b", GIB, Probe::Empty);
        let target = Path::new("/pods/dev");
        publish_block(&m, "vol-1", Path::new("/dev/a"), target, false, false).unwrap();
        assert!(m.calls().contains(&"make_file /pods/dev".to_string()));
        assert_eq!(
            m.device_number(target).unwrap(),
            m.device_number(Path::new("/dev/a")).unwrap()
        );
        publish_block(&m, "vol-1", Path::new("/dev/a"), target, false, false).unwrap();
        let err =
            publish_block(&m, "vol-2", Path::new("/dev/b"), target, false, false).unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        m.add_dir("/pods/dir");
        let err = publish_block(
            &m,
            "vol-1",
            Path::new("/dev/a"),
            Path::new("/pods/dir"),
            false,
            false,
        )
        .unwrap_err();
        assert!(err.to_string().contains("is a directory"), "{err}");
    }

    #[test]
    fn a_single_writer_volume_is_published_at_one_target_only() {
        let m = FakeMounter::default();
        staged(&m, "/dev/a", "/stage");
        let stage = Path::new("/stage");
        let (one, two) = (Path::new("/pods/1"), Path::new("/pods/2"));
        publish_mount(&m, "vol-1", stage, one, false, &access(None), true).unwrap();
        publish_mount(&m, "vol-1", stage, one, false, &access(None), true).unwrap();
        let err = publish_mount(&m, "vol-1", stage, two, false, &access(None), true).unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        assert!(err.to_string().contains("/pods/1"), "{err}");
        // SINGLE_NODE_MULTI_WRITER / SINGLE_NODE_WRITER: several targets are fine.
        publish_mount(&m, "vol-1", stage, two, false, &access(None), false).unwrap();
        unpublish(&m, "vol-1", one).unwrap();
        unpublish(&m, "vol-1", two).unwrap();
        publish_mount(&m, "vol-1", stage, two, false, &access(None), true).unwrap();

        m.add_device("/dev/b", GIB, Probe::Empty);
        let dev = Path::new("/dev/b");
        publish_block(&m, "vol-2", dev, Path::new("/pods/b1"), false, true).unwrap();
        let err = publish_block(&m, "vol-2", dev, Path::new("/pods/b2"), false, true).unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    }

    #[test]
    fn unpublish_unmounts_removes_and_tolerates_absence() {
        let m = FakeMounter::default();
        staged(&m, "/dev/a", "/stage");
        let target = Path::new("/pods/t");
        publish_mount(
            &m,
            "vol-1",
            Path::new("/stage"),
            target,
            false,
            &access(None),
            false,
        )
        .unwrap();
        unpublish(&m, "vol-1", target).unwrap();
        assert!(m.mount_at(target).unwrap().is_none());
        assert_eq!(m.path_kind(target).unwrap(), PathKind::Missing);
        unpublish(&m, "vol-1", target).unwrap();
        // The staging mount is untouched.
        assert!(m.mount_at(Path::new("/stage")).unwrap().is_some());
    }
}
