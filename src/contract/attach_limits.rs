//! EBS attachment facts per EC2 instance type, from the generated table
//! `attach_limits.tsv` next to this file.
//!
//! The table is the reference driver's EC2-derived data (its
//! `pkg/cloud/limits/volume_limits_table.go`, made from DescribeInstanceTypes,
//! with its overrides), converted by `deploy/tools/attach_limits.py`; its
//! header names the source version. The node reads it for NodeGetInfo, the
//! controller for EBS card placement and limit messages, and the EC2 emulator
//! in `tests/ec2sim` for the limits it enforces: one set of facts everywhere.

use std::collections::HashMap;
use std::sync::OnceLock;

/// The generated table (see the module docs).
const TABLE: &str = include_str!("attach_limits.tsv");

/// Whether an instance type's EBS limit is shared with network interfaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// Shared with ENIs (and counted with one ENI attached): every further
    /// ENI takes one EBS slot.
    Shared,
    /// EBS volumes only.
    Dedicated,
}

/// What an instance type allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttachFacts {
    /// EBS volumes, the root included, with one network interface.
    pub max_attachments: u32,
    /// Shared or dedicated.
    pub kind: LimitKind,
    /// EBS cards; attachments are spread over them with `EbsCardIndex`.
    pub cards: u32,
}

/// The facts assumed for a type the table does not list: the default
/// Nitro limit, which the table leaves out (27 shared, one card).
pub const DEFAULT_FACTS: AttachFacts = AttachFacts {
    max_attachments: 27,
    kind: LimitKind::Shared,
    cards: 1,
};

/// The source line of the table (`# Source: …`), for messages.
pub fn source() -> &'static str {
    TABLE
        .lines()
        .find_map(|l| l.strip_prefix("# Source:"))
        .map(str::trim)
        .unwrap_or("unknown")
}

fn table() -> &'static HashMap<&'static str, AttachFacts> {
    static PARSED: OnceLock<HashMap<&'static str, AttachFacts>> = OnceLock::new();
    PARSED.get_or_init(|| parse(TABLE).expect("the generated attach_limits.tsv is well-formed"))
}

/// Parses the table text; errors name the bad line.
pub fn parse(text: &str) -> Result<HashMap<&str, AttachFacts>, String> {
    let mut out = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let bad = || format!("attach_limits.tsv line {}: {line:?}", n + 1);
        let cols: Vec<&str> = line.split('\t').collect();
        let [name, max, kind, cards] = cols[..] else {
            return Err(bad());
        };
        let kind = match kind {
            "shared" => LimitKind::Shared,
            "dedicated" => LimitKind::Dedicated,
            _ => return Err(bad()),
        };
        let facts = AttachFacts {
            max_attachments: max.parse().map_err(|_| bad())?,
            kind,
            cards: cards.parse().ok().filter(|c| *c >= 1).ok_or_else(bad)?,
        };
        if out.insert(name, facts).is_some() {
            return Err(format!("{}: duplicate instance type", bad()));
        }
    }
    Ok(out)
}

/// The facts of `instance_type`, or None when the table does not list it
/// (then [`DEFAULT_FACTS`] apply).
pub fn lookup(instance_type: &str) -> Option<AttachFacts> {
    table().get(instance_type).copied()
}

/// The facts of `instance_type`, and a note when the table lacks it (most
/// Nitro types: the table lists only the exceptions to the default).
pub fn facts_for(instance_type: &str) -> (AttachFacts, Option<String>) {
    match lookup(instance_type) {
        Some(f) => (f, None),
        None => (
            DEFAULT_FACTS,
            Some(format!(
                "instance type {instance_type:?} is not among the exceptions of the \
                 attachment-limit table ({}): the default Nitro limit of {} shared \
                 attachments applies, as in the reference driver (set \
                 --volume-attach-limit if that is wrong)",
                source(),
                DEFAULT_FACTS.max_attachments
            )),
        ),
    }
}

/// Every instance type the table lists.
pub fn known_types() -> impl Iterator<Item = (&'static str, AttachFacts)> {
    table().iter().map(|(k, v)| (*k, *v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_parses_and_names_its_source() {
        assert!(table().len() > 1000, "{} types", table().len());
        assert!(source().contains("aws-ebs-csi-driver"), "{}", source());
    }

    #[test]
    fn reference_facts_carried_over() {
        // Values of the reference driver v1.64.0 table (see the TSV header).
        let f = |t| lookup(t).unwrap();
        assert_eq!(f("p5.48xlarge").max_attachments, 64);
        assert_eq!(f("p5.48xlarge").kind, LimitKind::Dedicated);
        assert_eq!(f("d3.8xlarge").max_attachments, 3);
        assert_eq!(f("g5.48xlarge").max_attachments, 9);
        assert_eq!(
            f("m4.large"),
            AttachFacts {
                max_attachments: 39,
                kind: LimitKind::Dedicated,
                cards: 1
            }
        );
        assert_eq!(f("c8gb.48xlarge").cards, 2);
        // Listed by the API as shared, overridden to dedicated.
        assert_eq!(f("i7i.metal-24xl").kind, LimitKind::Dedicated);
        assert!(
            lookup("m5.large").is_none(),
            "default-limit types are not listed"
        );
    }

    #[test]
    fn bad_lines_are_named() {
        assert!(parse("a.b\t1\tshared\t1\n").is_ok());
        let err = parse("# c\nx.y\t1\tweird\t1\n").unwrap_err();
        assert!(err.contains("line 2") && err.contains("weird"), "{err}");
        assert!(parse("x.y\t1\tshared\t0\n").is_err());
        assert!(parse("x.y\t1\tshared\n").is_err());
        assert!(
            parse("x.y\t1\tshared\t1\nx.y\t2\tshared\t1\n")
                .unwrap_err()
                .contains("duplicate")
        );
    }
}
