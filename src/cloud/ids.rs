//! EC2 ids as types: a `VolumeId` is not an `InstanceId`, and a string from
//! a CSI request becomes one only through [`VolumeId::parse`] (and its
//! siblings), once, at the edge. Ids EC2 hands back are trusted as they are
//! ([`VolumeId::from_ec2`]).

use std::fmt;

macro_rules! ec2_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// The prefix of every id of this kind.
            pub const PREFIX: &'static str = $prefix;

            /// The id in `text` when it has EC2's form (the prefix and hex
            /// digits); None otherwise — such a string cannot name one.
            pub fn parse(text: &str) -> Option<Self> {
                let hex = text.strip_prefix($prefix)?;
                (!hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit()))
                    .then(|| $name(text.to_string()))
            }

            /// An id as EC2 reported it (not checked: EC2 is the authority).
            pub fn from_ec2(text: impl Into<String>) -> Self {
                $name(text.into())
            }

            /// The id's text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

ec2_id!(
    /// An EBS volume id (`vol-0abc…`), also the CSI volume id.
    VolumeId,
    "vol-"
);
ec2_id!(
    /// An EC2 instance id (`i-0abc…`), also the CSI node id.
    InstanceId,
    "i-"
);
ec2_id!(
    /// An EBS snapshot id (`snap-0abc…`), also the CSI snapshot id.
    SnapshotId,
    "snap-"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ec2_shaped_strings_parse() {
        assert_eq!(
            VolumeId::parse("vol-0abc12").map(|v| v.to_string()),
            Some("vol-0abc12".to_string())
        );
        for bad in ["", "vol-", "vol-xyz", "fake-vol-id", "i-0abc", "VOL-0abc"] {
            assert!(VolumeId::parse(bad).is_none(), "{bad}");
        }
        assert!(InstanceId::parse("i-0123456789abcdef0").is_some());
        assert!(InstanceId::parse("vol-01").is_none());
        assert!(SnapshotId::parse("snap-01").is_some());
        assert!(SnapshotId::parse("snap-").is_none());
        assert_eq!(VolumeId::from_ec2("vol-1"), "vol-1");
    }
}
