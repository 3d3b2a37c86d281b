//! Waiting for EC2 state changes on shared ticks.
//!
//! Every waiter in the process sleeps until the next boundary of a common
//! clock, so waiters for different volumes wake together and their lookups
//! coalesce into one Describe call per tick. The interval starts short
//! (most transitions take a second or two) and doubles up to a cap; since
//! the intervals are powers of two of one base, a slow waiter's ticks are
//! always a subset of a fast one's and they still meet.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

use super::error::{CloudError, CloudResult};

/// First poll interval.
pub const FIRST_TICK: Duration = Duration::from_millis(500);
/// Longest poll interval.
pub const MAX_TICK: Duration = Duration::from_secs(2);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Sleeps until the next multiple of `interval` on the process-wide clock.
pub async fn sleep_to_tick(interval: Duration) {
    let since = epoch().elapsed().as_nanos();
    let step = interval.as_nanos().max(1);
    let next = (since / step + 1) * step;
    let wait = Duration::from_nanos((next - since) as u64);
    tokio::time::sleep(wait).await;
}

/// Polls `check` on shared ticks until it yields a value, fails, or
/// `limit` passes (then [`CloudError::Timeout`] naming `what`).
///
/// The first check waits for the first tick too: callers poll right after
/// they asked EC2 for a change, whose answer already told them the state,
/// and an immediate check would be an unaligned call that coalesces with
/// nothing.
pub async fn poll<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> CloudResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = CloudResult<Option<T>>>,
{
    let start = Instant::now();
    let mut interval = FIRST_TICK;
    loop {
        sleep_to_tick(interval).await;
        interval = (interval * 2).min(MAX_TICK);
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if start.elapsed() >= limit {
            return Err(CloudError::Timeout(format!(
                "timed out after {:.0?} waiting for {what}",
                limit
            )));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn polls_until_ready() {
        let n = Arc::new(AtomicU32::new(0));
        let got = poll("thing", Duration::from_secs(60), || {
            let n = n.clone();
            async move {
                let seen = n.fetch_add(1, Ordering::SeqCst);
                Ok((seen >= 3).then_some(seen))
            }
        })
        .await;
        assert_eq!(got, Ok(3));
    }

    #[tokio::test(start_paused = true)]
    async fn times_out_naming_what() {
        let got: CloudResult<()> =
            poll("vol-1 to be available", Duration::from_secs(3), || async {
                Ok(None)
            })
            .await;
        match got {
            Err(CloudError::Timeout(m)) => assert!(m.contains("vol-1 to be available"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_wake_on_the_same_tick() {
        // Two waiters starting at different moments wake at the same instant.
        epoch();
        tokio::time::sleep(Duration::from_millis(70)).await;
        let a = tokio::spawn(async {
            sleep_to_tick(Duration::from_millis(500)).await;
            Instant::now()
        });
        tokio::time::sleep(Duration::from_millis(130)).await;
        let b = tokio::spawn(async {
            sleep_to_tick(Duration::from_millis(500)).await;
            Instant::now()
        });
        assert_eq!(a.await.unwrap(), b.await.unwrap());
    }
}
