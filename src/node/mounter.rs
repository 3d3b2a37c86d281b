//! The `Mounter` seam: everything the Node service does to the host — probe,
//! format, mount, unmount, resize, stat, and the few directory and file
//! operations around them — behind one trait.
//!
//! The stage/publish/expand/stats rules in the sibling modules only talk to
//! this trait, so they are unit-tested against an in-memory double while the
//! production implementation ([`super::host::HostMounter`]) runs the real
//! commands and syscalls. Methods are synchronous: the service runs each RPC
//! body on a blocking thread, because mkfs and resize take seconds.

use std::path::{Path, PathBuf};

use crate::error::Error;

/// What a device holds, as far as probing can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// No signature and only zero bytes where we looked: safe to format.
    Empty,
    /// A filesystem of this type (`ext4`, `xfs`, …).
    Filesystem(String),
    /// A partition table of this type (`gpt`, `dos`): never formatted or mounted.
    PartitionTable(String),
    /// A recognised signature that is not a mountable filesystem
    /// (`LVM2_member`, `crypto_LUKS`, `swap`, …) with blkid's usage class.
    Other {
        /// blkid's TYPE.
        kind: String,
        /// blkid's USAGE (`raid`, `crypto`, `other`).
        usage: String,
    },
    /// No signature, but non-zero bytes at this offset: someone's data.
    UnknownData {
        /// Byte offset of the first non-zero byte found.
        offset: u64,
    },
    /// blkid found several conflicting signatures.
    Ambiguous(String),
}

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// The path inside the filesystem that is mounted (`/` unless a bind of a subdirectory).
    pub root: String,
    /// Device number of the filesystem (`st_dev` of files in it).
    pub dev: u64,
    /// Filesystem type.
    pub fs_type: String,
    /// Mount source as the kernel reports it (`/dev/loop3`).
    pub source: String,
    /// Per-mount options (`rw`, `ro`, `nosuid`, …).
    pub mount_options: Vec<String>,
    /// Superblock options; `ro` here while the mount is `rw` means the
    /// filesystem turned itself read-only (an I/O or consistency error).
    pub super_options: Vec<String>,
}

impl MountEntry {
    /// Whether this mount was made read-only.
    pub fn is_read_only(&self) -> bool {
        self.mount_options.iter().any(|o| o == "ro")
    }

    /// Whether the filesystem is read-only although the mount is read-write.
    pub fn went_read_only(&self) -> bool {
        !self.is_read_only() && self.super_options.iter().any(|o| o == "ro")
    }

    /// Whether `other` shows the same filesystem subtree (a bind mount of it).
    pub fn same_subtree(&self, other: &MountEntry) -> bool {
        self.dev == other.dev && self.root == other.root
    }
}

/// What is at a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    /// Nothing.
    Missing,
    /// A directory.
    Dir,
    /// Anything else (a file, a device node bind-mounted on a file).
    File,
}

/// Filesystem usage from statvfs, in bytes and inodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FsStats {
    /// Bytes available to unprivileged users.
    pub bytes_available: u64,
    /// Size of the filesystem's data area.
    pub bytes_total: u64,
    /// Bytes in use.
    pub bytes_used: u64,
    /// Free inodes.
    pub inodes_available: u64,
    /// Total inodes.
    pub inodes_total: u64,
    /// Inodes in use.
    pub inodes_used: u64,
}

/// The host operations of the Node service. See the module docs.
pub trait Mounter: Send + Sync {
    /// What `device` holds; never writes to it.
    fn probe(&self, device: &Path) -> Result<Probe, MountError>;
    /// Runs `mkfs.<fs_type> <args…> <device>`.
    fn format(&self, device: &Path, fs_type: &str, args: &[String]) -> Result<(), MountError>;
    /// Mounts `device` (a filesystem of `fs_type`) at `target` with `options`.
    fn mount(
        &self,
        device: &Path,
        target: &Path,
        fs_type: &str,
        options: &[String],
    ) -> Result<(), MountError>;
    /// Bind-mounts `source` (a directory or a device node) onto `target`,
    /// read-only when asked, with the generic mount flags in `options`.
    fn bind(
        &self,
        source: &Path,
        target: &Path,
        readonly: bool,
        options: &[String],
    ) -> Result<(), MountError>;
    /// Unmounts the topmost mount at `target`; OK when nothing is mounted.
    fn unmount(&self, target: &Path) -> Result<(), MountError>;
    /// The topmost mount at `path`, if `path` is a mount point.
    fn mount_at(&self, path: &Path) -> Result<Option<MountEntry>, MountError>;
    /// Every mount of this mount namespace, in mount order.
    fn mounts(&self) -> Result<Vec<MountEntry>, MountError>;
    /// The device number of the block device node at `path` (following
    /// links and mounts), or None when it is not a block device.
    fn device_number(&self, path: &Path) -> Result<Option<u64>, MountError>;
    /// Whether the block device with this number still exists.
    fn device_exists(&self, dev: u64) -> bool;
    /// Size in bytes of the block device at `path`.
    fn device_size(&self, path: &Path) -> Result<u64, MountError>;
    /// Size in bytes of the filesystem on `device`, when the tools can tell.
    fn fs_size(&self, device: &Path, fs_type: &str) -> Result<Option<u64>, MountError>;
    /// Grows the unmounted filesystem on `device` to the device size.
    fn grow_offline(&self, device: &Path, fs_type: &str) -> Result<(), MountError>;
    /// Grows the filesystem on `device`, mounted at `mount_path`, online.
    fn grow_online(
        &self,
        device: &Path,
        mount_path: &Path,
        fs_type: &str,
    ) -> Result<(), MountError>;
    /// statvfs of the filesystem holding `path`.
    fn statvfs(&self, path: &Path) -> Result<FsStats, MountError>;
    /// What is at `path` (following mounts).
    fn path_kind(&self, path: &Path) -> Result<PathKind, MountError>;
    /// Creates the directory `path` and its parents.
    fn make_dir(&self, path: &Path) -> Result<(), MountError>;
    /// Creates an empty file at `path` (parents too); keeps an existing one.
    fn make_file(&self, path: &Path) -> Result<(), MountError>;
    /// Removes the (unmounted) directory or file at `path`; OK when gone.
    fn remove(&self, path: &Path) -> Result<(), MountError>;
    /// Gives group `gid` write access to the directory `path` (setgid, g+rwx).
    fn set_group(&self, path: &Path, gid: u32) -> Result<(), MountError>;
}

/// A failed host operation.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// A command exited non-zero.
    #[error("`{command}` failed ({status}): {output}")]
    Command {
        /// The command line.
        command: String,
        /// Exit status as text.
        status: String,
        /// Exit code, when the command exited (not killed by a signal).
        code: Option<i32>,
        /// What it printed (stderr, else stdout), trimmed.
        output: String,
    },
    /// A command could not be started.
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        /// The program.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// A syscall or file operation failed.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        /// What was attempted (`mount`, `stat`, …).
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Output or a kernel table could not be understood.
    #[error("cannot parse {what}: {value:?}")]
    Parse {
        /// What was being parsed.
        what: &'static str,
        /// The offending text.
        value: String,
    },
}

impl MountError {
    /// Shorthand for [`MountError::Io`].
    pub fn io(op: &'static str, path: &Path, source: impl Into<std::io::Error>) -> Self {
        MountError::Io {
            op,
            path: path.to_path_buf(),
            source: source.into(),
        }
    }
}

/// Host failures are not the caller's fault: they surface as Internal, with
/// the command or syscall and its output in the message.
impl From<MountError> for Error {
    fn from(err: MountError) -> Self {
        Error::Internal(err.to_string())
    }
}

/// Parses the text of `/proc/self/mountinfo` (proc(5)).
pub fn parse_mountinfo(text: &str) -> Result<Vec<MountEntry>, MountError> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(parse_mountinfo_line)
        .collect()
}

fn parse_mountinfo_line(line: &str) -> Result<MountEntry, MountError> {
    let bad = || MountError::Parse {
        what: "mountinfo line",
        value: line.to_string(),
    };
    let fields: Vec<&str> = line.split(' ').collect();
    // Optional fields end at a lone "-"; it is always at index 6 or later.
    let sep = fields
        .iter()
        .skip(6)
        .position(|f| *f == "-")
        .ok_or_else(bad)?
        + 6;
    if fields.len() < sep + 3 {
        return Err(bad());
    }
    let (major, minor) = fields[2].split_once(':').ok_or_else(bad)?;
    let major: u32 = major.parse().map_err(|_| bad())?;
    let minor: u32 = minor.parse().map_err(|_| bad())?;
    let options = |s: &str| s.split(',').map(str::to_string).collect::<Vec<_>>();
    Ok(MountEntry {
        root: unescape(fields[3]),
        mount_point: PathBuf::from(unescape(fields[4])),
        dev: nix::sys::stat::makedev(major.into(), minor.into()),
        mount_options: options(fields[5]),
        fs_type: fields[sep + 1].to_string(),
        source: unescape(fields[sep + 2]),
        super_options: fields.get(sep + 3).map(|s| options(s)).unwrap_or_default(),
    })
}

/// Undoes the kernel's octal escapes (`\040` for a space, …) in mountinfo paths.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value =
                (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
24 27 0:6 / /dev rw,relatime - devtmpfs devtmpfs rw,size=123k,mode=755
42 27 7:0 / /tmp/stage\\040dir rw,relatime shared:5 - xfs /dev/loop0 rw,inode64
43 27 7:0 / /tmp/target ro,relatime shared:5 master:1 - xfs /dev/loop0 rw,inode64
44 27 0:6 /loop0 /tmp/block rw,relatime - devtmpfs devtmpfs rw
45 27 7:1 / /tmp/broken rw,relatime - ext4 /dev/loop1 ro,errors=remount-ro
";

    #[test]
    fn mountinfo_lines_are_parsed_with_escapes_and_optional_fields() {
        let entries = parse_mountinfo(SAMPLE).unwrap();
        assert_eq!(entries.len(), 5);
        let stage = &entries[1];
        assert_eq!(stage.mount_point, PathBuf::from("/tmp/stage dir"));
        assert_eq!(stage.fs_type, "xfs");
        assert_eq!(stage.source, "/dev/loop0");
        assert_eq!(stage.dev, nix::sys::stat::makedev(7, 0));
        let target = &entries[2];
        assert!(target.is_read_only());
        assert!(target.same_subtree(stage));
        let block = &entries[3];
        assert_eq!(block.root, "/loop0");
        assert!(!block.same_subtree(stage));
        assert!(entries[4].went_read_only());
        assert!(!stage.went_read_only());
    }

    #[test]
    fn a_malformed_line_is_named_in_the_error() {
        let err = parse_mountinfo("1 2 x:y / /a rw - ext4 /dev/x rw").unwrap_err();
        assert!(err.to_string().contains("x:y"), "{err}");
        assert!(parse_mountinfo("1 2 3").is_err());
    }

    #[test]
    fn unescape_handles_trailing_backslashes() {
        assert_eq!(unescape("a\\134b"), "a\\b");
        assert_eq!(unescape("a\\"), "a\\");
        assert_eq!(unescape("a\\04"), "a\\04");
    }
}
