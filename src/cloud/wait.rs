//! Waiting for EC2 state changes on shared ticks, as short as the Describe
//! budget allows.
//!
//! Every waiter in the process sleeps until the next tick of one schedule
//! (the [`Pacer`]'s), so waiters for different volumes wake together and their lookups
//! coalesce into one Describe call per tick and kind of thing watched
//! (per 200 waiters: EC2's filter limit). The tick interval is chosen by
//! the [`Pacer`]: all Describe calls together may use a quarter of the
//! Describe bucket's refill (5/s at EC2's defaults), what the lookups of
//! RPCs take is left to them, and the rest is spent on ticks. One waiter
//! ticks about every 210 ms, so an RPC returns within a few hundred
//! milliseconds of EC2's change; many kinds of waiters, or a busy account,
//! lengthen the tick, up to [`MAX_TICK`].

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::error::{CloudError, CloudResult};

/// Shortest tick: below this a tick would cost more than it saves.
pub const MIN_TICK: Duration = Duration::from_millis(100);
/// Longest tick.
pub const MAX_TICK: Duration = Duration::from_secs(2);
/// Share of the Describe bucket's refill the driver spends (all calls).
pub const DESCRIBE_SHARE: f64 = 0.25;
/// Aim a little below the budget so lookups that come between two
/// measurements stay inside it. Ticks themselves are exact (one schedule),
/// so 5 % is enough: at 500 in flight the driver made 4.44 Describe calls/s
/// aiming at 0.9 (4.5/s), where each 10 ms off the tick is 5 ms of lag.
const AIM: f64 = 0.95;
/// Waiters one Describe call serves (EC2's limit of values per filter).
const PER_CALL: usize = 200;
/// EC2's Describe bucket holds this many seconds of its refill (100 at
/// 20/s, per EC2's request throttling documentation), so our share of its
/// burst is this many seconds of our budget.
const BURST_SECONDS: f64 = 5.0;
/// How far back Describe calls are counted.
const WINDOW: Duration = Duration::from_secs(10);

/// What a waiter watches: each kind is its own coalesced Describe call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    /// Volumes (creation, attachment, detachment): DescribeVolumes.
    Volumes,
    /// Volume modifications: DescribeVolumesModifications.
    Modifications,
}

/// Chooses the tick interval from the waiters and the Describe calls made.
#[derive(Debug)]
pub struct Pacer {
    /// Describe calls per second the driver may make, all together.
    budget: f64,
    waiting: [AtomicUsize; 2],
    /// When recent Describe calls were made, and whether a tick made them.
    calls: Mutex<VecDeque<(Instant, bool)>>,
    /// The boundaries of recent ticks that woke a waiter.
    ticks: Mutex<VecDeque<Instant>>,
    /// The next tick, once a waiter asked for one.
    next: Mutex<Option<Instant>>,
    /// When counting began: rates over a shorter span than [`WINDOW`] are
    /// taken over that span.
    born: Instant,
}

impl Default for Pacer {
    fn default() -> Self {
        Pacer::new(20.0 * DESCRIBE_SHARE)
    }
}

/// Counts a waiter while it waits.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Pacer {
    /// A pacer allowed `budget` Describe calls per second.
    pub fn new(budget: f64) -> Self {
        Pacer {
            budget,
            waiting: [AtomicUsize::new(0), AtomicUsize::new(0)],
            calls: Mutex::new(VecDeque::new()),
            ticks: Mutex::new(VecDeque::new()),
            next: Mutex::new(None),
            born: Instant::now(),
        }
    }

    /// A pacer for a Describe bucket refilling at `rate` calls per second
    /// (it spends [`DESCRIBE_SHARE`] of it).
    pub fn for_describe_rate(rate: f64) -> Self {
        Pacer::new(rate * DESCRIBE_SHARE)
    }

    /// Records one Describe call; `tick` when a tick's poll made it.
    pub fn describe_call(&self, tick: bool) {
        let now = Instant::now();
        let mut calls = crate::sync::lock(&self.calls);
        calls.push_back((now, tick));
        while calls
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > WINDOW)
        {
            calls.pop_front();
        }
    }

    fn watch(&self, what: Watch) -> Waiting<'_> {
        let counter = &self.waiting[what as usize];
        counter.fetch_add(1, Ordering::Relaxed);
        Waiting(counter)
    }

    /// Records that a waiter woke on the tick at `boundary`.
    fn woke(&self, boundary: Instant) {
        let mut ticks = crate::sync::lock(&self.ticks);
        if ticks.back() != Some(&boundary) {
            ticks.push_back(boundary);
        }
        while ticks
            .front()
            .is_some_and(|t| boundary.duration_since(*t) > WINDOW)
        {
            ticks.pop_front();
        }
    }

    /// Describe calls one tick costs with the current waiters: what their
    /// number needs, or what recent ticks took when more (a tick whose
    /// waiters straggle past the coalescer's gathering makes two calls).
    fn calls_per_tick(&self) -> f64 {
        let needed: usize = self
            .waiting
            .iter()
            .map(|w| w.load(Ordering::Relaxed).div_ceil(PER_CALL))
            .sum();
        let now = Instant::now();
        let ticks = crate::sync::lock(&self.ticks)
            .iter()
            .filter(|t| now.duration_since(**t) <= WINDOW)
            .count();
        let tick_calls = self.recent(now, true);
        let seen = if ticks == 0 {
            0.0
        } else {
            tick_calls as f64 / ticks as f64
        };
        (needed as f64).max(seen)
    }

    /// Describe calls in the window made by ticks (`tick`) or by others.
    fn recent(&self, now: Instant, tick: bool) -> usize {
        crate::sync::lock(&self.calls)
            .iter()
            .filter(|(t, by_tick)| *by_tick == tick && now.duration_since(*t) <= WINDOW)
            .count()
    }

    /// Describe calls per second made recently by anything but ticks.
    ///
    /// Over the whole window; but while the window is not full yet (right
    /// after start), lookups beyond our share of the bucket's burst count
    /// over the time since start: a heavy start is a high rate, not a tenth
    /// of it, while the few lookups of a start (a burst of CreateVolumes
    /// looking up their names, the nodes' instances: 7 calls at 200 in
    /// flight) are what the burst is for. Counted over the time since
    /// start, those 7 stretched the ticks to 300–370 ms for the first ten
    /// seconds, which at 200 in flight is when half the volumes complete.
    fn other_rate(&self) -> f64 {
        let now = Instant::now();
        let calls = self.recent(now, false) as f64;
        let span = now
            .duration_since(self.born)
            .clamp(Duration::from_secs(1), WINDOW)
            .as_secs_f64();
        let beyond_burst = (calls - self.budget * BURST_SECONDS).max(0.0) / span;
        (calls / WINDOW.as_secs_f64()).max(beyond_burst)
    }

    /// The tick interval now: the budget left by other calls, spread over
    /// the calls a tick costs.
    pub fn interval(&self) -> Duration {
        let per_tick = self.calls_per_tick().max(1.0);
        let budget = self.budget * AIM;
        // Ticks keep at least a fifth of the budget: a flood of lookups
        // slows the waits down, it does not stop them.
        let room = (budget - self.other_rate()).max(budget / 5.0);
        Duration::from_secs_f64(per_tick / room).clamp(MIN_TICK, MAX_TICK)
    }

    /// The next tick: the one already scheduled, or, once it has passed,
    /// one [`interval`](Self::interval) after it (or from now, after a
    /// pause with no waiters). One schedule for every waiter, so waiters
    /// wake together even while the interval changes (per-waiter grids of
    /// different intervals would each cost a call). Counting from the last
    /// tick, not from when its poll returned, keeps the Describe call's own
    /// time out of the spacing: counted from the return, a 20–80 ms call
    /// stretched every 210 ms interval by as much, and the lag with it.
    pub fn next_tick(&self) -> Instant {
        let now = Instant::now();
        let mut next = crate::sync::lock(&self.next);
        match *next {
            Some(at) if at > now => at,
            last => {
                let interval = self.interval();
                let at = last
                    .map(|at| at + interval)
                    .filter(|at| *at > now)
                    .unwrap_or(now + interval);
                *next = Some(at);
                at
            }
        }
    }
}

tokio::task_local! {
    /// Set while a tick's coalesced poll runs, so its Describe calls are
    /// counted as the tick's.
    static IN_TICK: bool;
}

/// Runs `fut` as a tick's poll (see [`Pacer::describe_call`]).
pub async fn as_tick<F: Future>(fut: F) -> F::Output {
    IN_TICK.scope(true, fut).await
}

/// Whether the current task is a tick's poll.
pub fn in_tick() -> bool {
    IN_TICK.try_with(|t| *t).unwrap_or(false)
}

/// Polls `check` on shared ticks until it yields a value, fails, or
/// `limit` passes (then [`CloudError::Timeout`] naming `what`). `watch`
/// says which Describe call `check` makes, for `pacer`: the
/// [`Cloud`](super::Cloud)'s, one schedule per Describe budget (and, in
/// tests, per clock: paused clocks of different runtimes do not mix).
///
/// The first check waits for the first tick too: callers poll right after
/// they asked EC2 for a change, whose answer already told them the state,
/// and an immediate check would be an unaligned call that coalesces with
/// nothing.
pub async fn poll<T, F, Fut>(
    pacer: &Pacer,
    watch: Watch,
    what: &str,
    limit: Duration,
    mut check: F,
) -> CloudResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = CloudResult<Option<T>>>,
{
    let start = Instant::now();
    let _waiting = pacer.watch(watch);
    loop {
        let tick = pacer.next_tick();
        tokio::time::sleep_until(tick).await;
        pacer.woke(tick);
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
    use std::sync::atomic::AtomicU32;

    #[tokio::test(start_paused = true)]
    async fn polls_until_ready() {
        let n = Arc::new(AtomicU32::new(0));
        let pacer = Pacer::default();
        let got = poll(
            &pacer,
            Watch::Volumes,
            "thing",
            Duration::from_secs(60),
            || {
                let n = n.clone();
                async move {
                    let seen = n.fetch_add(1, Ordering::SeqCst);
                    Ok((seen >= 3).then_some(seen))
                }
            },
        )
        .await;
        assert_eq!(got, Ok(3));
        assert_eq!(pacer.calls_per_tick(), 0.0, "the waiter is counted out");
    }

    #[tokio::test(start_paused = true)]
    async fn times_out_naming_what() {
        let got: CloudResult<()> = poll(
            &Pacer::default(),
            Watch::Volumes,
            "vol-1 to be available",
            Duration::from_secs(3),
            || async { Ok(None) },
        )
        .await;
        match got {
            Err(CloudError::Timeout(m)) => assert!(m.contains("vol-1 to be available"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_wake_on_the_same_tick_while_the_interval_changes() {
        let pacer = Arc::new(Pacer::default());
        let _w = pacer.watch(Watch::Volumes);
        let first = pacer.next_tick();
        assert_eq!(ms(first - Instant::now()), 210);
        // A waiter arriving later, after the interval changed (a second
        // kind watched costs a second call a tick), joins that tick.
        tokio::time::advance(Duration::from_millis(130)).await;
        let _m = pacer.watch(Watch::Modifications);
        assert_eq!(pacer.next_tick(), first);
        // Once it has passed, the next one is an interval (now longer)
        // after it, however late the waiters ask.
        tokio::time::advance(Duration::from_millis(100)).await;
        let second = pacer.next_tick();
        assert_eq!(ms(second - first), 421);
        assert_eq!(pacer.next_tick(), second);
        // After a pause longer than the interval, counting starts anew.
        tokio::time::advance(Duration::from_secs(1)).await;
        let third = pacer.next_tick();
        assert_eq!(ms(third - Instant::now()), 421);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_describe_call_does_not_stretch_the_ticks() {
        let pacer = Pacer::default();
        let checks = Arc::new(Mutex::new(Vec::new()));
        let start = Instant::now();
        let got = poll(
            &pacer,
            Watch::Volumes,
            "thing",
            Duration::from_secs(60),
            || {
                let checks = checks.clone();
                async move {
                    let n = {
                        let mut seen = crate::sync::lock(&checks);
                        seen.push(ms(Instant::now() - start));
                        seen.len()
                    };
                    // The call itself takes 80 ms.
                    tokio::time::sleep(Duration::from_millis(80)).await;
                    Ok((n >= 4).then_some(n))
                }
            },
        )
        .await;
        assert_eq!(got, Ok(4));
        // Ticks 210.5 ms apart (the timer rounds up to whole ms), not 290.
        assert_eq!(*crate::sync::lock(&checks), vec![211, 422, 632, 843]);
    }

    fn ms(d: Duration) -> u128 {
        d.as_millis()
    }

    #[tokio::test(start_paused = true)]
    async fn one_kind_of_waiter_ticks_within_the_budget() {
        let pacer = Pacer::default(); // 5 Describe calls per second
        let _w = pacer.watch(Watch::Volumes);
        // 1 call a tick, 4.75/s aimed at: 210 ms.
        assert_eq!(ms(pacer.interval()), 210);
        // 200 waiters still share one call; 201 need two.
        let more: Vec<_> = (0..199).map(|_| pacer.watch(Watch::Volumes)).collect();
        assert_eq!(ms(pacer.interval()), 210);
        let one_more = pacer.watch(Watch::Volumes);
        assert_eq!(ms(pacer.interval()), 421);
        drop((more, one_more));
        // A second kind watched costs a second call a tick.
        let _m = pacer.watch(Watch::Modifications);
        assert_eq!(ms(pacer.interval()), 421);
    }

    #[tokio::test(start_paused = true)]
    async fn other_describe_calls_lengthen_the_tick_up_to_a_floor() {
        let pacer = Pacer::default();
        tokio::time::advance(WINDOW).await;
        let _w = pacer.watch(Watch::Volumes);
        // 20 lookups in the window: 2/s of the 4.75/s aimed at; ticks get 2.75/s.
        for _ in 0..20 {
            pacer.describe_call(false);
        }
        assert_eq!(ms(pacer.interval()), 363);
        // Ticks' own calls do not count against them.
        for _ in 0..40 {
            pacer.describe_call(true);
        }
        assert_eq!(ms(pacer.interval()), 363);
        // A flood leaves ticks a fifth of the budget (0.95/s), not nothing.
        for _ in 0..200 {
            pacer.describe_call(false);
        }
        assert_eq!(ms(pacer.interval()), 1052);
        // The window forgets.
        tokio::time::advance(WINDOW + Duration::from_secs(1)).await;
        pacer.describe_call(true);
        assert_eq!(ms(pacer.interval()), 210);
    }

    #[tokio::test(start_paused = true)]
    async fn lookups_right_after_start_beyond_the_burst_count_over_the_time_since() {
        let pacer = Pacer::default();
        let _w = pacer.watch(Watch::Volumes);
        // 2 lookups in the first second come out of the burst (our share:
        // 25): counted over the window, 0.2/s; ticks get 4.55/s.
        pacer.describe_call(false);
        pacer.describe_call(false);
        assert_eq!(ms(pacer.interval()), 219);
        // 30 are 5 beyond it, in one second: 5/s, ticks keep the floor.
        for _ in 0..28 {
            pacer.describe_call(false);
        }
        assert_eq!(ms(pacer.interval()), 1052);
        // Later the rate over the window wins: 3/s, ticks get 1.75/s.
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(ms(pacer.interval()), 571);
    }

    #[tokio::test(start_paused = true)]
    async fn ticks_that_took_two_calls_are_paced_as_two() {
        let pacer = Pacer::default();
        let _w = pacer.watch(Watch::Volumes);
        // Two ticks, four calls: stragglers split each tick's poll in two.
        for _ in 0..2 {
            pacer.woke(Instant::now());
            pacer.describe_call(true);
            pacer.describe_call(true);
            tokio::time::advance(Duration::from_millis(210)).await;
        }
        assert_eq!(ms(pacer.interval()), 421);
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_follows_the_describe_rate_and_ticks_are_bounded() {
        let raised = Pacer::for_describe_rate(100.0); // 25/s
        assert_eq!(raised.interval(), MIN_TICK);
        let starved = Pacer::for_describe_rate(1.0);
        assert_eq!(starved.interval(), MAX_TICK);
    }
}
