//! The controller's view of each instance's attachments, so that a
//! ControllerPublishVolume needs no DescribeInstances of its own.
//!
//! A publish needs to know of the node's instance its zone and type (fixed
//! while it exists) and which device names its block device mappings use
//! (changed by every attach and detach). Asking EC2 for every publish costs
//! a Describe call per attach even when coalesced (publishes to a node
//! arrive spread over seconds, one call each), which at hundreds of volumes
//! is most of the Describe budget. So the view read from EC2 is kept per
//! instance and kept current with what this controller does itself: an
//! accepted AttachVolume adds its device ([`InstanceViews::attached`]), a
//! completed detach removes the volume's ([`InstanceViews::detached`]).
//!
//! It is read from EC2 again:
//! - after [`TTL`];
//! - at once when EC2's answer says it is wrong: a device name in use
//!   (someone else attached there: [`InstanceViews::reread`]), or an
//!   attachment limit reached, the instance not found, or not in a state to
//!   attach ([`InstanceViews::invalidate`]: the next publish reads it);
//! - always for an instance EC2 does not know: absence is not kept.
//!
//! Reads are single-flight per instance: N publishes arriving at a cold or
//! expired view cost one call (and the [`Cloud`]'s coalescing merges reads
//! of different instances). Each read is a generation; callers that found
//! the same view wrong re-read it once between them, not once each.
//!
//! Device names are still reserved in the [`DeviceAllocator`], and
//! [`InstanceViews::reserve`] reserves against the current view under the
//! view's lock: a name one of our attaches has added is in the view before
//! that attach's reservation ends, so no two publishes pick the same name.
//! A read from EC2 can miss a change of ours made while it was on its way
//! (or just before: EC2's mappings lag a moment behind AttachVolume), so
//! our changes since shortly before a read started are replayed onto it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::cloud::devices::{DeviceAllocator, Reservation};
use crate::cloud::{BlockDevice, Cloud, CloudResult, Instance, InstanceId, VolumeId};

/// How long a view read from EC2 is used before it is read again.
///
/// Correctness does not rest on it: whatever others change that matters to
/// an attach (a device name they took, slots their volumes or network
/// interfaces fill, the instance gone) EC2 refuses the AttachVolume for,
/// and that refusal re-reads the view. The TTL bounds what no refusal
/// reveals: names others freed (unused until then) and the counts in
/// "node full" messages. 60 s keeps a node under steady publishing at one
/// DescribeInstances a minute, so even 300 busy nodes stay within the
/// 5 calls/s Describe budget before coalescing, while a stale view's cost
/// (one refused AttachVolume) stays rare; shorter would spend the budget
/// the waiters tick on, longer would keep freed names idle for longer.
pub const TTL: Duration = Duration::from_secs(60);

/// How far before a read started our own changes are replayed onto it:
/// EC2's mappings may lag this much behind the AttachVolume it accepted.
const LAG: Duration = Duration::from_secs(5);

/// Views untouched this long are dropped (instances that went away, or
/// that no longer get volumes).
const IDLE: Duration = Duration::from_secs(30 * 60);

/// One change of ours to an instance's mappings.
#[derive(Debug, Clone)]
enum Change {
    /// AttachVolume accepted this mapping.
    Attached(BlockDevice),
    /// This volume's attachment is gone.
    Detached(VolumeId),
}

impl Change {
    fn apply(&self, instance: &mut Instance) {
        match self {
            Change::Attached(d) => {
                if !instance.devices.iter().any(|m| m.name == d.name) {
                    instance.devices.push(d.clone());
                }
            }
            Change::Detached(v) => instance.devices.retain(|m| m.volume_id.as_ref() != Some(v)),
        }
    }
}

#[derive(Default)]
struct Entry {
    /// Held while reading from EC2: one read at a time per instance.
    reading: tokio::sync::Mutex<()>,
    state: Mutex<EntryState>,
}

struct EntryState {
    /// The view, once read.
    view: Option<Instance>,
    /// When the read behind `view` started.
    read_at: Instant,
    /// Reads so far (see [`View::generation`]).
    generation: u64,
    /// Found wrong: read again before use.
    stale: bool,
    /// Our changes since shortly before the last read started.
    journal: Vec<(Instant, Change)>,
    /// Last use, for [`IDLE`].
    touched: Instant,
}

impl Default for EntryState {
    fn default() -> Self {
        let now = Instant::now();
        EntryState {
            view: None,
            read_at: now,
            generation: 0,
            stale: false,
            journal: Vec::new(),
            touched: now,
        }
    }
}

/// An instance as the controller sees it now.
#[derive(Debug, Clone)]
pub struct View {
    /// The instance, with its mappings as of the last read plus our changes.
    pub instance: Instance,
    /// Which read it rests on: [`InstanceViews::reread`] and
    /// [`InstanceViews::invalidate`] act only if no later read replaced it.
    pub generation: u64,
    /// Read from EC2 while it was asked for (by this caller or one it
    /// waited on): no newer view can be had, so "no device name left" on it
    /// is final.
    pub fresh: bool,
}

/// Views of instances by id (see the module docs).
pub struct InstanceViews {
    ttl: Duration,
    entries: Mutex<HashMap<InstanceId, Arc<Entry>>>,
}

impl Default for InstanceViews {
    fn default() -> Self {
        InstanceViews::new(TTL)
    }
}

impl InstanceViews {
    /// Views kept for `ttl`.
    pub fn new(ttl: Duration) -> Self {
        InstanceViews {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lookup(&self, id: &InstanceId) -> Option<Arc<Entry>> {
        crate::sync::lock(&self.entries).get(id).cloned()
    }

    /// The entry of `id`, made if new (dropping idle ones meanwhile).
    fn entry(&self, id: &InstanceId) -> Arc<Entry> {
        let mut entries = crate::sync::lock(&self.entries);
        if let Some(e) = entries.get(id) {
            return e.clone();
        }
        let now = Instant::now();
        entries.retain(|_, e| now.duration_since(crate::sync::lock(&e.state).touched) < IDLE);
        entries.entry(id.clone()).or_default().clone()
    }

    /// The entry's view if it may be used (read, not found wrong, within
    /// the TTL), and the generation it has either way. `asked` is the
    /// generation the caller saw first, for [`View::fresh`].
    fn usable(&self, entry: &Entry, asked: Option<u64>) -> (Option<View>, u64) {
        let mut st = crate::sync::lock(&entry.state);
        let now = Instant::now();
        st.touched = now;
        let usable = !st.stale && now.duration_since(st.read_at) < self.ttl;
        let view = st.view.as_ref().filter(|_| usable).map(|instance| View {
            instance: instance.clone(),
            generation: st.generation,
            fresh: asked.is_some_and(|g| st.generation > g),
        });
        (view, st.generation)
    }

    /// The view of `id`: the kept one while usable, else read from EC2
    /// (once for all callers waiting). None when EC2 has no such instance.
    pub async fn get(&self, cloud: &dyn Cloud, id: &InstanceId) -> CloudResult<Option<View>> {
        let entry = self.entry(id);
        let (view, asked) = self.usable(&entry, None);
        if let Some(view) = view {
            return Ok(Some(view));
        }
        let _reading = entry.reading.lock().await;
        // Whoever held the lock may have just read it (for us, too).
        if let (Some(view), _) = self.usable(&entry, Some(asked)) {
            return Ok(Some(view));
        }
        let started = Instant::now();
        let Some(mut instance) = cloud.instance(id).await? else {
            let mut entries = crate::sync::lock(&self.entries);
            if entries.get(id).is_some_and(|e| Arc::ptr_eq(e, &entry)) {
                entries.remove(id);
            }
            return Ok(None);
        };
        let mut st = crate::sync::lock(&entry.state);
        st.journal.retain(|(at, _)| *at + LAG >= started);
        for (_, change) in &st.journal {
            change.apply(&mut instance);
        }
        st.view = Some(instance.clone());
        st.read_at = started;
        st.generation += 1;
        st.stale = false;
        Ok(Some(View {
            instance,
            generation: st.generation,
            fresh: true,
        }))
    }

    /// Reads `id` again unless a read after generation `seen` already
    /// did: EC2 said the view of that generation is wrong.
    pub async fn reread(
        &self,
        cloud: &dyn Cloud,
        id: &InstanceId,
        seen: u64,
    ) -> CloudResult<Option<View>> {
        self.invalidate(id, seen);
        self.get(cloud, id).await
    }

    /// Marks the view of `id` to be read before its next use, if it is
    /// still the one of generation `seen`.
    pub fn invalidate(&self, id: &InstanceId, seen: u64) {
        if let Some(entry) = self.lookup(id) {
            let mut st = crate::sync::lock(&entry.state);
            if st.generation == seen {
                st.stale = true;
            }
        }
    }

    /// Marks the view of `id` to be read before its next use, whichever
    /// read it rests on: EC2 showed an attachment of ours other than the
    /// view holds it.
    pub fn expire(&self, id: &InstanceId) {
        if let Some(entry) = self.lookup(id) {
            crate::sync::lock(&entry.state).stale = true;
        }
    }

    fn record(&self, id: &InstanceId, change: Change) {
        let Some(entry) = self.lookup(id) else {
            return;
        };
        let mut st = crate::sync::lock(&entry.state);
        let now = Instant::now();
        let read_at = st.read_at;
        st.journal.retain(|(at, _)| *at + LAG >= read_at);
        if let Some(view) = st.view.as_mut() {
            change.apply(view);
        }
        st.journal.push((now, change));
        st.touched = now;
    }

    /// AttachVolume accepted `device` on `id` (or EC2 showed it attached).
    pub fn attached(&self, id: &InstanceId, device: BlockDevice) {
        self.record(id, Change::Attached(device));
    }

    /// The attachment of `volume` to `id` is gone.
    pub fn detached(&self, id: &InstanceId, volume: &VolumeId) {
        self.record(id, Change::Detached(volume.clone()));
    }

    /// Reserves a free device name on the instance of `view` against its
    /// current view (`view` itself if it has none), under the view's lock
    /// (see the module docs). Also returns the mappings it counted, for
    /// "node full" messages.
    pub fn reserve<'d>(
        &self,
        view: &View,
        devices: &'d DeviceAllocator,
        cards: u32,
    ) -> (Option<Reservation<'d>>, usize) {
        let id = &view.instance.id;
        let reserve = |instance: &Instance| {
            let mapped = instance.mapped();
            let n = mapped.names.len();
            (devices.reserve(id.as_str(), &mapped, cards), n)
        };
        match self.lookup(id) {
            Some(entry) => {
                let st = crate::sync::lock(&entry.state);
                reserve(st.view.as_ref().unwrap_or(&view.instance))
            }
            None => reserve(&view.instance),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::memory::{MemoryCloud, ZONE};

    fn names(v: &View) -> Vec<&str> {
        v.instance.devices.iter().map(|d| d.name.as_str()).collect()
    }

    fn dev(name: &str, vol: &str) -> BlockDevice {
        BlockDevice {
            name: name.into(),
            volume_id: Some(VolumeId::from_ec2(vol)),
            card: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn kept_within_the_ttl_and_read_once_for_concurrent_callers() {
        let cloud = MemoryCloud::default();
        let id = cloud.add_instance(ZONE, "m5.large");
        let views = InstanceViews::default();
        let got = futures_util::future::join_all((0..10).map(|_| views.get(&cloud, &id))).await;
        assert!(got.iter().all(|v| v.as_ref().unwrap().is_some()));
        assert_eq!(cloud.count("DescribeInstances"), 1, "{:?}", cloud.calls());
        tokio::time::advance(TTL - Duration::from_secs(1)).await;
        assert!(!views.get(&cloud, &id).await.unwrap().unwrap().fresh);
        assert_eq!(cloud.count("DescribeInstances"), 1);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(views.get(&cloud, &id).await.unwrap().unwrap().fresh);
        assert_eq!(
            cloud.count("DescribeInstances"),
            2,
            "read again after the TTL"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn our_changes_update_the_view_and_survive_a_read_that_lags() {
        let cloud = MemoryCloud::default();
        let id = cloud.add_instance(ZONE, "m5.large");
        let views = InstanceViews::default();
        let v = views.get(&cloud, &id).await.unwrap().unwrap();
        // Recorded, but (as if EC2 lagged) not in what EC2 will answer.
        views.attached(&id, dev("/dev/xvdaa", "vol-1"));
        assert_eq!(
            names(&views.get(&cloud, &id).await.unwrap().unwrap()),
            ["/dev/xvda", "/dev/xvdaa"]
        );
        let again = views
            .reread(&cloud, &id, v.generation)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(again.generation, v.generation + 1);
        assert_eq!(names(&again), ["/dev/xvda", "/dev/xvdaa"], "replayed");
        views.detached(&id, &VolumeId::from_ec2("vol-1"));
        assert_eq!(
            names(&views.get(&cloud, &id).await.unwrap().unwrap()),
            ["/dev/xvda"]
        );
        // Long after, EC2's answer is taken as it is.
        tokio::time::advance(TTL).await;
        views.attached(&id, dev("/dev/xvdab", "vol-2"));
        tokio::time::advance(LAG + Duration::from_secs(1)).await;
        views.invalidate(&id, again.generation);
        let later = views.get(&cloud, &id).await.unwrap().unwrap();
        assert_eq!(names(&later), ["/dev/xvda"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_view_found_wrong_is_read_again_once_and_absence_is_not_kept() {
        let cloud = MemoryCloud::default();
        let id = cloud.add_instance(ZONE, "m5.large");
        let views = InstanceViews::default();
        let v = views.get(&cloud, &id).await.unwrap().unwrap();
        // Two callers found the same view wrong: one read between them.
        let (a, b) = tokio::join!(
            views.reread(&cloud, &id, v.generation),
            views.reread(&cloud, &id, v.generation)
        );
        assert_eq!(a.unwrap().unwrap().generation, v.generation + 1);
        assert_eq!(b.unwrap().unwrap().generation, v.generation + 1);
        assert_eq!(cloud.count("DescribeInstances"), 2);
        // An invalidation of a replaced view does nothing.
        views.invalidate(&id, v.generation);
        views.get(&cloud, &id).await.unwrap().unwrap();
        assert_eq!(cloud.count("DescribeInstances"), 2);
        let gone = InstanceId::from_ec2("i-0dead");
        assert!(views.get(&cloud, &gone).await.unwrap().is_none());
        assert!(views.get(&cloud, &gone).await.unwrap().is_none());
        assert_eq!(
            cloud.count("DescribeInstances"),
            4,
            "absence is asked again"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn reservations_see_names_our_attaches_added() {
        let cloud = MemoryCloud::default();
        let id = cloud.add_instance(ZONE, "m5.large");
        let views = InstanceViews::default();
        let devices = DeviceAllocator::default();
        let old = views.get(&cloud, &id).await.unwrap().unwrap();
        let (r, _) = views.reserve(&old, &devices, 1);
        let name = r.as_ref().unwrap().name.clone();
        views.attached(&id, dev(&name, "vol-1"));
        drop(r); // attached: the reservation ends, the view holds the name
        let (r2, mapped) = views.reserve(&old, &devices, 1);
        assert_ne!(r2.unwrap().name, name, "reserved against the current view");
        assert_eq!(mapped, 2);
    }
}
