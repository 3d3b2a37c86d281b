//! Filesystem types and the format options of the reference driver: the
//! StorageClass parameters `blockSize`, `inodeSize`, `bytesPerInode`,
//! `numberOfInodes`, `ext4BigAlloc`, `ext4ClusterSize` and
//! `ext4EncryptionSupport`, which the controller validates and copies into
//! the volume context and the node turns into mkfs arguments when it
//! formats a new volume.
//!
//! In the volume context the keys are written in lowercase (`blocksize`,
//! …), as the reference driver writes them, so that a volume created by
//! either driver is formatted the same by either; both spellings are read.
//!
//! One parser serves both sides ([`FormatOptions::parse`]): the controller
//! reads the options from the StorageClass, the node from the volume
//! context, with the same rules; only the wording of errors says where the
//! value came from ([`Origin`]).

use std::collections::HashMap;
use std::fmt;

use crate::error::{Error, Result};

/// A filesystem the driver formats and mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FsType {
    /// ext4, the default.
    Ext4,
    /// xfs.
    Xfs,
    /// ext3.
    Ext3,
    /// ext2.
    Ext2,
}

impl FsType {
    /// Every supported type, in the order messages list them.
    pub const ALL: [FsType; 4] = [FsType::Ext4, FsType::Xfs, FsType::Ext3, FsType::Ext2];
    /// When neither capability nor StorageClass names one (as the reference).
    pub const DEFAULT: FsType = FsType::Ext4;

    /// Parses a type name, case-insensitively; None when unsupported.
    pub fn parse(name: &str) -> Option<FsType> {
        let name = name.trim().to_ascii_lowercase();
        FsType::ALL.into_iter().find(|f| f.as_str() == name)
    }

    /// The type's name (`ext4`), also the suffix of its `mkfs.` program.
    pub fn as_str(self) -> &'static str {
        match self {
            FsType::Ext4 => "ext4",
            FsType::Xfs => "xfs",
            FsType::Ext3 => "ext3",
            FsType::Ext2 => "ext2",
        }
    }

    /// ext2, ext3 or ext4 (e2fsprogs).
    pub fn is_ext(self) -> bool {
        matches!(self, FsType::Ext2 | FsType::Ext3 | FsType::Ext4)
    }

    /// Whether a filesystem name (as blkid or mountinfo report it, any
    /// type) is ext2, ext3 or ext4.
    pub fn is_ext_name(name: &str) -> bool {
        FsType::parse(name).is_some_and(FsType::is_ext)
    }

    /// The supported names, for messages: `ext4, xfs, ext3 or ext2`.
    pub fn names() -> String {
        "ext4, xfs, ext3 or ext2".to_string()
    }
}

impl Default for FsType {
    fn default() -> Self {
        FsType::DEFAULT
    }
}

impl fmt::Display for FsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One format option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FormatKey {
    /// Block size in bytes (ext `-b`, xfs `-b size=`).
    BlockSize,
    /// Inode size in bytes (ext `-I`, xfs `-i size=`).
    InodeSize,
    /// Bytes per inode (ext `-i`).
    BytesPerInode,
    /// Number of inodes (ext `-N`).
    NumberOfInodes,
    /// ext4 bigalloc (`-O bigalloc`).
    Ext4BigAlloc,
    /// ext4 cluster size in bytes (`-C`), with bigalloc.
    Ext4ClusterSize,
    /// ext4 encryption support (`-O encrypt`, for fscrypt).
    Ext4EncryptionSupport,
}

impl FormatKey {
    /// Every option, in the order they are written.
    pub const ALL: [FormatKey; 7] = [
        FormatKey::BlockSize,
        FormatKey::InodeSize,
        FormatKey::BytesPerInode,
        FormatKey::NumberOfInodes,
        FormatKey::Ext4BigAlloc,
        FormatKey::Ext4ClusterSize,
        FormatKey::Ext4EncryptionSupport,
    ];

    /// The StorageClass parameter name (camelCase).
    pub fn name(self) -> &'static str {
        match self {
            FormatKey::BlockSize => "blockSize",
            FormatKey::InodeSize => "inodeSize",
            FormatKey::BytesPerInode => "bytesPerInode",
            FormatKey::NumberOfInodes => "numberOfInodes",
            FormatKey::Ext4BigAlloc => "ext4BigAlloc",
            FormatKey::Ext4ClusterSize => "ext4ClusterSize",
            FormatKey::Ext4EncryptionSupport => "ext4EncryptionSupport",
        }
    }

    /// The volume-context key: the name in lowercase, as the reference
    /// driver writes it.
    pub fn context_key(self) -> String {
        self.name().to_ascii_lowercase()
    }

    /// The option a key names, matched case-insensitively (StorageClass
    /// keys are; the reference writes the context keys in lowercase).
    pub fn from_name(key: &str) -> Option<FormatKey> {
        FormatKey::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(key))
    }

    /// Whether the option applies to `fs`.
    fn applies_to(self, fs: FsType) -> bool {
        match self {
            FormatKey::BlockSize | FormatKey::InodeSize => true,
            FormatKey::BytesPerInode | FormatKey::NumberOfInodes => fs.is_ext(),
            FormatKey::Ext4BigAlloc
            | FormatKey::Ext4ClusterSize
            | FormatKey::Ext4EncryptionSupport => fs == FsType::Ext4,
        }
    }
}

/// Where option values come from, for the wording of errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// StorageClass parameters (CreateVolume).
    Parameter,
    /// The volume context (NodeStageVolume).
    Context,
}

impl Origin {
    /// `parameter blockSize: "x"` or `volume context blockSize="x"`.
    fn value(self, key: FormatKey, value: &str) -> String {
        match self {
            Origin::Parameter => format!("parameter {}: {value:?}", key.name()),
            Origin::Context => format!("volume context {}={value:?}", key.name()),
        }
    }

    /// `parameter blockSize` or `volume context blockSize`.
    fn key(self, key: FormatKey) -> String {
        match self {
            Origin::Parameter => format!("parameter {}", key.name()),
            Origin::Context => format!("volume context {}", key.name()),
        }
    }
}

/// Validated format options; all optional.
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
    /// `ext4EncryptionSupport`.
    pub encryption: bool,
}

/// Parses a boolean the way Go's strconv.ParseBool does (the reference
/// driver's users write "true", "True", "1", …).
pub fn parse_go_bool(value: &str) -> Option<bool> {
    match value.trim() {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

impl FormatOptions {
    /// Parses and checks `values` for a filesystem of type `fs`: numbers
    /// positive and in the ranges mkfs accepts, sizes powers of two, each
    /// option applicable to `fs`, a cluster size only with bigalloc. Empty
    /// values count as absent.
    pub fn parse<'a>(
        values: impl IntoIterator<Item = (FormatKey, &'a str)>,
        fs: FsType,
        origin: Origin,
    ) -> Result<FormatOptions> {
        let mut opts = FormatOptions::default();
        let mut given: Vec<(FormatKey, &str)> = values
            .into_iter()
            .map(|(k, v)| (k, v.trim()))
            .filter(|(_, v)| !v.is_empty())
            .collect();
        given.sort();
        for (key, value) in given {
            if !key.applies_to(fs) {
                return Err(Error::InvalidArgument(format!(
                    "{} cannot be used with fstype {fs}",
                    origin.key(key)
                )));
            }
            let number = || -> Result<u64> {
                value.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "{} is not a positive integer",
                        origin.value(key, value)
                    ))
                })
            };
            let power_of_two = |min: u64, max: u64| -> Result<u64> {
                let n = number()?;
                if n < min || n > max || !n.is_power_of_two() {
                    return Err(Error::InvalidArgument(format!(
                        "{}: {n} must be a power of two between {min} and {max}",
                        origin.key(key)
                    )));
                }
                Ok(n)
            };
            match key {
                FormatKey::BlockSize if fs.is_ext() => {
                    opts.block_size = Some(power_of_two(1024, 65536)?)
                }
                FormatKey::BlockSize => opts.block_size = Some(power_of_two(512, 65536)?),
                FormatKey::InodeSize if fs.is_ext() => {
                    opts.inode_size = Some(power_of_two(128, 65536)?)
                }
                FormatKey::InodeSize => opts.inode_size = Some(power_of_two(256, 2048)?),
                FormatKey::BytesPerInode => {
                    let n = number()?;
                    if !(1024..=67_108_864).contains(&n) {
                        return Err(Error::InvalidArgument(format!(
                            "{}: {n} must be between 1024 and 67108864",
                            origin.key(key)
                        )));
                    }
                    opts.bytes_per_inode = Some(n);
                }
                FormatKey::NumberOfInodes => opts.number_of_inodes = Some(number()?),
                FormatKey::Ext4BigAlloc => {
                    opts.big_alloc = parse_go_bool(value).ok_or_else(|| {
                        Error::InvalidArgument(format!(
                            "{} is not a boolean (true or false)",
                            origin.value(key, value)
                        ))
                    })?
                }
                FormatKey::Ext4ClusterSize => {
                    opts.cluster_size = Some(power_of_two(1024, 1 << 29)?)
                }
                FormatKey::Ext4EncryptionSupport => {
                    opts.encryption = parse_go_bool(value).ok_or_else(|| {
                        Error::InvalidArgument(format!(
                            "{} is not a boolean (true or false)",
                            origin.value(key, value)
                        ))
                    })?
                }
            }
        }
        if opts.cluster_size.is_some() && !opts.big_alloc {
            return Err(Error::InvalidArgument(format!(
                "{} needs ext4BigAlloc=true",
                origin.key(FormatKey::Ext4ClusterSize)
            )));
        }
        Ok(opts)
    }

    /// Reads the options of a volume context for a filesystem of type
    /// `fs`; keys that are not format options are ignored (the context
    /// carries more than formatting needs).
    pub fn from_context(context: &HashMap<String, String>, fs: FsType) -> Result<FormatOptions> {
        let values = context
            .iter()
            .filter_map(|(k, v)| FormatKey::from_name(k).map(|key| (key, v.as_str())));
        FormatOptions::parse(values, fs, Origin::Context)
    }

    /// The options as volume-context entries (lowercase keys), in
    /// [`FormatKey::ALL`] order.
    pub fn to_context(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for key in FormatKey::ALL {
            let value = match key {
                FormatKey::BlockSize => self.block_size.map(|n| n.to_string()),
                FormatKey::InodeSize => self.inode_size.map(|n| n.to_string()),
                FormatKey::BytesPerInode => self.bytes_per_inode.map(|n| n.to_string()),
                FormatKey::NumberOfInodes => self.number_of_inodes.map(|n| n.to_string()),
                FormatKey::Ext4BigAlloc => self.big_alloc.then(|| "true".to_string()),
                FormatKey::Ext4ClusterSize => self.cluster_size.map(|n| n.to_string()),
                FormatKey::Ext4EncryptionSupport => self.encryption.then(|| "true".to_string()),
            };
            if let Some(v) = value {
                out.push((key.context_key(), v));
            }
        }
        out
    }

    /// Whether any option was given (they only matter for a fresh format).
    pub fn is_empty(&self) -> bool {
        *self == FormatOptions::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)], fs: FsType, origin: Origin) -> Result<FormatOptions> {
        FormatOptions::parse(
            pairs
                .iter()
                .map(|(k, v)| (FormatKey::from_name(k).expect("a format key"), *v)),
            fs,
            origin,
        )
    }

    #[test]
    fn fs_types_parse_case_insensitively() {
        assert_eq!(FsType::parse(" XFS "), Some(FsType::Xfs));
        assert_eq!(FsType::parse("ntfs"), None);
        assert!(FsType::Ext3.is_ext() && !FsType::Xfs.is_ext());
        assert_eq!(FsType::DEFAULT.to_string(), "ext4");
    }

    #[test]
    fn one_rule_set_for_both_origins() {
        let ok = &[
            ("blockSize", "4096"),
            ("inodeSize", "512"),
            ("ext4BigAlloc", "True"),
            ("ext4ClusterSize", "65536"),
        ];
        for origin in [Origin::Parameter, Origin::Context] {
            let opts = parse(ok, FsType::Ext4, origin).unwrap();
            assert_eq!(
                (opts.block_size, opts.big_alloc, opts.cluster_size),
                (Some(4096), true, Some(65536))
            );
        }
        let e = parse(&[("blockSize", "3000")], FsType::Ext4, Origin::Parameter).unwrap_err();
        assert!(
            e.to_string().contains("parameter blockSize") && e.to_string().contains("power of two")
        );
        let e = parse(&[("inodeSize", "big")], FsType::Ext4, Origin::Context).unwrap_err();
        assert!(e.to_string().contains("inodeSize=\"big\""), "{e}");
    }

    #[test]
    fn options_must_fit_the_filesystem() {
        let e = parse(&[("bytesPerInode", "4096")], FsType::Xfs, Origin::Parameter).unwrap_err();
        assert!(e.to_string().contains("fstype xfs"), "{e}");
        let e = parse(&[("ext4BigAlloc", "true")], FsType::Ext3, Origin::Context).unwrap_err();
        assert!(e.to_string().contains("fstype ext3"), "{e}");
        let e = parse(
            &[("ext4ClusterSize", "65536")],
            FsType::Ext4,
            Origin::Context,
        )
        .unwrap_err();
        assert!(e.to_string().contains("ext4BigAlloc=true"), "{e}");
        assert!(
            parse(
                &[("blockSize", "512"), ("inodeSize", "1024")],
                FsType::Xfs,
                Origin::Context
            )
            .is_ok()
        );
        let e = parse(&[("ext4BigAlloc", "yes")], FsType::Ext4, Origin::Context).unwrap_err();
        assert!(e.to_string().contains("\"yes\""), "{e}");
    }

    #[test]
    fn context_round_trip_ignores_other_keys() {
        let opts = parse(
            &[("bytesPerInode", "16384"), ("ext4BigAlloc", "1")],
            FsType::Ext4,
            Origin::Parameter,
        )
        .unwrap();
        let mut context: HashMap<String, String> = opts.to_context().into_iter().collect();
        context.insert("type".into(), "gp3".into());
        assert_eq!(
            FormatOptions::from_context(&context, FsType::Ext4).unwrap(),
            opts
        );
        assert!(FormatOptions::default().is_empty());
    }
}
