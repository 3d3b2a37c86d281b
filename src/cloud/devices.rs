//! Device names for attachments, per instance.
//!
//! EC2 needs a free device name on the instance for every AttachVolume. A
//! name is free when the instance's block device mappings don't list it, no
//! attach of ours is using it right now, and EC2 has not recently told us it
//! is in use (a mapping can lag behind, and a detached name can linger).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a name EC2 called "in use" is avoided.
const COOLDOWN: Duration = Duration::from_secs(300);

/// Every name the allocator hands out, in order: `/dev/xvdaa`…`/dev/xvdcz`
/// then `/dev/xvdda`…`/dev/xvddx` — the two-letter names EC2 accepts for
/// Linux, which never clash with the root device (`/dev/xvda`, `/dev/sda1`).
pub fn candidates() -> Vec<String> {
    let mut names = Vec::new();
    for first in ['a', 'b', 'c', 'd'] {
        let last = if first == 'd' { 'x' } else { 'z' };
        for second in 'a'..=last {
            names.push(format!("/dev/xvd{first}{second}"));
        }
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

#[derive(Default)]
struct NodeNames {
    in_flight: HashSet<String>,
    cooling: HashMap<String, Instant>,
}

/// Hands out free device names, concurrency-safe.
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
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut nodes = self.allocator.nodes.lock().expect("allocator lock");
        if let Some(node) = nodes.get_mut(&self.instance) {
            node.in_flight.remove(&self.name);
        }
    }
}

impl DeviceAllocator {
    /// Reserves a free name on `instance`, given the names its mappings use.
    /// None when every name is taken.
    pub fn reserve(&self, instance: &str, mapped: &[String]) -> Option<Reservation<'_>> {
        let used: HashSet<String> = mapped.iter().flat_map(|m| aliases(m)).collect();
        let mut nodes = self.nodes.lock().expect("allocator lock");
        let node = nodes.entry(instance.to_string()).or_default();
        let now = Instant::now();
        node.cooling
            .retain(|_, since| now.duration_since(*since) < COOLDOWN);
        let name = candidates().into_iter().find(|n| {
            !used.contains(n) && !node.in_flight.contains(n) && !node.cooling.contains_key(n)
        })?;
        node.in_flight.insert(name.clone());
        Some(Reservation {
            allocator: self,
            instance: instance.to_string(),
            name,
        })
    }

    /// Avoids `name` on `instance` for a while: EC2 said it is in use.
    pub fn cool_down(&self, instance: &str, name: &str) {
        let mut nodes = self.nodes.lock().expect("allocator lock");
        nodes
            .entry(instance.to_string())
            .or_default()
            .cooling
            .insert(name.to_string(), Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidate_names_are_what_ec2_accepts() {
        let names = candidates();
        assert_eq!(names.len(), 26 * 3 + 24);
        assert_eq!(names[0], "/dev/xvdaa");
        assert_eq!(names.last().unwrap(), "/dev/xvddx");
        assert!(!names.contains(&"/dev/xvda".to_string()));
    }

    #[test]
    fn skips_mapped_reserved_and_cooling_names() {
        let alloc = DeviceAllocator::default();
        let mapped = vec!["/dev/xvda".to_string(), "/dev/sdaa".to_string()];
        let a = alloc.reserve("i-1", &mapped).unwrap();
        assert_eq!(a.name, "/dev/xvdab"); // xvdaa is mapped as sdaa
        let b = alloc.reserve("i-1", &mapped).unwrap();
        assert_eq!(b.name, "/dev/xvdac");
        alloc.cool_down("i-1", "/dev/xvdad");
        let c = alloc.reserve("i-1", &mapped).unwrap();
        assert_eq!(c.name, "/dev/xvdae");
        // another instance has its own names
        assert_eq!(alloc.reserve("i-2", &[]).unwrap().name, "/dev/xvdaa");
        drop(a);
        assert_eq!(alloc.reserve("i-1", &mapped).unwrap().name, "/dev/xvdab");
    }

    #[test]
    fn none_when_full() {
        let alloc = DeviceAllocator::default();
        let all = candidates();
        assert!(alloc.reserve("i-1", &all).is_none());
    }
}
