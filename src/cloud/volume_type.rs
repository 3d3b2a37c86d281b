//! EBS volume types and the limits EC2 enforces for each (AWS EBS user
//! guide, "Amazon EBS volume types"; gp3 as raised in 2025 to 64 TiB,
//! 80,000 IOPS and 2,000 MiB/s).

use std::fmt;

/// An EBS volume type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum VolumeType {
    /// General purpose SSD, burst credits.
    Gp2,
    /// General purpose SSD, provisioned IOPS and throughput (the default).
    Gp3,
    /// Provisioned IOPS SSD.
    Io1,
    /// Provisioned IOPS SSD, Block Express; multi-attach.
    Io2,
    /// Throughput-optimised HDD.
    St1,
    /// Cold HDD.
    Sc1,
    /// Previous-generation magnetic.
    Standard,
    /// A type EC2 reported that this driver does not know.
    Other(String),
}

/// What EC2 allows for a volume type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypeLimits {
    /// Smallest size, GiB.
    pub min_gib: i64,
    /// Largest size, GiB.
    pub max_gib: i64,
    /// For types with provisioned IOPS: minimum, maximum, and maximum per
    /// GiB of size.
    pub iops: Option<IopsLimits>,
    /// For types with provisioned throughput (gp3): MiB/s range.
    pub throughput: Option<(i64, i64)>,
}

/// The IOPS a type can be provisioned with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IopsLimits {
    /// Minimum (gp3: the free baseline).
    pub min: i64,
    /// Maximum.
    pub max: i64,
    /// Maximum per GiB of volume size.
    pub per_gib: i64,
}

impl VolumeType {
    /// The types a StorageClass may name, in the order messages list them.
    pub const KNOWN: [VolumeType; 7] = [
        VolumeType::Gp3,
        VolumeType::Gp2,
        VolumeType::Io1,
        VolumeType::Io2,
        VolumeType::St1,
        VolumeType::Sc1,
        VolumeType::Standard,
    ];

    /// A type from user input, case-insensitively; None when unknown.
    pub fn parse(name: &str) -> Option<VolumeType> {
        let name = name.trim().to_ascii_lowercase();
        VolumeType::KNOWN.into_iter().find(|t| t.as_str() == name)
    }

    /// A type as EC2 reported it; an unknown one is kept as [`VolumeType::Other`].
    pub fn from_ec2(name: &str) -> VolumeType {
        VolumeType::parse(name).unwrap_or_else(|| VolumeType::Other(name.to_string()))
    }

    /// EC2's name of the type.
    pub fn as_str(&self) -> &str {
        match self {
            VolumeType::Gp2 => "gp2",
            VolumeType::Gp3 => "gp3",
            VolumeType::Io1 => "io1",
            VolumeType::Io2 => "io2",
            VolumeType::St1 => "st1",
            VolumeType::Sc1 => "sc1",
            VolumeType::Standard => "standard",
            VolumeType::Other(name) => name,
        }
    }

    /// The known names, for messages.
    pub fn names() -> String {
        VolumeType::KNOWN
            .iter()
            .map(VolumeType::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// EC2's limits for the type; None for an unknown type.
    pub fn limits(&self) -> Option<TypeLimits> {
        let l = |min_gib, max_gib, iops: Option<(i64, i64, i64)>, throughput| {
            Some(TypeLimits {
                min_gib,
                max_gib,
                iops: iops.map(|(min, max, per_gib)| IopsLimits { min, max, per_gib }),
                throughput,
            })
        };
        match self {
            VolumeType::Gp2 => l(1, 16384, None, None),
            VolumeType::Gp3 => l(1, 65536, Some((3000, 80000, 500)), Some((125, 2000))),
            VolumeType::Io1 => l(4, 16384, Some((100, 64000, 50)), None),
            VolumeType::Io2 => l(4, 65536, Some((100, 256000, 1000)), None),
            VolumeType::St1 | VolumeType::Sc1 => l(125, 16384, None, None),
            VolumeType::Standard => l(1, 1024, None, None),
            VolumeType::Other(_) => None,
        }
    }

    /// Whether volumes of the type can be multi-attached (io2 only here:
    /// io1 multi-attach is limited to a few old regions).
    pub fn multi_attach(&self) -> bool {
        *self == VolumeType::Io2
    }
}

impl Default for VolumeType {
    /// gp3, the reference driver's default.
    fn default() -> Self {
        VolumeType::Gp3
    }
}

impl fmt::Display for VolumeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_types_are_kept() {
        for t in VolumeType::KNOWN {
            assert_eq!(VolumeType::parse(t.as_str()), Some(t.clone()));
            assert!(t.limits().is_some(), "{t}");
        }
        assert_eq!(VolumeType::parse(" GP3 "), Some(VolumeType::Gp3));
        assert_eq!(VolumeType::parse("gp9"), None);
        let other = VolumeType::from_ec2("gp9");
        assert_eq!((other.as_str(), other.limits()), ("gp9", None));
        assert!(VolumeType::Io2.multi_attach() && !VolumeType::Gp3.multi_attach());
    }
}
