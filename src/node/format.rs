//! mkfs arguments: the filesystem type from the volume capability and the
//! format options the controller copied into the volume context (parsed by
//! [`crate::contract::format`], the rules the controller applied too).

use crate::contract::format::{FormatOptions, FsType};
use crate::error::{Error, Result};

/// The filesystem type of a mount capability: `ext4` when empty,
/// InvalidArgument naming it when unsupported.
pub fn fs_type(requested: &str) -> Result<FsType> {
    if requested.trim().is_empty() {
        return Ok(FsType::DEFAULT);
    }
    FsType::parse(requested).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "filesystem type {requested:?} is not supported; use one of {}",
            FsType::names()
        ))
    })
}

/// The `mkfs.<fs>` arguments (without the device) for a fresh EBS volume:
/// a new volume reads as zeros and has nothing to discard, so the discard
/// pass (slow on large volumes) is skipped, and ext inode tables and journal
/// are initialised lazily by the kernel after mount instead of making
/// NodeStage wait for them. `opts` were checked against `fs` when parsed.
/// `legacy_xfs` (`--legacy-xfs`) turns off the xfs features kernels before
/// 5.4 cannot mount, with the reference driver's options.
pub fn mkfs_args(fs: FsType, opts: &FormatOptions, legacy_xfs: bool) -> Vec<String> {
    let mut args: Vec<String> = Vec::new();
    let mut push = |flag: &str, value: String| {
        args.push(flag.to_string());
        args.push(value);
    };
    if fs.is_ext() {
        // -F: the device is a whole disk, not a partition; -m0: no
        // root-reserved blocks on a data volume. Both as the reference
        // driver (through k8s mount-utils) does.
        push("-F", "-m0".to_string());
        for (flag, value) in [
            ("-b", opts.block_size),
            ("-I", opts.inode_size),
            ("-i", opts.bytes_per_inode),
            ("-N", opts.number_of_inodes),
        ] {
            if let Some(v) = value {
                push(flag, v.to_string());
            }
        }
        let features: Vec<&str> = [
            opts.big_alloc.then_some("bigalloc"),
            opts.encryption.then_some("encrypt"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !features.is_empty() {
            push("-O", features.join(","));
        }
        if let (true, Some(c)) = (opts.big_alloc, opts.cluster_size) {
            push("-C", c.to_string());
        }
        let extended = if fs == FsType::Ext2 {
            "lazy_itable_init=1,nodiscard"
        } else {
            "lazy_itable_init=1,lazy_journal_init=1,nodiscard"
        };
        push("-E", extended.to_string());
    } else {
        // xfs. -K: do not discard blocks (nothing to discard on a new
        // volume). No -f: mkfs.xfs then refuses to overwrite any signature
        // it finds — a second safety net behind our own probe.
        args.push("-K".to_string());
        if let Some(b) = opts.block_size {
            args.extend(["-b".to_string(), format!("size={b}")]);
        }
        let mut inode: Vec<String> = opts
            .inode_size
            .map(|i| format!("size={i}"))
            .into_iter()
            .collect();
        if legacy_xfs {
            args.extend([
                "-m".to_string(),
                "bigtime=0,inobtcount=0,reflink=0".to_string(),
            ]);
            inode.push("nrext64=0".to_string());
        }
        if !inode.is_empty() {
            args.extend(["-i".to_string(), inode.join(",")]);
        }
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn ctx(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn ext4_gets_every_option_and_lazy_init() {
        let opts = FormatOptions::from_context(
            &ctx(&[
                ("blockSize", "4096"),
                ("inodeSize", "512"),
                ("bytesPerInode", "16384"),
                ("numberOfInodes", "1000"),
                ("ext4BigAlloc", "true"),
                ("ext4ClusterSize", "65536"),
                ("type", "gp3"),
            ]),
            FsType::Ext4,
        )
        .unwrap();
        assert_eq!(
            mkfs_args(FsType::Ext4, &opts, false).join(" "),
            "-F -m0 -b 4096 -I 512 -i 16384 -N 1000 -O bigalloc -C 65536 \
             -E lazy_itable_init=1,lazy_journal_init=1,nodiscard"
        );
        // The reference's lowercase context keys, and encryption support.
        let opts = FormatOptions::from_context(
            &ctx(&[
                ("blocksize", "1024"),
                ("ext4encryptionsupport", "true"),
                ("ext4bigalloc", "true"),
            ]),
            FsType::Ext4,
        )
        .unwrap();
        assert_eq!(
            mkfs_args(FsType::Ext4, &opts, false).join(" "),
            "-F -m0 -b 1024 -O bigalloc,encrypt -E lazy_itable_init=1,lazy_journal_init=1,nodiscard"
        );
    }

    #[test]
    fn xfs_gets_sizes_and_no_discard() {
        let opts = FormatOptions::from_context(
            &ctx(&[("blockSize", "2048"), ("inodeSize", "1024")]),
            FsType::Xfs,
        )
        .unwrap();
        assert_eq!(
            mkfs_args(FsType::Xfs, &opts, false),
            ["-K", "-b", "size=2048", "-i", "size=1024"]
        );
        assert_eq!(
            mkfs_args(FsType::Xfs, &FormatOptions::default(), false),
            ["-K"]
        );
        assert_eq!(
            mkfs_args(FsType::Xfs, &opts, true).join(" "),
            "-K -b size=2048 -m bigtime=0,inobtcount=0,reflink=0 -i size=1024,nrext64=0",
            "--legacy-xfs, as the reference driver formats"
        );
        assert_eq!(
            mkfs_args(FsType::Ext2, &FormatOptions::default(), false).join(" "),
            "-F -m0 -E lazy_itable_init=1,nodiscard"
        );
    }

    #[test]
    fn inapplicable_or_bad_options_name_key_and_value() {
        let parse = |pairs: &[(&str, &str)], fs| FormatOptions::from_context(&ctx(pairs), fs);
        let err = parse(&[("inodeSize", "big")], FsType::Ext4).unwrap_err();
        assert!(err.to_string().contains("inodeSize=\"big\""), "{err}");
        let err = parse(&[("blockSize", "0")], FsType::Ext4).unwrap_err();
        assert!(err.to_string().contains("blockSize"), "{err}");
        let err = parse(&[("ext4BigAlloc", "yes")], FsType::Ext4).unwrap_err();
        assert!(err.to_string().contains("\"yes\""), "{err}");
        let err = parse(&[("bytesPerInode", "4096")], FsType::Xfs).unwrap_err();
        assert!(err.to_string().contains("bytesPerInode") && err.to_string().contains("xfs"));
        let err = parse(&[("ext4ClusterSize", "65536")], FsType::Ext4).unwrap_err();
        assert!(err.to_string().contains("ext4BigAlloc"));
        assert!(parse(&[("ext4BigAlloc", "true")], FsType::Ext3).is_err());
    }

    #[test]
    fn fs_types_default_and_reject_by_name() {
        assert_eq!(fs_type("").unwrap(), FsType::Ext4);
        assert_eq!(fs_type("XFS").unwrap(), FsType::Xfs);
        let err = fs_type("ntfs").unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.to_string().contains("\"ntfs\""));
    }
}
