//! NodeStageVolume / NodeUnstageVolume for filesystem volumes: probe,
//! format only a device that is provably empty, grow a filesystem smaller
//! than its device, mount at the staging path. (Block volumes have no
//! staging mount; the service answers them without coming here.)

use std::path::Path;

use crate::contract::format::{FormatOptions, FsType};
use crate::error::{Error, Result};
use crate::node::format;
use crate::node::mounter::{Mounter, PathKind, Probe};
use crate::node::request::MountAccess;

/// Growth smaller than this is not worth a resize (filesystems round their
/// size down to whole blocks or allocation groups).
pub const GROW_SLACK: u64 = 1 << 20;

/// Stacked mounts unmounted at most by one unstage/unpublish.
pub const MAX_MOUNT_LAYERS: usize = 8;

/// What to stage.
#[derive(Debug, Clone, Copy)]
pub struct StageSpec<'a> {
    /// The EBS volume id, for messages.
    pub volume_id: &'a str,
    /// The resolved device node.
    pub device: &'a Path,
    /// Where to mount it.
    pub staging: &'a Path,
    /// Filesystem type and mount flags.
    pub mount: &'a MountAccess,
    /// mkfs options for a fresh device.
    pub format: &'a FormatOptions,
    /// `--legacy-xfs`.
    pub legacy_xfs: bool,
}

/// What staging did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Staged {
    /// The device was already mounted at the staging path.
    AlreadyStaged,
    /// The device was formatted with the requested filesystem and mounted.
    Formatted,
    /// An existing filesystem (of this type) was mounted as it is.
    Mounted(String),
}

/// Stages `spec.device` at `spec.staging`. See the module docs.
pub fn stage(m: &dyn Mounter, spec: &StageSpec<'_>) -> Result<Staged> {
    let StageSpec {
        volume_id,
        device,
        staging,
        ..
    } = *spec;
    let dev = m.device_number(device)?.ok_or_else(|| {
        Error::FailedPrecondition(format!(
            "{} (device of volume {volume_id}) is not a block device",
            device.display()
        ))
    })?;
    if let Some(entry) = m.mount_at(staging)? {
        if entry.dev == dev {
            tracing::info!(volume_id, staging = %staging.display(), "already staged");
            return Ok(Staged::AlreadyStaged);
        }
        return Err(Error::FailedPrecondition(format!(
            "staging path {} already has {} mounted, not {} of volume {volume_id}",
            staging.display(),
            entry.source,
            device.display()
        )));
    }
    match m.path_kind(staging)? {
        PathKind::Missing => m.make_dir(staging)?,
        PathKind::Dir => {}
        PathKind::File => {
            return Err(Error::FailedPrecondition(format!(
                "staging path {} exists and is not a directory",
                staging.display()
            )));
        }
    }

    let (fs_type, outcome) = prepare(m, spec)?;
    if outcome != Staged::Formatted
        && FsType::is_ext_name(&fs_type)
        && needs_growth(m, device, &fs_type)?
    {
        // ext grows offline, before the mount: online ext growth needs
        // CAP_SYS_RESOURCE, and the volume is not in use yet anyway.
        tracing::info!(volume_id, device = %device.display(), "growing {fs_type} to the device size");
        m.grow_offline(device, &fs_type)?;
    }
    let options = mount_options(&fs_type, &spec.mount.flags);
    m.mount(device, staging, &fs_type, &options)?;
    if outcome != Staged::Formatted && fs_type == "xfs" && needs_growth(m, device, &fs_type)? {
        // xfs only grows mounted. On failure, unmount so that the retry
        // stages (and grows) again instead of finding the mount in place.
        tracing::info!(volume_id, device = %device.display(), "growing xfs to the device size");
        if let Err(e) = m.grow_online(device, staging, &fs_type) {
            let _ = m.unmount(staging);
            return Err(e.into());
        }
    }
    tracing::info!(volume_id, device = %device.display(), staging = %staging.display(), fs_type, ?outcome, "staged");
    Ok(outcome)
}

/// Probes the device and formats it only when it is empty; returns the
/// filesystem to mount.
fn prepare(m: &dyn Mounter, spec: &StageSpec<'_>) -> Result<(String, Staged)> {
    let StageSpec {
        volume_id, device, ..
    } = *spec;
    let refuse = |what: String| {
        Error::FailedPrecondition(format!(
            "device {} of volume {volume_id} {what}; refusing to format or mount it",
            device.display()
        ))
    };
    let requested = spec.mount.fs_type.as_str();
    match m.probe(device)? {
        Probe::Empty => {
            let args = format::mkfs_args(spec.mount.fs_type, spec.format, spec.legacy_xfs);
            tracing::info!(volume_id, device = %device.display(), fs_type = requested, ?args, "formatting empty device");
            m.format(device, requested, &args)?;
            Ok((requested.to_string(), Staged::Formatted))
        }
        Probe::Filesystem(existing) => {
            if existing != requested {
                tracing::warn!(
                    volume_id,
                    device = %device.display(),
                    existing,
                    requested,
                    "device already has a different filesystem; mounting it as it is (never reformatted)"
                );
            }
            if !spec.format.is_empty() {
                tracing::info!(
                    volume_id,
                    "format options ignored: the device already has a filesystem"
                );
            }
            Ok((existing.clone(), Staged::Mounted(existing)))
        }
        Probe::PartitionTable(table) => Err(refuse(format!("has a {table} partition table"))),
        Probe::Other { kind, usage } => {
            Err(refuse(format!("holds {kind} ({usage}), not a filesystem")))
        }
        Probe::UnknownData { offset } => Err(refuse(format!(
            "has data (a non-zero byte at offset {offset}) but no recognisable filesystem"
        ))),
        Probe::Ambiguous(detail) => Err(refuse(format!("has conflicting signatures ({detail})"))),
    }
}

/// Whether the filesystem on `device` is smaller than the device.
fn needs_growth(m: &dyn Mounter, device: &Path, fs_type: &str) -> Result<bool> {
    let Some(fs_size) = m.fs_size(device, fs_type)? else {
        return Ok(false);
    };
    Ok(m.device_size(device)? > fs_size + GROW_SLACK)
}

/// The staging mount's options: the capability's flags, plus `nouuid` for
/// xfs, so that a volume restored from a snapshot of another volume on this
/// node (same filesystem UUID) still mounts.
pub fn mount_options(fs_type: &str, flags: &[String]) -> Vec<String> {
    let mut options: Vec<String> = Vec::new();
    for flag in flags {
        if !options.contains(flag) {
            options.push(flag.clone());
        }
    }
    if fs_type == "xfs" && !options.iter().any(|o| o == "nouuid") {
        options.push("nouuid".to_string());
    }
    options
}

/// Unmounts everything mounted at `path` (stacked mounts included); OK
/// when nothing is mounted or the path does not exist.
pub fn unmount_all(m: &dyn Mounter, path: &Path) -> Result<()> {
    for _ in 0..MAX_MOUNT_LAYERS {
        if m.mount_at(path)?.is_none() {
            return Ok(());
        }
        m.unmount(path)?;
    }
    if m.mount_at(path)?.is_some() {
        return Err(Error::Internal(format!(
            "{} is still mounted after {MAX_MOUNT_LAYERS} unmounts",
            path.display()
        )));
    }
    Ok(())
}

/// NodeUnstageVolume: unmount the staging path. The directory itself stays:
/// the CO created it and removes it.
pub fn unstage(m: &dyn Mounter, volume_id: &str, staging: &Path) -> Result<()> {
    unmount_all(m, staging)?;
    tracing::info!(volume_id, staging = %staging.display(), "unstaged");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::fake::{FakeMounter, GIB};

    fn mount(fs: &str) -> MountAccess {
        MountAccess {
            fs_type: FsType::parse(fs).unwrap(),
            flags: vec!["noatime".into()],
            group: None,
        }
    }

    fn run(
        m: &FakeMounter,
        dev: &str,
        staging: &str,
        fs: &str,
        fmt: &FormatOptions,
    ) -> Result<Staged> {
        stage(
            m,
            &StageSpec {
                volume_id: "vol-1",
                device: Path::new(dev),
                staging: Path::new(staging),
                mount: &mount(fs),
                format: fmt,
                legacy_xfs: false,
            },
        )
    }

    #[test]
    fn an_empty_device_is_formatted_then_mounted_once() {
        let m = FakeMounter::default();
        m.add_device("/dev/a", GIB, Probe::Empty);
        let fmt = FormatOptions {
            inode_size: Some(512),
            ..Default::default()
        };
        assert_eq!(
            run(&m, "/dev/a", "/stage", "ext4", &fmt).unwrap(),
            Staged::Formatted
        );
        let entry = m.mount_at(Path::new("/stage")).unwrap().unwrap();
        assert_eq!(entry.fs_type, "ext4");
        assert!(
            m.calls()
                .iter()
                .any(|c| c.starts_with("format ext4 -F -m0 -I 512")),
            "{:?}",
            m.calls()
        );
        // Again: same device already there → OK, nothing formatted twice.
        assert_eq!(
            run(&m, "/dev/a", "/stage", "ext4", &fmt).unwrap(),
            Staged::AlreadyStaged
        );
        assert_eq!(
            m.calls().iter().filter(|c| c.starts_with("format")).count(),
            1
        );
    }

    #[test]
    fn an_existing_filesystem_is_never_reformatted() {
        let m = FakeMounter::default();
        m.add_device("/dev/a", GIB, Probe::Filesystem("xfs".into()));
        assert_eq!(
            run(&m, "/dev/a", "/stage", "ext4", &FormatOptions::default()).unwrap(),
            Staged::Mounted("xfs".into())
        );
        assert!(!m.calls().iter().any(|c| c.starts_with("format")));
        let entry = m.mount_at(Path::new("/stage")).unwrap().unwrap();
        assert_eq!(entry.fs_type, "xfs");
        assert!(
            m.calls().iter().any(|c| c.contains("nouuid")),
            "{:?}",
            m.calls()
        );
    }

    #[test]
    fn data_without_filesystem_partition_tables_and_lvm_are_refused() {
        for probe in [
            Probe::UnknownData { offset: 4096 },
            Probe::PartitionTable("gpt".into()),
            Probe::Other {
                kind: "LVM2_member".into(),
                usage: "raid".into(),
            },
            Probe::Ambiguous("xfs and ext4".into()),
        ] {
            let m = FakeMounter::default();
            m.add_device("/dev/a", GIB, probe.clone());
            let err = run(&m, "/dev/a", "/stage", "ext4", &FormatOptions::default()).unwrap_err();
            assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{probe:?}");
            assert!(
                err.to_string().contains("/dev/a") && err.to_string().contains("vol-1"),
                "{err}"
            );
            assert!(
                m.calls()
                    .iter()
                    .all(|c| !c.starts_with("format") && !c.starts_with("mount"))
            );
        }
    }

    #[test]
    fn another_device_at_the_staging_path_is_failed_precondition() {
        let m = FakeMounter::default();
        m.add_device("/dev/a", GIB, Probe::Filesystem("ext4".into()));
        m.add_device("/dev/b", GIB, Probe::Filesystem("ext4".into()));
        run(&m, "/dev/a", "/stage", "ext4", &FormatOptions::default()).unwrap();
        let err = run(&m, "/dev/b", "/stage", "ext4", &FormatOptions::default()).unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        assert!(
            err.to_string().contains("/dev/a") && err.to_string().contains("/dev/b"),
            "{err}"
        );
    }

    #[test]
    fn small_filesystems_grow_ext_offline_and_xfs_online() {
        let m = FakeMounter::default();
        m.add_device("/dev/e", 2 * GIB, Probe::Filesystem("ext4".into()));
        m.set_fs_size("/dev/e", GIB);
        run(&m, "/dev/e", "/s1", "ext4", &FormatOptions::default()).unwrap();
        let calls = m.calls();
        let grow = calls
            .iter()
            .position(|c| c.starts_with("grow_offline /dev/e"))
            .unwrap();
        let mount = calls
            .iter()
            .position(|c| c.starts_with("mount /dev/e"))
            .unwrap();
        assert!(grow < mount, "{calls:?}");

        m.add_device("/dev/x", 2 * GIB, Probe::Filesystem("xfs".into()));
        m.set_fs_size("/dev/x", GIB);
        run(&m, "/dev/x", "/s2", "xfs", &FormatOptions::default()).unwrap();
        assert!(
            m.calls().iter().any(|c| c == "grow_online /dev/x /s2 xfs"),
            "{:?}",
            m.calls()
        );

        // A failed online growth leaves nothing mounted, so the retry grows again.
        m.add_device("/dev/y", 2 * GIB, Probe::Filesystem("xfs".into()));
        m.set_fs_size("/dev/y", GIB);
        m.fail_grow("xfs_growfs: boom");
        let err = run(&m, "/dev/y", "/s3", "xfs", &FormatOptions::default()).unwrap_err();
        assert!(err.to_string().contains("boom"));
        assert!(m.mount_at(Path::new("/s3")).unwrap().is_none());
    }

    #[test]
    fn unstage_unmounts_stacked_mounts_and_tolerates_nothing() {
        let m = FakeMounter::default();
        m.add_device("/dev/a", GIB, Probe::Filesystem("ext4".into()));
        run(&m, "/dev/a", "/stage", "ext4", &FormatOptions::default()).unwrap();
        m.mount(Path::new("/dev/a"), Path::new("/stage"), "ext4", &[])
            .unwrap();
        unstage(&m, "vol-1", Path::new("/stage")).unwrap();
        assert!(m.mount_at(Path::new("/stage")).unwrap().is_none());
        unstage(&m, "vol-1", Path::new("/stage")).unwrap();
        unstage(&m, "vol-1", Path::new("/never/existed")).unwrap();
    }

    #[test]
    fn mount_options_dedupe_and_add_nouuid_for_xfs() {
        let flags = vec!["noatime".to_string(), "noatime".to_string()];
        assert_eq!(mount_options("xfs", &flags), ["noatime", "nouuid"]);
        assert_eq!(mount_options("ext4", &flags), ["noatime"]);
    }
}
