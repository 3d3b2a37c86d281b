//! Zone placement from CSI accessibility requirements, and capacity ranges.

use std::collections::HashMap;

use crate::csi;
use crate::error::{Error, Result};

use crate::contract::{EBS_ZONE_KEY, WELL_KNOWN_ZONE_KEY};

const GIB: i64 = 1 << 30;
/// Size when the request gives no range (the reference driver's default).
pub const DEFAULT_SIZE_GIB: i64 = 100;

fn zone_of(segments: &HashMap<String, String>) -> Option<&str> {
    segments
        .get(WELL_KNOWN_ZONE_KEY)
        .or_else(|| segments.get(EBS_ZONE_KEY))
        .map(String::as_str)
        .filter(|z| !z.is_empty())
}

/// Zones the request allows, preferred first then requisite, without
/// duplicates; empty when the request does not constrain the zone.
pub fn requested_zones(req: Option<&csi::TopologyRequirement>) -> Vec<String> {
    let mut zones: Vec<String> = Vec::new();
    if let Some(req) = req {
        for topo in req.preferred.iter().chain(req.requisite.iter()) {
            if let Some(z) = zone_of(&topo.segments)
                && !zones.iter().any(|x| x == z)
            {
                zones.push(z.to_string());
            }
        }
    }
    zones
}

/// The zones of the requisite topologies only (what a clone, which stays in
/// its source's zone, must satisfy).
pub fn requisite_zones(req: Option<&csi::TopologyRequirement>) -> Vec<String> {
    req.map(|r| {
        r.requisite
            .iter()
            .filter_map(|t| zone_of(&t.segments).map(str::to_string))
            .collect()
    })
    .unwrap_or_default()
}

/// The topology reported on a volume in `zone`.
pub fn volume_topology(zone: &str) -> Vec<csi::Topology> {
    vec![csi::Topology {
        segments: HashMap::from([(WELL_KNOWN_ZONE_KEY.to_string(), zone.to_string())]),
    }]
}

/// Rounds bytes up to whole GiB.
pub fn round_up_gib(bytes: i64) -> i64 {
    (bytes + GIB - 1) / GIB
}

/// GiB to bytes.
pub fn gib_to_bytes(gib: i64) -> i64 {
    gib * GIB
}

/// The size to create for a capacity range, in GiB, given the smallest size
/// the source (snapshot or volume) needs.
pub fn size_for(range: Option<&csi::CapacityRange>, floor_gib: Option<i64>) -> Result<i64> {
    let (required, limit) = range.map_or((0, 0), |r| (r.required_bytes, r.limit_bytes));
    if required < 0 || limit < 0 {
        return Err(Error::InvalidArgument(format!(
            "capacity range must not be negative (required_bytes {required}, limit_bytes {limit})"
        )));
    }
    if limit > 0 && limit < GIB {
        return Err(Error::InvalidArgument(format!(
            "limit_bytes {limit} is below EBS's smallest size of 1 GiB"
        )));
    }
    if limit > 0 && required > limit {
        return Err(Error::InvalidArgument(format!(
            "required_bytes {required} exceeds limit_bytes {limit}"
        )));
    }
    let mut gib = if required > 0 {
        round_up_gib(required)
    } else if let Some(floor) = floor_gib {
        floor
    } else if limit > 0 {
        DEFAULT_SIZE_GIB.min(limit / GIB)
    } else {
        DEFAULT_SIZE_GIB
    };
    if let Some(floor) = floor_gib {
        if gib < floor {
            return Err(Error::InvalidArgument(format!(
                "requested size {gib} GiB is smaller than the source's {floor} GiB (a restore or clone is at least as big as its source)"
            )));
        }
        gib = gib.max(floor);
    }
    if limit > 0 && gib * GIB > limit {
        return Err(Error::OutOfRange(format!(
            "required_bytes {required} rounds up to {gib} GiB, above limit_bytes {limit}"
        )));
    }
    Ok(gib)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(required: i64, limit: i64) -> csi::CapacityRange {
        csi::CapacityRange {
            required_bytes: required,
            limit_bytes: limit,
        }
    }

    fn topo(key: &str, zone: &str) -> csi::Topology {
        csi::Topology {
            segments: HashMap::from([(key.to_string(), zone.to_string())]),
        }
    }

    #[test]
    fn preferred_then_requisite_both_keys() {
        let req = csi::TopologyRequirement {
            requisite: vec![
                topo(WELL_KNOWN_ZONE_KEY, "us-east-1a"),
                topo(EBS_ZONE_KEY, "us-east-1c"),
            ],
            preferred: vec![topo(EBS_ZONE_KEY, "us-east-1c"), topo("other", "x")],
        };
        assert_eq!(
            requested_zones(Some(&req)),
            vec!["us-east-1c", "us-east-1a"]
        );
        assert!(requested_zones(None).is_empty());
    }

    #[test]
    fn sizes() {
        assert_eq!(size_for(None, None).unwrap(), 100);
        assert_eq!(size_for(Some(&range(1, 0)), None).unwrap(), 1);
        assert_eq!(size_for(Some(&range(GIB + 1, 0)), None).unwrap(), 2);
        assert_eq!(size_for(Some(&range(0, 10 * GIB)), None).unwrap(), 10);
        assert_eq!(size_for(None, Some(8)).unwrap(), 8);
        assert!(
            size_for(Some(&range(GIB, GIB / 2)), None)
                .unwrap_err()
                .to_string()
                .contains("limit_bytes")
        );
        assert!(
            size_for(Some(&range(0, GIB / 2)), None)
                .unwrap_err()
                .to_string()
                .contains("1 GiB")
        );
        let e = size_for(Some(&range(GIB + 1, GIB + 2)), None).unwrap_err();
        assert_eq!(e.code(), tonic::Code::OutOfRange);
        let e = size_for(Some(&range(4 * GIB, 0)), Some(8)).unwrap_err();
        assert!(e.to_string().contains("source"), "{e}");
    }
}
