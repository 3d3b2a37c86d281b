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

use std::sync::Mutex as SyncMutex;
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
    /// Serves waiters in arrival order (tokio's mutex is fair).
    queue: Mutex<()>,
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
                tokens: start.burst as f64,
                stamp: Instant::now(),
                base_rate: start.rate,
                cut_at: None,
            }),
            queue: Mutex::new(()),
        }
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
        let s = *self.state.lock().expect("limiter state");
        self.rate_at(&s, Instant::now())
    }

    /// Takes one token, waiting for the refill when the bucket is empty.
    pub async fn acquire(&self) -> Grant {
        let _turn = self.queue.lock().await;
        loop {
            let wait = {
                let mut s = self.state.lock().expect("limiter state");
                let now = Instant::now();
                let rate = self.rate_at(&s, now);
                let refill = now.duration_since(s.stamp).as_secs_f64() * rate;
                s.tokens = (s.tokens + refill).min(self.start.burst as f64);
                s.stamp = now;
                if s.tokens >= 1.0 {
                    s.tokens -= 1.0;
                    return Grant { at: now };
                }
                // Re-checked after the sleep: a cut meanwhile empties the
                // bucket and lowers the rate.
                Duration::from_secs_f64((1.0 - s.tokens) / rate)
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Tells the bucket EC2 throttled a request sent with `grant`. Cuts the
    /// rate once per throttle episode: requests already in flight when the
    /// rate was cut carry no news.
    pub fn throttled(&self, grant: Grant) {
        let mut s = self.state.lock().expect("limiter state");
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

    /// Waits for a token for `action`.
    pub async fn acquire(&self, action: &str) -> Grant {
        self.bucket(action).acquire().await
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
    async fn burst_then_refill_rate() {
        let bucket = bucket(5, 2.0);
        let start = Instant::now();
        for _ in 0..5 {
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
