//! The adaptive EC2 limiter against the emulator's throttling buckets:
//!
//! * an account sharing its buckets with another tenant (the emulator's
//!   buckets at half EC2's defaults, the driver at its defaults): a burst
//!   of 200 CreateVolumes surfaces no RequestLimitExceeded to the caller
//!   and finishes within 1.3× of the time those buckets allow;
//! * an account with raised limits (buckets at double, the driver's
//!   `--ec2-*` flags at double): the same burst finishes faster than at
//!   the defaults. 300 creates, not 200: 200 fit in the default mutating
//!   burst, so at 200 both finish at once and no difference can show.
//!
//! The bounds use the mutating bucket only (every create is one mutating
//! call; the waits use the other bucket) plus the emulator's creation
//! delay. Each run prints its numbers.

mod support;

use std::time::Instant;

use serde_json::json;
use support::csi::*;
use support::{Harness, SimOptions};

/// The `fast` profile's creation delay.
const CREATE_DELAY: f64 = 0.2;

struct Buckets {
    mutating_burst: f64,
    mutating_rate: f64,
    describe_burst: f64,
    describe_rate: f64,
}

impl Buckets {
    fn scaled(factor: f64) -> Buckets {
        Buckets {
            mutating_burst: 200.0 * factor,
            mutating_rate: 5.0 * factor,
            describe_burst: 100.0 * factor,
            describe_rate: 20.0 * factor,
        }
    }

    /// The least time `creates` CreateVolumes can take through these buckets.
    fn bound(&self, creates: usize) -> f64 {
        (creates as f64 - self.mutating_burst).max(0.0) / self.mutating_rate + CREATE_DELAY
    }
}

/// Runs `creates` concurrent CreateVolumes on one connection; returns the
/// wall time, the errors, and how many RequestLimitExceeded the emulator
/// answered.
async fn burst(
    name: &str,
    creates: usize,
    buckets: &Buckets,
    driver_args: Vec<String>,
) -> (f64, Vec<String>, u64) {
    let h = Harness::start_with("controller", SimOptions::default(), driver_args).await;
    h.wait_ready().await;
    h.sim.post(
        "config",
        &json!({ "throttle": {
            "enabled": true,
            "mutating": { "burst": buckets.mutating_burst, "rate": buckets.mutating_rate },
            "describe": { "burst": buckets.describe_burst, "rate": buckets.describe_rate },
        }}),
    );
    h.sim.reset_counters();
    let channel = h.driver.channel().await;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..creates {
        let mut c = ebs_csi_driver::csi::controller_client::ControllerClient::new(channel.clone());
        let req = create_req(&format!("{name}-{i}"), 1, params(&[]));
        tasks.spawn(async move { c.create_volume(req).await.map(|_| ()) });
    }
    let mut errors = Vec::new();
    while let Some(done) = tasks.join_next().await {
        if let Err(status) = done.unwrap() {
            errors.push(format!("{:?}: {}", status.code(), status.message()));
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let counters = h.sim.get("counters");
    let throttled = counters["throttled"]
        .as_object()
        .map(|o| o.values().filter_map(|n| n.as_u64()).sum())
        .unwrap_or(0);
    let bound = buckets.bound(creates);
    println!(
        "{name}: {creates} creates in {wall:.1} s, bound {bound:.1} s, ratio {:.2}; \
         {throttled} RequestLimitExceeded answered by EC2, {} errors surfaced",
        wall / bound,
        errors.len()
    );
    (wall, errors, throttled)
}

fn flags(factor: f64) -> Vec<String> {
    let b = Buckets::scaled(factor);
    vec![
        format!("--ec2-mutating-rate={}", b.mutating_rate),
        format!("--ec2-mutating-burst={}", b.mutating_burst),
        format!("--ec2-describe-rate={}", b.describe_rate),
        format!("--ec2-describe-burst={}", b.describe_burst),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buckets_at_half_cost_no_surfaced_throttle_and_at_most_1_3x_their_bound() {
    let half = Buckets::scaled(0.5);
    let (wall, errors, throttled) = burst("half", 200, &half, vec![]).await;
    assert!(errors.is_empty(), "errors reached the caller: {errors:?}");
    assert!(
        throttled > 0,
        "the other tenant never showed: nothing to adapt to"
    );
    let bound = half.bound(200);
    assert!(
        wall <= 1.3 * bound,
        "{wall:.1} s is more than 1.3 x the {bound:.1} s the buckets allow"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raised_limits_with_raised_flags_finish_faster_than_the_defaults() {
    let (defaults, errors, _) = burst("defaults", 300, &Buckets::scaled(1.0), vec![]).await;
    assert!(errors.is_empty(), "{errors:?}");
    let double = Buckets::scaled(2.0);
    let (raised, errors, throttled) = burst("double", 300, &double, flags(2.0)).await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(throttled, 0, "flags at the account's limits: no throttle");
    assert!(
        raised < defaults,
        "raised limits took {raised:.1} s, defaults {defaults:.1} s"
    );
}
