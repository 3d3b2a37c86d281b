//! mkfs arguments: the filesystem type from the volume capability and the
//! format options the controller copied from the StorageClass into the
//! volume context (the reference driver's parameter names and meanings).

use std::collections::HashMap;

use crate::error::{Error, Result};

/// Volume-context key: filesystem block size in bytes (ext `-b`, xfs `-b size=`).
pub const BLOCK_SIZE: &str = "blockSize";
/// Volume-context key: inode size in bytes (ext `-I`, xfs `-i size=`).
pub const INODE_SIZE: &str = "inodeSize";
/// Volume-context key: bytes per inode (ext `-i`).
pub const BYTES_PER_INODE: &str = "bytesPerInode";
/// Volume-context key: number of inodes (ext `-N`).
pub const NUMBER_OF_INODES: &str = "numberOfInodes";
/// Volume-context key: `true` for ext4 bigalloc (`-O bigalloc`).
pub const EXT4_BIG_ALLOC: &str = "ext4BigAlloc";
/// Volume-context key: ext4 cluster size in bytes (`-C`), with bigalloc.
pub const EXT4_CLUSTER_SIZE: &str = "ext4ClusterSize";

/// Filesystem when the capability names none (as the reference driver).
pub const DEFAULT_FS_TYPE: &str = "ext4";

/// The filesystems this driver formats and mounts.
pub const SUPPORTED_FS_TYPES: &[&str] = &["ext2", "ext3", "ext4", "xfs"];

/// Format options from the volume context; all optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FormatOptions {
    /// `blockSize`.
    pub block_size: Option<u64>,
    /// `inodeSize`.
    pub inode_size: Option<u64>,
    /// `bytesPerInode`.
    pub bytes_per_inode: Option<u64>,
    /// `numberOfInodes`.
    pub number_of_inodes: Option<u64>,
    /// `ext4BigAlloc`.
    pub big_alloc: bool,
    /// `ext4ClusterSize`.
    pub cluster_size: Option<u64>,
}

impl FormatOptions {
    /// Reads the options from a volume context; other keys are ignored
    /// (the controller puts more there than formatting needs).
    pub fn from_context(context: &HashMap<String, String>) -> Result<Self> {
        let number = |key: &str| -> Result<Option<u64>> {
            match context.get(key).map(|v| v.trim()) {
                None | Some("") => Ok(None),
                Some(v) => v
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .map(Some)
                    .ok_or_else(|| {
                        Error::InvalidArgument(format!(
                            "volume context {key}={v:?} must be a positive whole number"
                        ))
                    }),
            }
        };
        let big_alloc = match context
            .get(EXT4_BIG_ALLOC)
            .map(|v| v.trim().to_ascii_lowercase())
        {
            None => false,
            Some(v) if v.is_empty() || v == "false" => false,
            Some(v) if v == "true" => true,
            Some(v) => {
                return Err(Error::InvalidArgument(format!(
                    "volume context {EXT4_BIG_ALLOC}={v:?} must be true or false"
                )));
            }
        };
        Ok(FormatOptions {
            block_size: number(BLOCK_SIZE)?,
            inode_size: number(INODE_SIZE)?,
            bytes_per_inode: number(BYTES_PER_INODE)?,
            number_of_inodes: number(NUMBER_OF_INODES)?,
            big_alloc,
            cluster_size: number(EXT4_CLUSTER_SIZE)?,
        })
    }

    /// Whether any option was given (they only matter for a fresh format).
    pub fn is_empty(&self) -> bool {
        *self == FormatOptions::default()
    }
}

/// The filesystem type of a mount capability: lower-cased, `ext4` when
/// empty, InvalidArgument naming it when unsupported.
pub fn fs_type(requested: &str) -> Result<String> {
    let fs = requested.trim().to_ascii_lowercase();
    if fs.is_empty() {
        return Ok(DEFAULT_FS_TYPE.to_string());
    }
    if SUPPORTED_FS_TYPES.contains(&fs.as_str()) {
        Ok(fs)
    } else {
        Err(Error::InvalidArgument(format!(
            "filesystem type {requested:?} is not supported; use one of {}",
            SUPPORTED_FS_TYPES.join(", ")
        )))
    }
}

/// The `mkfs.<fs_type>` arguments (without the device) for a fresh EBS
/// volume: a new volume reads as zeros and has nothing to discard, so the
/// discard pass (slow on large volumes) is skipped, and ext inode tables and
/// journal are initialised lazily by the kernel after mount instead of
/// making NodeStage wait for them.
pub fn mkfs_args(fs_type: &str, opts: &FormatOptions) -> Result<Vec<String>> {
    let not_for = |key: &str| {
        Error::InvalidArgument(format!(
            "volume context {key} does not apply to filesystem type {fs_type}"
        ))
    };
    let mut args: Vec<String> = Vec::new();
    match fs_type {
        "ext2" | "ext3" | "ext4" => {
            // -F: the device is a whole disk, not a partition; -m0: no
            // root-reserved blocks on a data volume. Both as the reference
            // driver (through k8s mount-utils) does.
            args.extend(["-F", "-m0"].map(String::from));
            let mut push = |flag: &str, value: Option<u64>| {
                if let Some(v) = value {
                    args.push(flag.to_string());
                    args.push(v.to_string());
                }
            };
            push("-b", opts.block_size);
            push("-I", opts.inode_size);
            push("-i", opts.bytes_per_inode);
            push("-N", opts.number_of_inodes);
            if opts.big_alloc || opts.cluster_size.is_some() {
                if fs_type != "ext4" {
                    return Err(not_for(EXT4_BIG_ALLOC));
                }
                if !opts.big_alloc {
                    return Err(Error::InvalidArgument(format!(
                        "volume context {EXT4_CLUSTER_SIZE} needs {EXT4_BIG_ALLOC}=true"
                    )));
                }
                args.extend(["-O", "bigalloc"].map(String::from));
                if let Some(c) = opts.cluster_size {
                    args.extend(["-C".to_string(), c.to_string()]);
                }
            }
            let extended = if fs_type == "ext2" {
                "lazy_itable_init=1,nodiscard"
            } else {
                "lazy_itable_init=1,lazy_journal_init=1,nodiscard"
            };
            args.extend(["-E".to_string(), extended.to_string()]);
        }
        "xfs" => {
            for (key, value) in [
                (BYTES_PER_INODE, opts.bytes_per_inode),
                (NUMBER_OF_INODES, opts.number_of_inodes),
                (EXT4_CLUSTER_SIZE, opts.cluster_size),
            ] {
                if value.is_some() {
                    return Err(not_for(key));
                }
            }
            if opts.big_alloc {
                return Err(not_for(EXT4_BIG_ALLOC));
            }
            // -K: do not discard blocks (nothing to discard on a new volume).
            // No -f: mkfs.xfs then refuses to overwrite any signature it
            // finds — a second safety net behind our own probe.
            args.push("-K".to_string());
            if let Some(b) = opts.block_size {
                args.extend(["-b".to_string(), format!("size={b}")]);
            }
            if let Some(i) = opts.inode_size {
                args.extend(["-i".to_string(), format!("size={i}")]);
            }
        }
        other => {
            return Err(Error::InvalidArgument(format!(
                "filesystem type {other:?} is not supported"
            )));
        }
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn ext4_gets_every_option_and_lazy_init() {
        let opts = FormatOptions::from_context(&ctx(&[
            (BLOCK_SIZE, "4096"),
            (INODE_SIZE, "512"),
            (BYTES_PER_INODE, "16384"),
            (NUMBER_OF_INODES, "1000"),
            (EXT4_BIG_ALLOC, "true"),
            (EXT4_CLUSTER_SIZE, "65536"),
            ("type", "gp3"),
        ]))
        .unwrap();
        let args = mkfs_args("ext4", &opts).unwrap().join(" ");
        assert_eq!(
            args,
            "-F -m0 -b 4096 -I 512 -i 16384 -N 1000 -O bigalloc -C 65536 \
             -E lazy_itable_init=1,lazy_journal_init=1,nodiscard"
        );
    }

    #[test]
    fn xfs_gets_sizes_and_no_discard() {
        let opts = FormatOptions::from_context(&ctx(&[(BLOCK_SIZE, "2048"), (INODE_SIZE, "1024")]))
            .unwrap();
        assert_eq!(
            mkfs_args("xfs", &opts).unwrap(),
            ["-K", "-b", "size=2048", "-i", "size=1024"]
        );
        assert_eq!(mkfs_args("xfs", &FormatOptions::default()).unwrap(), ["-K"]);
    }

    #[test]
    fn inapplicable_or_bad_options_name_key_and_value() {
        let err = FormatOptions::from_context(&ctx(&[(INODE_SIZE, "big")])).unwrap_err();
        assert!(err.to_string().contains("inodeSize=\"big\""), "{err}");
        let err = FormatOptions::from_context(&ctx(&[(BLOCK_SIZE, "0")])).unwrap_err();
        assert!(err.to_string().contains("blockSize"), "{err}");
        let err = FormatOptions::from_context(&ctx(&[(EXT4_BIG_ALLOC, "yes")])).unwrap_err();
        assert!(err.to_string().contains("\"yes\""), "{err}");

        let opts = FormatOptions::from_context(&ctx(&[(BYTES_PER_INODE, "4096")])).unwrap();
        let err = mkfs_args("xfs", &opts).unwrap_err();
        assert!(err.to_string().contains("bytesPerInode") && err.to_string().contains("xfs"));
        let opts = FormatOptions::from_context(&ctx(&[(EXT4_CLUSTER_SIZE, "65536")])).unwrap();
        assert!(
            mkfs_args("ext4", &opts)
                .unwrap_err()
                .to_string()
                .contains("ext4BigAlloc")
        );
        let opts = FormatOptions::from_context(&ctx(&[(EXT4_BIG_ALLOC, "true")])).unwrap();
        assert!(mkfs_args("ext3", &opts).is_err());
    }

    #[test]
    fn fs_types_default_and_reject_by_name() {
        assert_eq!(fs_type("").unwrap(), "ext4");
        assert_eq!(fs_type("XFS").unwrap(), "xfs");
        let err = fs_type("ntfs").unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.to_string().contains("\"ntfs\""));
    }
}
