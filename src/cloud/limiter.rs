//! Client-side rate limiting that mirrors EC2's per-account token buckets,
//! so the driver slows itself down instead of spending its retries on
//! RequestLimitExceeded. EC2's documented defaults: non-mutating actions
//! 100 tokens refilled at 20/s, mutating actions 200 refilled at 5/s.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// A token bucket; `acquire` waits for a token.
#[derive(Debug)]
pub struct TokenBucket {
    burst: f64,
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens refilled at `rate` per second.
    pub fn new(burst: u32, rate: f64) -> Self {
        TokenBucket {
            burst: burst as f64,
            rate,
            state: Mutex::new((burst as f64, Instant::now())),
        }
    }

    /// Takes one token, waiting for the refill when the bucket is empty.
    /// Waiters are served in arrival order (the mutex is fair).
    pub async fn acquire(&self) {
        let mut state = self.state.lock().await;
        let now = Instant::now();
        let (tokens, last) = *state;
        let mut tokens =
            (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.burst);
        if tokens < 1.0 {
            let wait = Duration::from_secs_f64((1.0 - tokens) / self.rate);
            tokio::time::sleep(wait).await;
            tokens = 1.0;
        }
        *state = (tokens - 1.0, Instant::now());
    }
}

/// The two buckets EC2 keeps per account and region.
#[derive(Debug)]
pub struct Limiter {
    describe: TokenBucket,
    mutating: TokenBucket,
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter {
            describe: TokenBucket::new(100, 20.0),
            mutating: TokenBucket::new(200, 5.0),
        }
    }
}

impl Limiter {
    /// Waits for a token for `action`.
    pub async fn acquire(&self, action: &str) {
        if is_non_mutating(action) {
            self.describe.acquire().await
        } else {
            self.mutating.acquire().await
        }
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

    #[tokio::test(start_paused = true)]
    async fn burst_then_refill_rate() {
        let bucket = TokenBucket::new(5, 2.0);
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

    #[test]
    fn classes() {
        assert!(is_non_mutating("DescribeVolumes"));
        assert!(!is_non_mutating("CreateVolume"));
        assert!(!is_non_mutating("AttachVolume"));
    }
}
