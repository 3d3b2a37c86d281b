//! Device names and EBS cards for attachments, per instance.
//!
//! EC2 needs a free device name on the instance for every AttachVolume. A
//! name is free when the instance's block device mappings don't list it, no
//! attach of ours is using it right now, and EC2 has not recently told us it
//! is in use (a mapping can lag behind, and a detached name can linger).
//!
//! Instances with several EBS cards take `EbsCardIndex` on AttachVolume; the
//! reference driver spreads volumes over the cards, choosing the card with
//! the fewest volumes (mapped or being attached), the lowest index on a tie.
//! The same rule is kept here.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a name EC2 called "in use" is avoided.
const COOLDOWN: Duration = Duration::from_secs(300);

/// Every name the allocator hands out, in order: `/dev/xvdaa`…`/dev/xvdcz`,
/// `/dev/xvdda`…`/dev/xvddx`, then `/dev/xvdb`…`/dev/xvdz` — 127 names, one
/// per attachment of the largest instances (128 with the root). These are
/// the names EC2 accepts for Linux EBS volumes; the two-letter ones come
/// first because single letters clash with `sd*` names on Xen instances,
/// which never get that far (39 attachments). None is the root device
/// (`/dev/xvda`, `/dev/sda1`).
pub fn candidates() -> Vec<String> {
    let mut names = Vec::new();
    for first in ['a', 'b', 'c', 'd'] {
        let last = if first == 'd' { 'x' } else { 'z' };
        for second in 'a'..=last {
            names.push(format!("/dev/xvd{first}{second}"));
        }
    }
    for letter in 'b'..='z' {
        names.push(format!("/dev/xvd{letter}"));
    }
    names
}

/// Both spellings of a name: EC2 reports `/dev/sdf` for what Linux calls
/// `/dev/xvdf`, so a mapping under either blocks the other.
fn aliases(name: &str) -> [String; 2] {
    if let Some(rest) = name.strip_prefix("/dev/xvd") {
        [name.to_string(), format!("/dev/sd{rest}")]
    } else if let Some(rest) = name.strip_prefix("/dev/sd") {
        [name.to_string(), format!("/dev/xvd{rest}")]
    } else {
        [name.to_string(), name.to_string()]
    }
}

/// What an instance already has mapped, as far as placement goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mapped {
    /// Device names of its block device mappings.
    pub names: Vec<String>,
    /// Volumes on each EBS card (index → count), from those mappings.
    pub per_card: HashMap<u32, u32>,
}

#[derive(Default)]
struct NodeNames {
    /// Name → card of attaches of ours in progress.
    in_flight: HashMap<String, Option<u32>>,
    cooling: HashMap<String, Instant>,
}

/// Hands out free device names (and cards), concurrency-safe.
#[derive(Default)]
pub struct DeviceAllocator {
    nodes: Mutex<HashMap<String, NodeNames>>,
}

/// A reserved name; released when dropped.
pub struct Reservation<'a> {
    allocator: &'a DeviceAllocator,
    instance: String,
    /// The reserved device name.
    pub name: String,
    /// The EBS card to attach on (`None` on single-card instances, where
    /// EC2 must not be given an index).
    pub card: Option<u32>,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut nodes = self.allocator.lock();
        if let Some(node) = nodes.get_mut(&self.instance) {
            node.in_flight.remove(&self.name);
        }
    }
}

/// The card with the fewest volumes, the lowest index on a tie; None for a
/// single-card instance.
fn least_used_card(cards: u32, counts: &HashMap<u32, u32>) -> Option<u32> {
    (cards > 1).then(|| {
        (0..cards)
            .min_by_key(|c| (counts.get(c).copied().unwrap_or(0), *c))
            .unwrap_or(0)
    })
}

impl DeviceAllocator {
    /// The allocator's state (poisoning ignored, see [`crate::sync`]).
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, NodeNames>> {
        crate::sync::lock(&self.nodes)
    }

    /// Reserves a free name on `instance`, given what it has mapped and its
    /// number of EBS cards. None when every name is taken.
    pub fn reserve(&self, instance: &str, mapped: &Mapped, cards: u32) -> Option<Reservation<'_>> {
        let used: HashSet<String> = mapped.names.iter().flat_map(|m| aliases(m)).collect();
        let mut nodes = self.lock();
        let node = nodes.entry(instance.to_string()).or_default();
        let now = Instant::now();
        node.cooling
            .retain(|_, since| now.duration_since(*since) < COOLDOWN);
        let name = candidates().into_iter().find(|n| {
            !used.contains(n) && !node.in_flight.contains_key(n) && !node.cooling.contains_key(n)
        })?;
        let mut counts = mapped.per_card.clone();
        for card in node.in_flight.values().flatten() {
            *counts.entry(*card).or_default() += 1;
        }
        let card = least_used_card(cards, &counts);
        node.in_flight.insert(name.clone(), card);
        Some(Reservation {
            allocator: self,
            instance: instance.to_string(),
            name,
            card,
        })
    }

    /// Avoids `name` on `instance` for a while: EC2 said it is in use.
    pub fn cool_down(&self, instance: &str, name: &str) {
        self.lock()
            .entry(instance.to_string())
            .or_default()
            .cooling
            .insert(name.to_string(), Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapped(names: &[&str]) -> Mapped {
        Mapped {
            names: names.iter().map(|s| s.to_string()).collect(),
            per_card: HashMap::new(),
        }
    }

    #[test]
    fn candidate_names_are_what_ec2_accepts_one_per_attachment() {
        let names = candidates();
        assert_eq!(names.len(), 127, "128-attachment instances less the root");
        assert_eq!(names[0], "/dev/xvdaa");
        assert_eq!(names[101], "/dev/xvddx");
        assert_eq!(names.last().unwrap(), "/dev/xvdz");
        assert!(!names.contains(&"/dev/xvda".to_string()));
        let unique: HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len());
    }

    #[test]
    fn skips_mapped_reserved_and_cooling_names() {
        let alloc = DeviceAllocator::default();
        let m = mapped(&["/dev/xvda", "/dev/sdaa"]);
        let a = alloc.reserve("i-1", &m, 1).unwrap();
        assert_eq!((a.name.as_str(), a.card), ("/dev/xvdab", None)); // xvdaa is mapped as sdaa
        let b = alloc.reserve("i-1", &m, 1).unwrap();
        assert_eq!(b.name, "/dev/xvdac");
        alloc.cool_down("i-1", "/dev/xvdad");
        let c = alloc.reserve("i-1", &m, 1).unwrap();
        assert_eq!(c.name, "/dev/xvdae");
        // another instance has its own names
        assert_eq!(
            alloc.reserve("i-2", &Mapped::default(), 1).unwrap().name,
            "/dev/xvdaa"
        );
        drop(a);
        assert_eq!(alloc.reserve("i-1", &m, 1).unwrap().name, "/dev/xvdab");
    }

    #[test]
    fn cards_are_filled_least_used_first_counting_attaches_in_flight() {
        let alloc = DeviceAllocator::default();
        let mut m = mapped(&["/dev/xvda"]);
        m.per_card.insert(0, 1); // the root is on card 0
        let a = alloc.reserve("i-1", &m, 2).unwrap();
        assert_eq!(a.card, Some(1));
        let b = alloc.reserve("i-1", &m, 2).unwrap();
        assert_eq!(b.card, Some(0), "tie 1:1 goes to the lower index");
        let c = alloc.reserve("i-1", &m, 2).unwrap();
        assert_eq!(c.card, Some(1));
        drop((a, b, c));
        m.per_card.insert(1, 5);
        assert_eq!(alloc.reserve("i-1", &m, 2).unwrap().card, Some(0));
    }

    #[test]
    fn none_when_full() {
        let alloc = DeviceAllocator::default();
        let all = candidates();
        let m = Mapped {
            names: all,
            per_card: HashMap::new(),
        };
        assert!(alloc.reserve("i-1", &m, 1).is_none());
    }
}
