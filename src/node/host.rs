//! The production [`Mounter`]: util-linux, e2fsprogs and xfsprogs commands
//! where the tools own the on-disk format (probe, mkfs, fsck, resize), and
//! direct syscalls where a command would only add a fork (mount, umount,
//! statvfs, stat).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};

use crate::contract::format::FsType;

use super::mounter::{FsStats, MountEntry, MountError, Mounter, PathKind, Probe, parse_mountinfo};

/// How many bytes at the start of a device must be zero for it to count as
/// empty. blkid (and so the reference driver, which formats whenever blkid
/// reports nothing) does not look for plain data: a device holding a raw
/// database or an encrypted blob without a header would be formatted.
/// Checking the first MiBs (plus the last one) costs a few milliseconds and
/// catches that. The head reaches past 4 MiB because that is where the last
/// of LUKS2's secondary headers sits, the furthest signature from either
/// end that libblkid probes for (`libblkid/src/superblocks/luks.c`).
const ZERO_CHECK_HEAD: u64 = (4 << 20) + (64 << 10);
/// Bytes checked at the end of the device: backup GPT headers, md 0.90/1.0,
/// DRBD and the RAID controllers' metadata, ZFS's last labels live there.
const ZERO_CHECK_TAIL: u64 = 1 << 20;

/// The real host: commands and syscalls.
#[derive(Debug, Clone, Default)]
pub struct HostMounter;

impl HostMounter {
    /// A mounter acting on this host.
    pub fn new() -> Self {
        HostMounter
    }

    /// The device holds no signature blkid knows: Empty only when its
    /// first and last MiBs are all zeros, else UnknownData at the first
    /// non-zero byte.
    fn zero_probe(&self, device: &Path) -> Result<Probe, MountError> {
        let size = self.device_size(device)?;
        let head = ZERO_CHECK_HEAD.min(size);
        let tail_start = size.saturating_sub(ZERO_CHECK_TAIL).max(head);
        let scan = |file: &mut File| {
            first_nonzero(file, 0, head).and_then(|f| match f {
                Some(at) => Ok(Some(at)),
                None => first_nonzero(file, tail_start, size - tail_start),
            })
        };
        // O_DIRECT: a fresh device's first read costs half as much without
        // the page cache, which would also read ahead MiBs nobody needs.
        // Devices (or sizes) that refuse it are read through the cache.
        let direct = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(device)
            .and_then(|mut file| scan(&mut file));
        let found = match direct {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                let mut file = File::open(device).map_err(|e| MountError::io("open", device, e))?;
                scan(&mut file)
            }
            other => other,
        }
        .map_err(|e| MountError::io("read", device, e))?;
        Ok(match found {
            Some(offset) => Probe::UnknownData { offset },
            None => Probe::Empty,
        })
    }

    /// Probes `device` with blkid; `zero_probe` answers when blkid finds
    /// no signature.
    fn blkid_probe(
        &self,
        device: &Path,
        zero_probe: impl FnOnce() -> Result<Probe, MountError>,
    ) -> Result<Probe, MountError> {
        let dev = path_str(device)?;
        // -p: read the device itself (not the blkid cache), which also
        // reports partition tables; exit 2 means no signature at all.
        let out = Command::new("blkid")
            .args(["-p", "-o", "export", dev])
            .output()
            .map_err(|source| MountError::Spawn {
                command: "blkid".into(),
                source,
            })?;
        let text = String::from_utf8_lossy(&out.stdout);
        match out.status.code() {
            Some(0) => {
                if let Some(kind) = export_value(&text, "TYPE") {
                    let usage = export_value(&text, "USAGE").unwrap_or("filesystem");
                    return Ok(if usage == "filesystem" {
                        Probe::Filesystem(kind.to_string())
                    } else {
                        Probe::Other {
                            kind: kind.to_string(),
                            usage: usage.to_string(),
                        }
                    });
                }
                if let Some(table) = export_value(&text, "PTTYPE") {
                    return Ok(Probe::PartitionTable(table.to_string()));
                }
                // A partition describes itself by its entry in the table
                // (PART_ENTRY_*): that is no signature of its contents.
                let signatures = text
                    .lines()
                    .filter(|l| !l.starts_with("PART_ENTRY_") && !l.starts_with("DEVNAME="))
                    .filter(|l| !l.trim().is_empty())
                    .count();
                if signatures == 0 {
                    return zero_probe();
                }
                Ok(Probe::Other {
                    kind: text.trim().replace('\n', " "),
                    usage: "unknown".into(),
                })
            }
            Some(2) => zero_probe(),
            Some(8) => Ok(Probe::Ambiguous(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            )),
            code => Err(MountError::Command {
                command: format!("blkid -p -o export {dev}"),
                status: out.status.to_string(),
                code,
                output: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            }),
        }
    }
}

/// Runs a command to completion and returns its stdout; a non-zero exit is
/// an error carrying the command line and what it printed.
fn run(program: &str, args: &[&str]) -> Result<String, MountError> {
    let command = std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    tracing::debug!(%command, "running");
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| MountError::Spawn {
            command: program.to_string(),
            source,
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        return Ok(stdout);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let output = if stderr.trim().is_empty() {
        stdout.trim()
    } else {
        stderr.trim()
    };
    Err(MountError::Command {
        command,
        status: out.status.to_string(),
        code: out.status.code(),
        output: output.to_string(),
    })
}

fn path_str(path: &Path) -> Result<&str, MountError> {
    path.to_str().ok_or_else(|| MountError::Parse {
        what: "path (not UTF-8)",
        value: path.display().to_string(),
    })
}

/// Splits mount options into the generic flags the mount syscall takes and
/// the filesystem-specific rest, which goes in its data string.
fn split_options(options: &[String]) -> (MsFlags, Vec<String>) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for opt in options.iter().flat_map(|o| o.split(',')).map(str::trim) {
        match opt {
            "" | "defaults" | "rw" | "suid" | "dev" | "exec" | "async" | "atime" | "diratime"
            | "auto" | "noauto" | "nouser" | "bind" => {}
            "ro" => flags |= MsFlags::MS_RDONLY,
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "sync" => flags |= MsFlags::MS_SYNCHRONOUS,
            "dirsync" => flags |= MsFlags::MS_DIRSYNC,
            "noatime" => flags |= MsFlags::MS_NOATIME,
            "nodiratime" => flags |= MsFlags::MS_NODIRATIME,
            "relatime" => flags |= MsFlags::MS_RELATIME,
            "strictatime" => flags |= MsFlags::MS_STRICTATIME,
            "lazytime" => flags |= MsFlags::MS_LAZYTIME,
            other => data.push(other.to_string()),
        }
    }
    (flags, data)
}

/// `path` with its parent resolved, the way the kernel lists mount points:
/// the parent is healthy even when `path` itself is a broken mount that
/// cannot be stat'ed.
fn mount_point_form(path: &Path) -> PathBuf {
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => fs::canonicalize(parent)
            .map(|p| p.join(name))
            .unwrap_or_else(|_| path.to_path_buf()),
        _ => path.to_path_buf(),
    }
}

/// A chunk of zeros to compare device contents against.
static ZEROS: [u8; 1 << 20] = [0; 1 << 20];

/// Finds the first non-zero byte of `device` in `[start, start+len)`.
fn first_nonzero(file: &mut File, start: u64, len: u64) -> std::io::Result<Option<u64>> {
    file.seek(SeekFrom::Start(start))?;
    // Aligned to the page, as O_DIRECT reads need.
    const ALIGN: usize = 4096;
    let mut raw = vec![0u8; ZEROS.len() + ALIGN];
    let skip = raw.as_ptr().align_offset(ALIGN);
    let buf = &mut raw[skip..skip + ZEROS.len()];
    let mut done = 0u64;
    while done < len {
        let want = buf.len().min((len - done) as usize);
        let got = file.read(&mut buf[..want])?;
        if got == 0 {
            break;
        }
        // A slice comparison is one memcmp; only a chunk that differs is
        // scanned byte by byte for the offset.
        if buf[..got] != ZEROS[..got] {
            let i = buf[..got].iter().position(|b| *b != 0).unwrap_or(0);
            return Ok(Some(start + done + i as u64));
        }
        done += got as u64;
    }
    Ok(None)
}

/// Parses `KEY=value` lines (blkid's export format).
fn export_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.trim())
}

/// The number after `key` (`key: N` or `key=N`) in tool output.
fn number_after(text: &str, key: &str) -> Option<u64> {
    let rest = &text[text.find(key)? + key.len()..];
    let rest = rest.trim_start_matches([':', '=', ' ', '\t']);
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

impl Mounter for HostMounter {
    fn probe(&self, device: &Path) -> Result<Probe, MountError> {
        // The zero check first: a device whose head and tail are all zeros
        // holds no signature blkid could find (every one it probes lies in
        // those ranges, see ZERO_CHECK_HEAD), so a new volume is known
        // empty after a few MiB of reads, without blkid's process (which
        // costs more than the reads, and, beside them, slows them down).
        // Anything else goes to blkid to be named: a filesystem to mount,
        // or what is there, refused.
        match self.zero_probe(device)? {
            Probe::Empty => Ok(Probe::Empty),
            data => self.blkid_probe(device, move || Ok(data)),
        }
    }

    fn format(&self, device: &Path, fs_type: &str, args: &[String]) -> Result<(), MountError> {
        let program = format!("mkfs.{fs_type}");
        let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
        all.push(path_str(device)?);
        run(&program, &all).map(drop)
    }

    fn mount(
        &self,
        device: &Path,
        target: &Path,
        fs_type: &str,
        options: &[String],
    ) -> Result<(), MountError> {
        let (flags, data) = split_options(options);
        let data = data.join(",");
        tracing::debug!(device = %device.display(), target = %target.display(), fs_type, ?flags, data, "mount");
        nix::mount::mount(
            Some(device),
            target,
            Some(fs_type),
            flags,
            (!data.is_empty()).then_some(data.as_str()),
        )
        .map_err(|e| MountError::io("mount", target, e))
    }

    fn bind(
        &self,
        source: &Path,
        target: &Path,
        readonly: bool,
        options: &[String],
    ) -> Result<(), MountError> {
        let (mut flags, data) = split_options(options);
        if !data.is_empty() {
            // Filesystem options already apply through the staging mount;
            // a bind mount cannot change them.
            tracing::debug!(
                ?data,
                "filesystem-specific options not applied to the bind mount"
            );
        }
        if readonly {
            flags |= MsFlags::MS_RDONLY;
        }
        nix::mount::mount(
            Some(source),
            target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| MountError::io("bind-mount onto", target, e))?;
        if flags.is_empty() {
            return Ok(());
        }
        // The kernel ignores flags on the first MS_BIND call; they take
        // effect through a remount of the new bind mount.
        let remount = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags;
        if let Err(e) = nix::mount::mount(None::<&str>, target, None::<&str>, remount, None::<&str>)
        {
            let _ = nix::mount::umount2(target, MntFlags::empty());
            return Err(MountError::io("remount with flags", target, e));
        }
        Ok(())
    }

    fn unmount(&self, target: &Path) -> Result<(), MountError> {
        match nix::mount::umount2(target, MntFlags::empty()) {
            Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(MountError::io("unmount", target, e)),
        }
    }

    fn mount_at(&self, path: &Path) -> Result<Option<MountEntry>, MountError> {
        let wanted = mount_point_form(path);
        // Later lines are mounted on top of earlier ones at the same point.
        Ok(self
            .mounts()?
            .into_iter()
            .rev()
            .find(|e| e.mount_point == wanted || e.mount_point == path))
    }

    fn mounts(&self) -> Result<Vec<MountEntry>, MountError> {
        let table = Path::new("/proc/self/mountinfo");
        let text = fs::read_to_string(table).map_err(|e| MountError::io("read", table, e))?;
        parse_mountinfo(&text)
    }

    fn device_number(&self, path: &Path) -> Result<Option<u64>, MountError> {
        let meta = fs::metadata(path).map_err(|e| MountError::io("stat", path, e))?;
        Ok(meta.file_type().is_block_device().then(|| meta.rdev()))
    }

    fn device_exists(&self, dev: u64) -> bool {
        let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
        Path::new(&format!("/sys/dev/block/{major}:{minor}")).exists()
    }

    fn device_size(&self, path: &Path) -> Result<u64, MountError> {
        // Seeking to the end of a block device yields its size, without an
        // ioctl and for any device type.
        let mut file = File::open(path).map_err(|e| MountError::io("open", path, e))?;
        file.seek(SeekFrom::End(0))
            .map_err(|e| MountError::io("find the size of", path, e))
    }

    fn fs_size(&self, device: &Path, fs_type: &str) -> Result<Option<u64>, MountError> {
        let dev = path_str(device)?;
        let parse = |text: &str, count_key: &str, size_key: &str| match (
            number_after(text, count_key),
            number_after(text, size_key),
        ) {
            (Some(count), Some(size)) => Ok(Some(count * size)),
            _ => Err(MountError::Parse {
                what: "filesystem geometry",
                value: text.chars().take(400).collect(),
            }),
        };
        if FsType::is_ext_name(fs_type) {
            let out = run("dumpe2fs", &["-h", dev])?;
            parse(&out, "Block count", "Block size")
        } else if fs_type == "xfs" {
            // Data section: "data     =      bsize=4096   blocks=262144, …".
            let out = run("xfs_info", &[dev])?;
            let data = out
                .lines()
                .find(|l| l.starts_with("data"))
                .unwrap_or_default();
            parse(data, "blocks", "bsize")
        } else {
            Ok(None)
        }
    }

    fn grow_offline(&self, device: &Path, fs_type: &str) -> Result<(), MountError> {
        let dev = path_str(device)?;
        if !FsType::is_ext_name(fs_type) {
            return Err(MountError::Parse {
                what: "filesystem type for offline growth (ext2/3/4 only)",
                value: fs_type.to_string(),
            });
        }
        // resize2fs insists on a forced check first; -p repairs only what is
        // safe to repair unattended. Exit 1 means "errors fixed".
        match run("e2fsck", &["-f", "-p", dev]) {
            Ok(_) => {}
            Err(MountError::Command { code: Some(1), .. }) => {}
            Err(e) => return Err(e),
        }
        run("resize2fs", &[dev]).map(drop)
    }

    fn grow_online(
        &self,
        device: &Path,
        mount_path: &Path,
        fs_type: &str,
    ) -> Result<(), MountError> {
        if FsType::is_ext_name(fs_type) {
            run("resize2fs", &[path_str(device)?]).map(drop)
        } else if fs_type == "xfs" {
            run("xfs_growfs", &["-d", path_str(mount_path)?]).map(drop)
        } else {
            Err(MountError::Parse {
                what: "filesystem type for growth (ext2/3/4 or xfs)",
                value: fs_type.to_string(),
            })
        }
    }

    fn statvfs(&self, path: &Path) -> Result<FsStats, MountError> {
        let st =
            nix::sys::statvfs::statvfs(path).map_err(|e| MountError::io("statvfs", path, e))?;
        let frsize = st.fragment_size() as u64;
        let (blocks, free, avail) = (
            st.blocks() as u64,
            st.blocks_free() as u64,
            st.blocks_available() as u64,
        );
        let (files, files_free) = (st.files() as u64, st.files_free() as u64);
        Ok(FsStats {
            bytes_available: avail * frsize,
            bytes_total: blocks * frsize,
            bytes_used: blocks.saturating_sub(free) * frsize,
            inodes_available: files_free,
            inodes_total: files,
            inodes_used: files.saturating_sub(files_free),
        })
    }

    fn path_kind(&self, path: &Path) -> Result<PathKind, MountError> {
        match fs::metadata(path) {
            Ok(m) if m.is_dir() => Ok(PathKind::Dir),
            Ok(_) => Ok(PathKind::File),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(PathKind::Missing),
            Err(e) => Err(MountError::io("stat", path, e)),
        }
    }

    fn make_dir(&self, path: &Path) -> Result<(), MountError> {
        fs::create_dir_all(path).map_err(|e| MountError::io("create directory", path, e))
    }

    fn make_file(&self, path: &Path) -> Result<(), MountError> {
        if let Some(parent) = path.parent() {
            self.make_dir(parent)?;
        }
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map(drop)
            .map_err(|e| MountError::io("create file", path, e))
    }

    fn remove(&self, path: &Path) -> Result<(), MountError> {
        let result = match fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => fs::remove_dir(path),
            Ok(_) => fs::remove_file(path),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(MountError::io("remove", path, e)),
        }
    }

    fn set_group(&self, path: &Path, gid: u32) -> Result<(), MountError> {
        std::os::unix::fs::chown(path, None, Some(gid))
            .map_err(|e| MountError::io("change the group of", path, e))?;
        let meta = fs::metadata(path).map_err(|e| MountError::io("stat", path, e))?;
        let mode = meta.permissions().mode() | 0o2070;
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .map_err(|e| MountError::io("change the mode of", path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_into_flags_and_data() {
        let opts = vec![
            "noatime,nosuid".to_string(),
            "ro".into(),
            "data=ordered".into(),
            "defaults".into(),
        ];
        let (flags, data) = split_options(&opts);
        assert!(flags.contains(MsFlags::MS_NOATIME | MsFlags::MS_NOSUID | MsFlags::MS_RDONLY));
        assert_eq!(data, vec!["data=ordered"]);
    }

    #[test]
    fn tool_output_numbers_are_found() {
        let dumpe2fs = "Block count:              262144\nBlock size:               4096\n";
        assert_eq!(number_after(dumpe2fs, "Block count"), Some(262144));
        assert_eq!(number_after(dumpe2fs, "Block size"), Some(4096));
        let xfs = "data     =                       bsize=4096   blocks=262144, imaxpct=25";
        assert_eq!(number_after(xfs, "blocks"), Some(262144));
        assert_eq!(number_after(xfs, "bsize"), Some(4096));
        assert_eq!(
            export_value("DEVNAME=/dev/x\nTYPE=xfs\n", "TYPE"),
            Some("xfs")
        );
    }

    #[test]
    fn zero_scan_finds_the_first_data_byte() {
        let mut f = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut f, &vec![0u8; 3 << 20]).unwrap();
        assert_eq!(first_nonzero(&mut f, 0, 3 << 20).unwrap(), None);
        f.seek(SeekFrom::Start((2 << 20) + 5)).unwrap();
        std::io::Write::write_all(&mut f, b"x").unwrap();
        assert_eq!(
            first_nonzero(&mut f, 0, 3 << 20).unwrap(),
            Some((2 << 20) + 5)
        );
        assert_eq!(first_nonzero(&mut f, 0, 1 << 20).unwrap(), None);
    }
}
