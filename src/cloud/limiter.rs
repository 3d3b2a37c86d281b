//! Client-side rate limiting in the shape of EC2's per-account token
//! buckets, so the driver slows itself down instead of spending its
//! retries on RequestLimitExceeded.
//!
//! EC2 meters each account and region with two buckets; its documented
//! defaults ("Request throttling for the Amazon EC2 API"): non-mutating
//! actions 100 tokens refilled at 20/s, mutating actions 200 refilled at
//! 5/s. Those are where the limiter starts, but an account may have raised
//! limits (the `--ec2-*-rate`/`--ec2-*-burst` flags start higher) or share
//! its buckets with other tools and clusters. So each bucket adapts, in the
//! shape of the AWS SDKs' adaptive retry mode: a RequestLimitExceeded for a
//! request sent at the current rate cuts the rate by [`BACKOFF`] and
//! empties the bucket; from there the rate climbs back additively, by
//! [`RECOVERY`] of the starting rate per second, never past the start.
//!
//! Two more things keep the driver's bucket from getting ahead of EC2's:
//! it holds one token less than the burst ([`MARGIN`]), because EC2's
//! bucket starts refilling only when our first request *arrives*, a
//! moment after we granted it; and it serves [`Priority::Urgent`] calls
//! (attach and detach, which a pod is waiting for) before normal ones
//! (creates, deletes, snapshots), so under a saturated bucket an attach
//! of an existing volume is not queued behind creates that came later.
//!
//! Priority alone does not help the attach of a volume *being* created:
//! at 200 creates in flight the creates spend the whole burst at once,
//! and their attaches, a few seconds later, find the bucket empty and
//! wait out the refill (the median pod attached at 0.57 of the wall time).
//! So each CreateVolume (or CopyVolumes) granted holds back one token for
//! its volume's attach: normal calls leave held tokens in the bucket, and
//! the next AttachVolume takes one; a create EC2 refused releases its
//! hold. The hold is taken with the grant, not once EC2 answered: 200
//! creates are granted before the first answer comes back. At most [`MAX_HELD_SHARE`]
//! of the bucket is held, so creates keep half of it. Holding costs
//! nothing while the bucket is not full (the refill goes on; held tokens
//! are spent later, not lost), but creates that no attach follows
//! (Immediate binding, no pods yet) would keep half the bucket held to
//! the end of their burst. So a hold no attach claims within [`HOLD`]
//! releases every hold, and creates hold nothing for [`RESTRAINT`]: such a
//! burst of creates ends as soon as without holds (the held tokens pile up
//! and are spent at once), the creates of a StatefulSet's pods get their
//! attaches early.

use std::collections::VecDeque;
use std::sync::Mutex as SyncMutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// Multiplicative decrease on a throttle.
pub const BACKOFF: f64 = 0.7;
/// Additive increase per second, as a share of the starting rate.
pub const RECOVERY: f64 = 0.04;
/// The rate never drops below this share of the starting rate: a storm of
/// throttles caused by someone else must not stall the driver for minutes.
pub const FLOOR: f64 = 0.05;

/// Tokens the bucket holds below its burst; see the module docs.
pub const MARGIN: f64 = 1.0;

/// How long a token held for an attach waits for it. A created volume's
/// attach comes once it is available (EC2: a few seconds), Kubernetes has
/// bound its claim and the attach-detach controller made the
/// VolumeAttachment (a second or two more). Longer holds cost a burst of
/// creates that no attach follows more: at raised limits 300 creates took
/// 10.3 s instead of 1.8 s (tests/adaptive_limiter.rs, 10 s or 15 s holds),
/// the creates of 200 pods had their median attach 2.5 times sooner.
pub const HOLD: Duration = Duration::from_secs(10);

/// How long creates hold no tokens after a hold lapsed unclaimed.
pub const RESTRAINT: Duration = Duration::from_secs(60);

/// Share of the bucket's capacity that may be held for attaches.
pub const MAX_HELD_SHARE: f64 = 0.5;

/// Which calls go first when the bucket is short of tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// A pod waits for it: AttachVolume, DetachVolume.
    Urgent,
    /// Everything else.
    Normal,
}

/// The priority of an EC2 action.
pub fn priority(action: &str) -> Priority {
    match action {
        "AttachVolume" | "DetachVolume" => Priority::Urgent,
        _ => Priority::Normal,
    }
}

/// The starting rate (tokens per second) and burst of one bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BucketConfig {
    /// Refill rate, tokens per second.
    pub rate: f64,
    /// Bucket size: calls that may go out at once.
    pub burst: u32,
}

/// The starting point of both buckets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LimiterConfig {
    /// Describe*, Get*, List*, Search*.
    pub describe: BucketConfig,
    /// Every other action.
    pub mutating: BucketConfig,
}

impl Default for LimiterConfig {
    /// EC2's documented default buckets.
    fn default() -> Self {
        LimiterConfig {
            describe: BucketConfig {
                rate: 20.0,
                burst: 100,
            },
            mutating: BucketConfig {
                rate: 5.0,
                burst: 200,
            },
        }
    }
}

/// What a bucket knows at one moment.
#[derive(Debug, Clone, Copy)]
struct State {
    tokens: f64,
    /// When `tokens` was computed.
    stamp: Instant,
    /// The rate right after the last cut (or the start).
    base_rate: f64,
    /// When the rate was last cut; `None` while at the start.
    cut_at: Option<Instant>,
}

/// A token bucket whose rate adapts to throttling; see the module docs.
#[derive(Debug)]
pub struct AdaptiveBucket {
    name: &'static str,
    start: BucketConfig,
    state: SyncMutex<State>,
    /// Serve waiters of a priority in arrival order (tokio's mutex is fair).
    urgent: Mutex<()>,
    normal: Mutex<()>,
    /// Urgent callers waiting or holding the urgent turn.
    urgent_waiting: AtomicUsize,
    /// Tokens held for urgent calls (see the module docs).
    held: SyncMutex<Holds>,
}

/// The tokens a bucket holds for urgent calls.
#[derive(Debug, Default)]
struct Holds {
    /// When each lapses, oldest first.
    until: VecDeque<Instant>,
    /// No holds are taken before this (one lapsed unclaimed).
    restrained_until: Option<Instant>,
}

/// Counts an urgent caller until it has its token (or gives up).
struct UrgentTicket<'a>(&'a AtomicUsize);

impl Drop for UrgentTicket<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Proof of a granted token: when it was granted, so that a throttle of
/// a request sent before the last cut does not cut again.
#[derive(Debug, Clone, Copy)]
pub struct Grant {
    at: Instant,
}

impl AdaptiveBucket {
    /// A full bucket at its starting rate.
    pub fn new(name: &'static str, start: BucketConfig) -> Self {
        AdaptiveBucket {
            name,
            start,
            state: SyncMutex::new(State {
                tokens: Self::cap_of(start),
                stamp: Instant::now(),
                base_rate: start.rate,
                cut_at: None,
            }),
            urgent: Mutex::new(()),
            normal: Mutex::new(()),
            urgent_waiting: AtomicUsize::new(0),
            held: SyncMutex::new(Holds::default()),
        }
    }

    /// Holds one token back for an urgent call expected within [`HOLD`]
    /// (unless restrained: see the module docs).
    pub fn hold_for_urgent(&self) {
        self.hold_at(Instant::now());
    }

    fn hold_at(&self, now: Instant) {
        let mut holds = crate::sync::lock(&self.held);
        if holds.restrained_until.is_none_or(|until| now >= until) {
            holds.until.push_back(now + HOLD);
        }
    }

    /// Tokens held now, capped at [`MAX_HELD_SHARE`] of the capacity, and
    /// when the oldest lapses. A lapsed hold releases them all.
    fn held(&self, now: Instant) -> (f64, Option<Instant>) {
        let mut holds = crate::sync::lock(&self.held);
        if holds.until.front().is_some_and(|until| *until <= now) {
            tracing::debug!(
                bucket = self.name,
                released = holds.until.len(),
                "a token held for an attach was not claimed; holding none for {RESTRAINT:?}"
            );
            holds.until.clear();
            holds.restrained_until = Some(now + RESTRAINT);
        }
        let cap = (Self::cap_of(self.start) * MAX_HELD_SHARE).floor();
        let held = holds.until.len().min(cap as usize);
        (held as f64, holds.until.front().copied())
    }

    /// Ends the oldest hold: an urgent call took its token (tokens are
    /// alike, so which volume's attach it is does not matter), or the call
    /// that took the hold failed.
    pub fn claim_hold(&self) {
        crate::sync::lock(&self.held).until.pop_front();
    }

    /// Most tokens the bucket holds.
    fn cap_of(start: BucketConfig) -> f64 {
        (start.burst as f64 - MARGIN).max(1.0)
    }

    fn rate_at(&self, s: &State, now: Instant) -> f64 {
        match s.cut_at {
            None => s.base_rate,
            Some(cut) => {
                let climbed = now.duration_since(cut).as_secs_f64() * RECOVERY * self.start.rate;
                (s.base_rate + climbed).min(self.start.rate)
            }
        }
    }

    /// The current rate, tokens per second.
    pub fn rate(&self) -> f64 {
        let s = *crate::sync::lock(&self.state);
        self.rate_at(&s, Instant::now())
    }

    /// Takes one token at normal priority.
    pub async fn acquire(&self) -> Grant {
        self.acquire_as(Priority::Normal).await
    }

    /// Takes one token, waiting for the refill when the bucket is empty;
    /// a normal caller also waits while urgent ones do.
    pub async fn acquire_as(&self, priority: Priority) -> Grant {
        self.acquire_holding(priority, false).await
    }

    /// [`acquire_as`](Self::acquire_as), and with the token (under the same
    /// lock, so the next caller sees it) `hold` one for an urgent call.
    pub async fn acquire_holding(&self, priority: Priority, hold: bool) -> Grant {
        let _ticket = (priority == Priority::Urgent).then(|| {
            self.urgent_waiting.fetch_add(1, Ordering::SeqCst);
            UrgentTicket(&self.urgent_waiting)
        });
        let _turn = match priority {
            Priority::Urgent => self.urgent.lock().await,
            Priority::Normal => self.normal.lock().await,
        };
        loop {
            let wait = {
                let mut s = crate::sync::lock(&self.state);
                let now = Instant::now();
                let rate = self.rate_at(&s, now);
                let refill = now.duration_since(s.stamp).as_secs_f64() * rate;
                s.tokens = (s.tokens + refill).min(Self::cap_of(self.start));
                s.stamp = now;
                let yielding =
                    priority == Priority::Normal && self.urgent_waiting.load(Ordering::SeqCst) > 0;
                let (held, lapse) = match priority {
                    Priority::Normal => self.held(now),
                    Priority::Urgent => (0.0, None),
                };
                // A normal caller leaves the held tokens in the bucket, and
                // goes after a waiting urgent caller (so waits for a token
                // beyond the urgent one).
                let needed = 1.0 + held + if yielding { 1.0 } else { 0.0 };
                if s.tokens >= needed && !yielding {
                    s.tokens -= 1.0;
                    if hold {
                        self.hold_at(now);
                    }
                    return Grant { at: now };
                }
                // Re-checked after the sleep: a cut meanwhile empties the
                // bucket and lowers the rate; an urgent caller may have
                // taken the token; a hold may lapse first.
                let refill = Duration::from_secs_f64((needed - s.tokens).max(0.0) / rate);
                let until_lapse = lapse.map_or(refill, |at| at.saturating_duration_since(now));
                refill.min(until_lapse).max(Duration::from_millis(1))
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Tells the bucket EC2 throttled a request sent with `grant`. Cuts the
    /// rate once per throttle episode: requests already in flight when the
    /// rate was cut carry no news.
    pub fn throttled(&self, grant: Grant) {
        let mut s = crate::sync::lock(&self.state);
        if s.cut_at.is_some_and(|cut| grant.at <= cut) {
            return;
        }
        let now = Instant::now();
        let floor = self.start.rate * FLOOR;
        let rate = (self.rate_at(&s, now) * BACKOFF).max(floor);
        *s = State {
            tokens: 0.0,
            stamp: now,
            base_rate: rate,
            cut_at: Some(now),
        };
        tracing::info!(
            bucket = self.name,
            rate = format!("{rate:.2}"),
            start = self.start.rate,
            "EC2 throttled a request; slowing this bucket"
        );
    }
}

/// The two buckets EC2 keeps per account and region.
#[derive(Debug)]
pub struct Limiter {
    describe: AdaptiveBucket,
    mutating: AdaptiveBucket,
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter::new(LimiterConfig::default())
    }
}

impl Limiter {
    /// Buckets starting at `config`.
    pub fn new(config: LimiterConfig) -> Self {
        Limiter {
            describe: AdaptiveBucket::new("describe", config.describe),
            mutating: AdaptiveBucket::new("mutating", config.mutating),
        }
    }

    fn bucket(&self, action: &str) -> &AdaptiveBucket {
        if is_non_mutating(action) {
            &self.describe
        } else {
            &self.mutating
        }
    }

    /// Waits for a token for `action`, at its [`priority`]. A create
    /// holds a token for its volume's attach, an AttachVolume takes a
    /// held one, if any (see the module docs).
    pub async fn acquire(&self, action: &str) -> Grant {
        let grant = self
            .bucket(action)
            .acquire_holding(priority(action), creates_volume(action))
            .await;
        if action == "AttachVolume" {
            self.mutating.claim_hold();
        }
        grant
    }

    /// EC2 refused `action` sent with a token of [`acquire`](Self::acquire):
    /// a create releases the token it held (no volume to attach).
    pub fn refused(&self, action: &str) {
        if creates_volume(action) {
            self.mutating.claim_hold();
        }
    }

    /// EC2 answered RequestLimitExceeded to `action` sent with `grant`.
    pub fn throttled(&self, action: &str, grant: Grant) {
        self.bucket(action).throttled(grant)
    }

    /// Current rates (describe, mutating), tokens per second.
    pub fn rates(&self) -> (f64, f64) {
        (self.describe.rate(), self.mutating.rate())
    }
}

/// Whether `action` makes a volume (that an attach will likely follow).
fn creates_volume(action: &str) -> bool {
    matches!(action, "CreateVolume" | "CopyVolumes")
}

/// EC2's non-mutating class: Describe*, Get*, List*, Search*.
pub fn is_non_mutating(action: &str) -> bool {
    ["Describe", "Get", "List", "Search"]
        .iter()
        .any(|p| action.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(burst: u32, rate: f64) -> AdaptiveBucket {
        AdaptiveBucket::new("test", BucketConfig { rate, burst })
    }

    #[tokio::test(start_paused = true)]
    async fn burst_less_the_margin_then_refill_rate() {
        let bucket = bucket(5, 2.0);
        let start = Instant::now();
        for _ in 0..4 {
            bucket.acquire().await;
        }
        assert!(start.elapsed() < Duration::from_millis(1));
        for _ in 0..4 {
            bucket.acquire().await;
        }
        // four more tokens at 2/s take about two seconds
        let took = start.elapsed().as_secs_f64();
        assert!((1.9..2.2).contains(&took), "{took}");
    }

    #[tokio::test(start_paused = true)]
    async fn urgent_calls_go_before_normal_ones_that_came_first() {
        let bucket = std::sync::Arc::new(bucket(2, 10.0));
        bucket.acquire().await; // the one token of the burst (2 less the margin)
        let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (i, p) in [
            (0, Priority::Normal),
            (1, Priority::Normal),
            (2, Priority::Urgent),
            (3, Priority::Urgent),
        ] {
            let (b, o) = (bucket.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                b.acquire_as(p).await;
                o.lock().unwrap().push(i);
            }));
            // arrival order 0, 1, 2, 3
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![2, 3, 0, 1]);
    }

    #[tokio::test(start_paused = true)]
    async fn creates_leave_a_token_for_each_created_volumes_attach() {
        // 11 tokens (12 less the margin), 1/s; at most 5 held.
        let limiter = Limiter::new(LimiterConfig {
            describe: BucketConfig {
                rate: 20.0,
                burst: 100,
            },
            mutating: BucketConfig {
                rate: 1.0,
                burst: 12,
            },
        });
        let start = Instant::now();
        // Each create holds one: 5 creates leave 6 tokens, 5 of them held.
        for _ in 0..5 {
            limiter.acquire("CreateVolume").await;
        }
        assert!(start.elapsed() < Duration::from_millis(1));
        // The sixth create has its token at once; the holds are capped at 5.
        limiter.acquire("CopyVolumes").await;
        assert!(start.elapsed() < Duration::from_millis(1));
        // Now 5 tokens, all held: a delete waits for the refill...
        let waited = Instant::now();
        limiter.acquire("DeleteVolume").await;
        let took = waited.elapsed().as_secs_f64();
        assert!((0.9..1.1).contains(&took), "{took}");
        // ...while the attaches they were held for go at once.
        let attaches = Instant::now();
        for _ in 0..5 {
            limiter.acquire("AttachVolume").await;
        }
        assert!(attaches.elapsed() < Duration::from_millis(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_create_ec2_refused_releases_its_hold() {
        let limiter = Limiter::new(LimiterConfig {
            mutating: BucketConfig {
                rate: 0.001,
                burst: 5,
            },
            ..LimiterConfig::default()
        });
        // 4 tokens: the create takes one and holds one.
        limiter.acquire("CreateVolume").await;
        limiter.refused("CreateVolume");
        // Released: the three left all go to deletes at once (held, the
        // third would wait).
        let start = Instant::now();
        for _ in 0..3 {
            limiter.acquire("DeleteVolume").await;
        }
        assert!(start.elapsed() < Duration::from_millis(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hold_no_attach_claims_releases_all_and_restrains_holding() {
        let bucket = bucket(5, 0.001); // 4 tokens, next refill in 1000 s
        bucket.hold_for_urgent();
        bucket.acquire().await;
        tokio::time::advance(Duration::from_secs(1)).await;
        bucket.hold_for_urgent();
        bucket.acquire().await;
        // Two tokens left, both held: the next normal call waits for the
        // first hold to lapse, not for the refill; the lapse frees both.
        let start = Instant::now();
        bucket.acquire().await;
        let took = start.elapsed();
        let lapse = HOLD - Duration::from_secs(1);
        assert!(
            took >= lapse && took < lapse + Duration::from_millis(10),
            "{took:?}"
        );
        // Holding is restrained for a while: this hold is not taken.
        bucket.hold_for_urgent();
        let start = Instant::now();
        bucket.acquire().await;
        assert!(start.elapsed() < Duration::from_millis(1));
        // Afterwards creates hold again.
        tokio::time::advance(RESTRAINT).await;
        bucket.hold_for_urgent();
        assert_eq!(bucket.held(Instant::now()).0, 1.0);
    }

    #[test]
    fn attach_and_detach_are_urgent() {
        assert_eq!(priority("AttachVolume"), Priority::Urgent);
        assert_eq!(priority("DetachVolume"), Priority::Urgent);
        assert_eq!(priority("CreateVolume"), Priority::Normal);
        assert_eq!(priority("DeleteVolume"), Priority::Normal);
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttle_cuts_the_rate_and_empties_the_bucket() {
        let bucket = bucket(100, 10.0);
        let grant = bucket.acquire().await;
        bucket.throttled(grant);
        assert!((bucket.rate() - 7.0).abs() < 1e-9, "{}", bucket.rate());
        // Empty: the next token takes 1/7 s even though 99 were left.
        let start = Instant::now();
        bucket.acquire().await;
        let took = start.elapsed().as_secs_f64();
        assert!((0.13..0.16).contains(&took), "{took}");
    }

    #[tokio::test(start_paused = true)]
    async fn throttles_of_requests_sent_before_the_cut_do_not_cut_again() {
        let bucket = bucket(100, 10.0);
        let in_flight: Vec<Grant> = [(); 20]
            .iter()
            .map(|_| Grant { at: Instant::now() })
            .collect();
        tokio::time::advance(Duration::from_millis(1)).await;
        for g in &in_flight {
            bucket.throttled(*g);
        }
        // The first cut counted (its grant predates no cut); the other 19
        // were sent at the same moment and carry no news.
        assert!((bucket.rate() - 7.0).abs() < 1e-9, "{}", bucket.rate());
        // A request sent after the cut and throttled cuts again.
        tokio::time::advance(Duration::from_millis(1)).await;
        let after = bucket.acquire().await;
        bucket.throttled(after);
        assert!(bucket.rate() < 5.0, "{}", bucket.rate());
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_recovers_additively_up_to_the_start() {
        let bucket = bucket(10, 10.0);
        let g = bucket.acquire().await;
        bucket.throttled(g);
        // 7/s, then +0.4/s every second (4 % of 10).
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!((bucket.rate() - 9.0).abs() < 1e-6, "{}", bucket.rate());
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!((bucket.rate() - 10.0).abs() < 1e-9, "capped at the start");
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_has_a_floor() {
        let bucket = bucket(10, 10.0);
        for _ in 0..50 {
            tokio::time::advance(Duration::from_millis(1)).await;
            bucket.throttled(Grant { at: Instant::now() });
        }
        assert!((bucket.rate() - 0.5).abs() < 1e-3, "{}", bucket.rate());
    }

    #[tokio::test(start_paused = true)]
    async fn buckets_follow_ec2_classes() {
        let limiter = Limiter::default();
        let g = limiter.acquire("CreateVolume").await;
        limiter.throttled("CreateVolume", g);
        let (describe, mutating) = limiter.rates();
        assert_eq!(describe, 20.0);
        assert!((mutating - 3.5).abs() < 1e-9);
    }

    #[test]
    fn classes() {
        assert!(is_non_mutating("DescribeVolumes"));
        assert!(!is_non_mutating("CreateVolume"));
        assert!(!is_non_mutating("AttachVolume"));
    }
}
