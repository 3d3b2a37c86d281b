//! How many EBS volumes the CO may attach to this node (NodeGetInfo's
//! max_volumes_per_node), with the reference driver's arithmetic over the
//! instance-type table in [`crate::contract::attach_limits`]:
//!
//! - `--volume-attach-limit` replaces the whole computation;
//! - otherwise the type's attachments (root included, counted with one
//!   network interface) minus the reserved attachments — the root volume
//!   and the other boot-time EBS mappings, or `--reserved-volume-attachments`
//!   — and, on shared-limit types, one more per network interface beyond the
//!   first;
//! - never below 1: Kubernetes reads 0 as "no limit".
//!
//! A type the table does not list gets the default Nitro limit (27 shared)
//! with a note naming the flag that overrides it (logged at info: the table
//! lists only the exceptions, so most Nitro types are absent).

use crate::contract::attach_limits::{LimitKind, facts_for};

/// What the volume limit is computed from.
#[derive(Debug, Clone, Default)]
pub struct LimitInputs<'a> {
    /// The instance type.
    pub instance_type: &'a str,
    /// Attached network interfaces (1 when unknown).
    pub enis: u32,
    /// EBS block-device mappings besides the root (IMDS or the Node).
    pub extra_mappings: u32,
    /// `--volume-attach-limit`.
    pub volume_attach_limit: Option<u32>,
    /// `--reserved-volume-attachments`.
    pub reserved_volume_attachments: Option<u32>,
}

/// max_volumes_per_node, and a warning to log when the type is unknown.
pub fn max_volumes(inputs: &LimitInputs<'_>) -> (u32, Option<String>) {
    if let Some(limit) = inputs.volume_attach_limit {
        return (limit, None);
    }
    let (facts, warning) = facts_for(inputs.instance_type);
    let reserved = inputs
        .reserved_volume_attachments
        .unwrap_or(inputs.extra_mappings + 1);
    let mut available = i64::from(facts.max_attachments) - i64::from(reserved);
    if facts.kind == LimitKind::Shared {
        available -= i64::from(inputs.enis.max(1)) - 1;
    }
    (available.clamp(1, i64::from(u32::MAX)) as u32, warning)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::attach_limits;

    fn limit(instance_type: &str, enis: u32) -> u32 {
        max_volumes(&LimitInputs {
            instance_type,
            enis,
            ..LimitInputs::default()
        })
        .0
    }

    #[test]
    fn shared_types_lose_a_slot_per_extra_eni_and_the_root() {
        assert_eq!(limit("m5.large", 1), 26);
        assert_eq!(limit("m6i.xlarge", 2), 25);
        assert_eq!(limit("c5d.large", 1), 25);
        assert_eq!(limit("t3.medium", 3), 24);
        assert_eq!(limit("a1.metal", 1), 30);
    }

    #[test]
    fn dedicated_and_xen_types_ignore_enis() {
        assert_eq!(limit("m7i.large", 4), 31);
        assert_eq!(limit("m7i.48xlarge", 4), 127);
        assert_eq!(limit("p5.48xlarge", 1), 63);
        assert_eq!(limit("m4.large", 2), 38);
        assert_eq!(limit("t2.micro", 1), 38);
    }

    #[test]
    fn every_type_in_the_table_reports_its_real_slots() {
        // With one ENI and only the root volume, the answer is the
        // instance's EBS slots minus the root — for every known type.
        for (name, facts) in attach_limits::known_types() {
            let (n, warning) = max_volumes(&LimitInputs {
                instance_type: name,
                enis: 1,
                ..LimitInputs::default()
            });
            assert!(warning.is_none(), "{name}");
            assert_eq!(n, facts.max_attachments.saturating_sub(1).max(1), "{name}");
        }
    }

    #[test]
    fn flags_override_and_unknown_types_warn() {
        let (n, warning) = max_volumes(&LimitInputs {
            instance_type: "zz9.huge",
            enis: 1,
            ..LimitInputs::default()
        });
        assert_eq!(n, attach_limits::DEFAULT_FACTS.max_attachments - 1);
        let warning = warning.unwrap();
        assert!(warning.contains("zz9.huge") && warning.contains("--volume-attach-limit"));
        let inputs = LimitInputs {
            instance_type: "m5.large",
            enis: 1,
            extra_mappings: 2,
            ..LimitInputs::default()
        };
        assert_eq!(max_volumes(&inputs).0, 24);
        let reserved = LimitInputs {
            reserved_volume_attachments: Some(0),
            ..inputs.clone()
        };
        assert_eq!(max_volumes(&reserved).0, 27);
        let fixed = LimitInputs {
            volume_attach_limit: Some(5),
            ..inputs
        };
        assert_eq!(max_volumes(&fixed), (5, None));
        let tiny = LimitInputs {
            instance_type: "m5.large",
            enis: 30,
            ..LimitInputs::default()
        };
        assert_eq!(
            max_volumes(&tiny).0,
            1,
            "never 0: Kubernetes reads 0 as unlimited"
        );
    }
}
