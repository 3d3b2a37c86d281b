//! VolumeSnapshotClass parameters: fast snapshot restore zones, snapshot
//! locks and tags. Unknown keys are refused naming them.

use std::collections::HashMap;

use super::params::parse_int;
use super::tags::{self, SnapshotMeta};
use crate::cloud::{LockMode, SnapshotLock};
use crate::error::{Error, Result};

/// Parsed VolumeSnapshotClass parameters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SnapshotParams {
    /// Zones to enable fast snapshot restore in.
    pub fsr_zones: Vec<String>,
    /// Lock to apply, if any.
    pub lock: Option<SnapshotLock>,
    /// `tagSpecification…` parameters, (parameter, `key=value` template).
    pub tag_specs: Vec<(String, String)>,
    /// The VolumeSnapshot metadata of the request.
    pub meta: SnapshotMeta,
}

impl SnapshotParams {
    /// Parses the parameters of a CreateSnapshot request.
    pub fn parse(parameters: &HashMap<String, String>) -> Result<Self> {
        let mut p = SnapshotParams::default();
        let mut lock = LockSpec::default();
        let mut lock_keys = Vec::new();
        let mut keys: Vec<_> = parameters.iter().collect();
        keys.sort();
        for (key, value) in keys {
            let lower = key.to_ascii_lowercase();
            match lower.as_str() {
                "fastsnapshotrestoreavailabilityzones" => {
                    p.fsr_zones = value
                        .split(',')
                        .map(str::trim)
                        .filter(|z| !z.is_empty())
                        .map(String::from)
                        .collect();
                }
                "lockmode" => {
                    lock.mode = Some(value.trim().to_string());
                    lock_keys.push(key.clone());
                }
                "lockduration" => {
                    lock.duration_days = Some(parse_int(key, value)? as i32);
                    lock_keys.push(key.clone());
                }
                "lockexpirationdate" => {
                    lock.expiration_date = Some(value.trim().to_string());
                    lock_keys.push(key.clone());
                }
                "lockcooloffperiod" => {
                    lock.cool_off_hours = Some(parse_int(key, value)? as i32);
                    lock_keys.push(key.clone());
                }
                "outpostarn" => return Err(super::params::outposts(key)),
                k if p.meta.take(k, value) => {}
                _ if tags::is_tag_spec_key(key) => p.tag_specs.push((key.clone(), value.clone())),
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "unknown VolumeSnapshotClass parameter {key:?} (value {value:?})"
                    )));
                }
            }
        }
        if !lock_keys.is_empty() {
            p.lock = Some(validate_lock(lock, &lock_keys)?);
        }
        Ok(p)
    }
}

/// The lock parameters as given, before they are checked.
#[derive(Debug, Default)]
struct LockSpec {
    mode: Option<String>,
    duration_days: Option<i32>,
    expiration_date: Option<String>,
    cool_off_hours: Option<i32>,
}

fn validate_lock(spec: LockSpec, keys: &[String]) -> Result<SnapshotLock> {
    let given = spec.mode.unwrap_or_default();
    let mode = LockMode::parse(&given).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "parameter lockMode: {:?} must be governance or compliance (given with {})",
            given.to_ascii_lowercase(),
            keys.join(", ")
        ))
    })?;
    let lock = SnapshotLock {
        mode,
        duration_days: spec.duration_days,
        expiration_date: spec.expiration_date,
        cool_off_hours: spec.cool_off_hours,
    };
    match (&lock.duration_days, &lock.expiration_date) {
        (Some(_), Some(_)) => {
            return Err(Error::InvalidArgument(
                "parameters lockDuration and lockExpirationDate are mutually exclusive".into(),
            ));
        }
        (None, None) => {
            return Err(Error::InvalidArgument(
                "parameter lockMode needs lockDuration (days) or lockExpirationDate".into(),
            ));
        }
        _ => {}
    }
    if let Some(days) = lock.duration_days
        && !(1..=36500).contains(&days)
    {
        return Err(Error::InvalidArgument(format!(
            "parameter lockDuration: {days} days is outside EC2's 1..=36500"
        )));
    }
    if lock.cool_off_hours.is_some() && lock.mode != LockMode::Compliance {
        return Err(Error::InvalidArgument(
            "parameter lockCoolOffPeriod only applies to lockMode compliance".into(),
        ));
    }
    if let Some(hours) = lock.cool_off_hours
        && !(1..=72).contains(&hours)
    {
        return Err(Error::InvalidArgument(format!(
            "parameter lockCoolOffPeriod: {hours} hours is outside EC2's 1..=72"
        )));
    }
    Ok(lock)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<SnapshotParams> {
        SnapshotParams::parse(
            &pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn parses_fsr_locks_and_tags() {
        let p = parse(&[
            (
                "fastSnapshotRestoreAvailabilityZones",
                "us-east-1a, us-east-1b",
            ),
            ("lockMode", "Governance"),
            ("lockDuration", "7"),
            ("tagSpecification_1", "snap={{ .VolumeSnapshotName }}"),
            ("csi.storage.k8s.io/volumesnapshot/name", "nightly"),
        ])
        .unwrap();
        assert_eq!(p.fsr_zones, vec!["us-east-1a", "us-east-1b"]);
        assert_eq!(p.lock.as_ref().unwrap().mode, LockMode::Governance);
        assert_eq!(
            p.tag_specs,
            vec![(
                "tagSpecification_1".to_string(),
                "snap={{ .VolumeSnapshotName }}".to_string()
            )]
        );
        assert_eq!(p.meta.name.as_deref(), Some("nightly"));
    }

    #[test]
    fn refuses_bad_keys_and_locks() {
        assert!(
            parse(&[("fsr", "x")])
                .unwrap_err()
                .to_string()
                .contains("\"fsr\"")
        );
        assert!(parse(&[("lockMode", "strict"), ("lockDuration", "1")]).is_err());
        assert!(parse(&[("lockMode", "governance")]).is_err());
        assert!(
            parse(&[("lockDuration", "1")])
                .unwrap_err()
                .to_string()
                .contains("lockMode")
        );
        assert!(
            parse(&[
                ("lockMode", "governance"),
                ("lockDuration", "1"),
                ("lockCoolOffPeriod", "2")
            ])
            .is_err()
        );
        assert!(
            parse(&[
                ("lockMode", "compliance"),
                ("lockDuration", "1"),
                ("lockCoolOffPeriod", "2")
            ])
            .is_ok()
        );
    }
}
