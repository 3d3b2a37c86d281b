//! Checks on Node requests, done before anything on the host is touched:
//! required fields, absolute paths without `..`, and the volume capability.

use std::path::{Component, Path, PathBuf};

use crate::contract::format::FsType;
use crate::csi::VolumeCapability;
use crate::csi::volume_capability::access_mode::Mode;
use crate::csi::volume_capability::{AccessType, MountVolume};
use crate::error::{Error, Result};
use crate::node::format;

/// How the volume is consumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// A raw block device.
    Block,
    /// A filesystem.
    Mount(MountAccess),
}

/// The filesystem side of a capability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountAccess {
    /// Validated filesystem type (`ext4` when the capability gave none).
    pub fs_type: FsType,
    /// Mount flags, as given.
    pub flags: Vec<String>,
    /// Group that must be able to write the volume (volume_mount_group).
    pub group: Option<u32>,
}

/// The volume id, or InvalidArgument when missing.
pub fn volume_id(id: &str) -> Result<&str> {
    if id.trim().is_empty() {
        return Err(Error::missing("volume_id"));
    }
    Ok(id)
}

/// A path field: required, absolute, no `..` components.
pub fn path(field: &str, value: &str) -> Result<PathBuf> {
    if value.is_empty() {
        return Err(Error::missing(field));
    }
    let path = Path::new(value);
    if !path.is_absolute() {
        return Err(Error::InvalidArgument(format!(
            "{field} must be an absolute path, got {value:?}"
        )));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(Error::InvalidArgument(format!(
            "{field} must not contain \"..\", got {value:?}"
        )));
    }
    Ok(path.to_path_buf())
}

/// The access type and mode of a capability, checked.
pub fn access(cap: Option<&VolumeCapability>) -> Result<Access> {
    let cap = cap.ok_or_else(|| Error::missing("volume_capability"))?;
    let mode = cap
        .access_mode
        .as_ref()
        .ok_or_else(|| Error::missing("volume_capability.access_mode"))?;
    let mode = Mode::try_from(mode.mode).unwrap_or(Mode::Unknown);
    let access = match &cap.access_type {
        None => {
            return Err(Error::missing(
                "volume_capability.access_type (mount or block)",
            ));
        }
        Some(AccessType::Block(_)) => Access::Block,
        Some(AccessType::Mount(m)) => Access::Mount(mount_access(m)?),
    };
    let allowed = match mode {
        Mode::SingleNodeWriter
        | Mode::SingleNodeReaderOnly
        | Mode::SingleNodeSingleWriter
        | Mode::SingleNodeMultiWriter => true,
        // io2 Multi-Attach: shared raw devices only; a filesystem mounted
        // on two nodes at once would be corrupted.
        Mode::MultiNodeMultiWriter => access == Access::Block,
        Mode::Unknown | Mode::MultiNodeReaderOnly | Mode::MultiNodeSingleWriter => false,
    };
    if !allowed {
        let kind = if access == Access::Block {
            "block"
        } else {
            "mount"
        };
        return Err(Error::InvalidArgument(format!(
            "access mode {} is not supported for {kind} volumes",
            mode.as_str_name()
        )));
    }
    Ok(access)
}

/// Volume-context key of a static PV's partition (the reference's).
pub const PARTITION_KEY: &str = "partition";

/// The partition a static PV names in its volume attributes, if any (`0`
/// or empty: the whole device).
pub fn partition(context: &std::collections::HashMap<String, String>) -> Result<Option<u32>> {
    match context.get(PARTITION_KEY).map(|v| v.trim()) {
        None | Some("") | Some("0") => Ok(None),
        Some(v) => v.parse::<u32>().map(Some).map_err(|_| {
            Error::InvalidArgument(format!(
                "volume context {PARTITION_KEY}={v:?} must be a whole number: the partition of the device to use"
            ))
        }),
    }
}

/// Whether the capability is a mount without a filesystem type.
pub fn names_no_fs_type(cap: Option<&VolumeCapability>) -> bool {
    matches!(
        cap.and_then(|c| c.access_type.as_ref()),
        Some(AccessType::Mount(m)) if m.fs_type.trim().is_empty()
    )
}

/// Whether the capability's access mode is SINGLE_NODE_SINGLE_WRITER (a
/// ReadWriteOncePod volume: one publish at a time).
pub fn is_single_writer(cap: Option<&VolumeCapability>) -> bool {
    cap.and_then(|c| c.access_mode.as_ref())
        .is_some_and(|m| m.mode == Mode::SingleNodeSingleWriter as i32)
}

fn mount_access(m: &MountVolume) -> Result<MountAccess> {
    let group = match m.volume_mount_group.trim() {
        "" => None,
        g => Some(g.parse::<u32>().map_err(|_| {
            Error::InvalidArgument(format!(
                "volume_mount_group must be a numeric group id, got {g:?}"
            ))
        })?),
    };
    Ok(MountAccess {
        fs_type: format::fs_type(&m.fs_type)?,
        flags: m.mount_flags.clone(),
        group,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csi::volume_capability::{AccessMode, BlockVolume};

    fn cap(access: AccessType, mode: Mode) -> VolumeCapability {
        VolumeCapability {
            access_type: Some(access),
            access_mode: Some(AccessMode { mode: mode as i32 }),
        }
    }

    #[test]
    fn paths_must_be_absolute_without_parent_components() {
        assert_eq!(
            path("target_path", "").unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        let err = path("target_path", "some/path").unwrap_err();
        assert!(err.to_string().contains("\"some/path\""), "{err}");
        let err = path("staging_target_path", "/a/../etc").unwrap_err();
        assert!(
            err.to_string().contains("staging_target_path")
                && err.to_string().contains("/a/../etc")
        );
        assert_eq!(
            path("p", "/var/lib/x").unwrap(),
            PathBuf::from("/var/lib/x")
        );
    }

    #[test]
    fn capabilities_are_checked() {
        assert!(
            access(None)
                .unwrap_err()
                .to_string()
                .contains("volume_capability")
        );
        let mount = AccessType::Mount(MountVolume {
            fs_type: "XFS".into(),
            mount_flags: vec!["noatime".into()],
            volume_mount_group: "1000".into(),
        });
        let Access::Mount(m) = access(Some(&cap(mount.clone(), Mode::SingleNodeWriter))).unwrap()
        else {
            panic!("mount expected");
        };
        assert_eq!((m.fs_type, m.group), (FsType::Xfs, Some(1000)));
        let err = access(Some(&cap(mount, Mode::MultiNodeMultiWriter))).unwrap_err();
        assert!(err.to_string().contains("MULTI_NODE_MULTI_WRITER"), "{err}");
        let block = AccessType::Block(BlockVolume {});
        assert_eq!(
            access(Some(&cap(block, Mode::MultiNodeMultiWriter))).unwrap(),
            Access::Block
        );
        let bad_group = AccessType::Mount(MountVolume {
            volume_mount_group: "staff".into(),
            ..Default::default()
        });
        assert!(
            access(Some(&cap(bad_group, Mode::SingleNodeWriter)))
                .unwrap_err()
                .to_string()
                .contains("staff")
        );
    }
}
