//! Which volume capabilities EBS can honour.

use crate::csi;
use crate::csi::volume_capability::AccessType;
use crate::csi::volume_capability::access_mode::Mode;
use crate::error::{Error, Result};

use crate::contract::format::FsType;

/// Whether the capability asks for raw block access.
pub fn is_block(cap: &csi::VolumeCapability) -> bool {
    matches!(cap.access_type, Some(AccessType::Block(_)))
}

/// The access mode of a capability.
pub fn mode(cap: &csi::VolumeCapability) -> Mode {
    cap.access_mode
        .as_ref()
        .and_then(|m| Mode::try_from(m.mode).ok())
        .unwrap_or(Mode::Unknown)
}

/// Why a capability cannot be honoured, or None when it can.
/// `multi_attach` tells whether the volume can be multi-attached (an io2
/// volume with multi-attach), None when that is not known yet.
pub fn unsupported(cap: &csi::VolumeCapability, multi_attach: Option<bool>) -> Option<String> {
    let Some(access_type) = &cap.access_type else {
        return Some("volume capability has no access type (mount or block)".into());
    };
    if let AccessType::Mount(mount) = access_type
        && !mount.fs_type.is_empty()
        && FsType::parse(&mount.fs_type).is_none()
    {
        return Some(format!(
            "filesystem {:?} is not supported (ext4, xfs, ext3, ext2)",
            mount.fs_type
        ));
    }
    match mode(cap) {
        Mode::SingleNodeWriter
        | Mode::SingleNodeReaderOnly
        | Mode::SingleNodeSingleWriter
        | Mode::SingleNodeMultiWriter => None,
        Mode::MultiNodeMultiWriter if is_block(cap) && multi_attach != Some(false) => None,
        Mode::MultiNodeMultiWriter if is_block(cap) => {
            Some("MULTI_NODE_MULTI_WRITER needs an io2 volume (EBS multi-attach)".into())
        }
        Mode::MultiNodeMultiWriter => {
            Some("MULTI_NODE_MULTI_WRITER is only possible with block access on io2".into())
        }
        other => Some(format!(
            "access mode {} is not supported by EBS",
            other.as_str_name()
        )),
    }
}

/// Checks every capability of a request; InvalidArgument naming the first
/// that cannot be honoured.
pub fn check_all(caps: &[csi::VolumeCapability], multi_attach: Option<bool>) -> Result<()> {
    if caps.is_empty() {
        return Err(Error::missing("volume_capabilities"));
    }
    for cap in caps {
        if cap.access_mode.is_none() {
            return Err(Error::missing("volume_capability.access_mode"));
        }
        if let Some(why) = unsupported(cap, multi_attach) {
            return Err(Error::InvalidArgument(why));
        }
    }
    Ok(())
}

/// Whether any capability needs multi-attach.
pub fn wants_multi_attach(caps: &[csi::VolumeCapability]) -> bool {
    caps.iter().any(|c| mode(c) == Mode::MultiNodeMultiWriter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csi::volume_capability::{AccessMode, BlockVolume, MountVolume};

    fn cap(block: bool, mode: Mode, fs: &str) -> csi::VolumeCapability {
        csi::VolumeCapability {
            access_mode: Some(AccessMode { mode: mode as i32 }),
            access_type: Some(if block {
                AccessType::Block(BlockVolume {})
            } else {
                AccessType::Mount(MountVolume {
                    fs_type: fs.into(),
                    ..Default::default()
                })
            }),
        }
    }

    #[test]
    fn modes() {
        assert!(unsupported(&cap(false, Mode::SingleNodeWriter, "ext4"), None).is_none());
        assert!(unsupported(&cap(false, Mode::MultiNodeReaderOnly, ""), None).is_some());
        assert!(unsupported(&cap(false, Mode::MultiNodeMultiWriter, ""), None).is_some());
        assert!(unsupported(&cap(true, Mode::MultiNodeMultiWriter, ""), Some(true)).is_none());
        assert!(unsupported(&cap(true, Mode::MultiNodeMultiWriter, ""), Some(false)).is_some());
        let why = unsupported(&cap(false, Mode::SingleNodeWriter, "zfs"), None).unwrap();
        assert!(why.contains("\"zfs\""));
        assert!(check_all(&[], None).is_err());
    }
}
