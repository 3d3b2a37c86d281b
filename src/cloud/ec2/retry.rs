//! When an EC2 call may be sent again: one rule per action, enforced by
//! [`Ec2Cloud::call`] and [`Ec2Cloud::call_checked`].
//!
//! A throttled request (RequestLimitExceeded) was not executed, so it is
//! always sent again once the limiter allows. A server error (5xx), a
//! timeout or a broken connection is *ambiguous*: EC2 may have executed
//! the request before failing to answer. What happens then depends on the
//! action's [`Rule`]:
//!
//! | rule | actions | on an ambiguous failure |
//! |---|---|---|
//! | [`Rule::Blind`] | Describe*, CreateTags, DeleteTags, CreateVolume and CopyVolumes (ClientToken), EnableFastSnapshotRestores, LockSnapshot | send again |
//! | [`Rule::AfterStateCheck`] | AttachVolume, DetachVolume, DeleteVolume, DeleteSnapshot, ModifyVolume | look at the resource: if the effect is there it is a success, else send again |
//! | [`Rule::AfterLookup`] | CreateSnapshot, CreateSnapshots | look for what the request would have created (by its name or group tags): if found, that is the answer, else send again |
//!
//! An action not in the table is treated as never safe: without a check
//! its ambiguous failure is returned, not resent, and the caller's own
//! idempotency (the CSI name) decides. A check that cannot tell (it fails
//! itself) returns the original failure, again without resending.

use std::future::Future;
use std::time::{Duration, Instant};

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use futures_util::future::BoxFuture;

use super::Ec2Cloud;
use crate::cloud::error::{CloudError, CloudResult};
use crate::cloud::limiter::is_non_mutating;
use crate::cloud::wait::in_tick;

/// Attempts for a throttled call before giving up.
const THROTTLE_ATTEMPTS: u32 = 10;
/// Attempts for a call that failed ambiguously (server or transport error).
const SERVER_ERROR_ATTEMPTS: u32 = 4;
/// Before a lookup for what an ambiguous create made: EC2's Describe calls
/// are eventually consistent, a resource made a moment ago may not be
/// listed yet, and missing it would mean creating a second one.
const LOOKUP_SETTLE: Duration = Duration::from_millis(1000);

/// How an action may be retried after an ambiguous failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Sending it again is harmless: reads, tag writes, and creates that
    /// carry a ClientToken (EC2 answers a repeat with the first result).
    Blind,
    /// Sending it again is safe once the resource's state shows the first
    /// request did not take effect.
    AfterStateCheck,
    /// Sending it again would create a second resource unless a lookup
    /// shows the first request created nothing.
    AfterLookup,
}

/// The rule of every action the driver sends; see the module docs.
const RULES: &[(&str, Rule)] = &[
    ("DescribeAvailabilityZones", Rule::Blind),
    ("DescribeInstances", Rule::Blind),
    ("DescribeSnapshots", Rule::Blind),
    ("DescribeVolumes", Rule::Blind),
    ("DescribeVolumesModifications", Rule::Blind),
    ("CreateTags", Rule::Blind),
    ("DeleteTags", Rule::Blind),
    ("CreateVolume", Rule::Blind),
    ("CopyVolumes", Rule::Blind),
    // Enabling what is enabled answers success with its state.
    ("EnableFastSnapshotRestores", Rule::Blind),
    // Locking again with the same mode and duration sets the same lock.
    ("LockSnapshot", Rule::Blind),
    ("AttachVolume", Rule::AfterStateCheck),
    ("DetachVolume", Rule::AfterStateCheck),
    ("DeleteVolume", Rule::AfterStateCheck),
    ("DeleteSnapshot", Rule::AfterStateCheck),
    ("ModifyVolume", Rule::AfterStateCheck),
    ("CreateSnapshot", Rule::AfterLookup),
    ("CreateSnapshots", Rule::AfterLookup),
];

/// The rule for `action`; `None` for an action not in the table (treated
/// as never safe to resend blindly).
pub fn rule(action: &str) -> Option<Rule> {
    RULES.iter().find(|(a, _)| *a == action).map(|(_, r)| *r)
}

/// Whether `action` may be resent after an ambiguous failure without a
/// check.
pub fn blind_retry_safe(action: &str) -> bool {
    rule(action) == Some(Rule::Blind)
}

/// A check run after an ambiguous failure: `Ok(Some(result))` when the
/// request took effect (the result stands in for EC2's lost answer),
/// `Ok(None)` when it provably did not (send again), `Err` when the check
/// could not tell.
pub type Check<'a, T> = Box<dyn Fn() -> BoxFuture<'a, CloudResult<Option<T>>> + Send + Sync + 'a>;

/// Whether a failure may have happened after EC2 executed the request.
fn ambiguous(err: &CloudError) -> bool {
    matches!(err, CloudError::Unavailable(_))
}

impl Ec2Cloud {
    /// Runs one EC2 action with the limiter, retries and metrics, for an
    /// action whose rule is [`Rule::Blind`]; any other action's ambiguous
    /// failure is returned without resending.
    pub(super) async fn call<T, E, R, F, Fut>(
        &self,
        action: &'static str,
        send: F,
    ) -> CloudResult<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, R>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug,
    {
        self.call_checked(action, send, None).await
    }

    /// [`call`](Self::call) for an action that is not blind-safe: after an
    /// ambiguous failure, `check` decides whether it took effect before
    /// anything is sent again. `send` is called once per attempt.
    pub(super) async fn call_checked<T, E, R, F, Fut>(
        &self,
        action: &'static str,
        send: F,
        check: Option<Check<'_, T>>,
    ) -> CloudResult<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, R>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug,
    {
        let rule = rule(action);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let grant = self.limiter.acquire(action).await;
            if is_non_mutating(action) {
                self.pacer.describe_call(in_tick());
            }
            let started = Instant::now();
            let result = send().await;
            let elapsed = started.elapsed();
            let err = match result {
                Ok(value) => {
                    self.observe(action, elapsed, None, false);
                    tracing::debug!(action, attempt, ms = elapsed.as_millis() as u64, "ec2 call");
                    return Ok(value);
                }
                Err(e) => {
                    self.limiter.refused(action);
                    let code = error_code(&e);
                    let err = CloudError::from_sdk(action, e);
                    let throttled = matches!(err, CloudError::Throttled(_));
                    self.observe(action, elapsed, Some(&code), throttled);
                    err
                }
            };
            if matches!(err, CloudError::Throttled(_)) {
                self.limiter.throttled(action, grant);
                if attempt >= THROTTLE_ATTEMPTS {
                    tracing::warn!(action, attempt, error = %err, "ec2 call throttled; giving up");
                    return Err(err);
                }
                // Not executed: back to the limiter, which has just slowed
                // down; a short jitter keeps the retries from lining up.
                tokio::time::sleep(jitter(Duration::from_millis(100 << attempt.min(4)))).await;
                continue;
            }
            if !ambiguous(&err) || attempt >= SERVER_ERROR_ATTEMPTS {
                tracing::debug!(action, attempt, error = %err, "ec2 call failed");
                return Err(err);
            }
            tokio::time::sleep(backoff(attempt)).await;
            match (rule, &check) {
                (Some(Rule::Blind), _) => {}
                (Some(r), Some(check)) => {
                    if r == Rule::AfterLookup {
                        tokio::time::sleep(LOOKUP_SETTLE).await;
                    }
                    match check().await {
                        Ok(Some(done)) => {
                            tracing::info!(action, attempt, error = %err,
                                "EC2 failed to answer but had done the request; not sending it again");
                            return Ok(done);
                        }
                        Ok(None) => {}
                        Err(check_err) => {
                            tracing::warn!(action, error = %err, check_error = %check_err,
                                "EC2 failed to answer and whether it did the request is unknown; not sending it again");
                            return Err(err);
                        }
                    }
                }
                _ => {
                    tracing::warn!(action, error = %err,
                        "EC2 failed to answer a request that is not safe to send twice; not sending it again");
                    return Err(err);
                }
            }
            tracing::debug!(action, attempt, error = %err, "ec2 call will be sent again");
        }
    }

    fn observe(&self, action: &str, took: Duration, code: Option<&str>, throttled: bool) {
        if let Some(o) = self.observer {
            o.ec2_request(action, took, code, throttled);
        }
    }
}

/// EC2's error code of a failed attempt, or what kind of transport failure
/// it was (for metrics).
fn error_code<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> String {
    match e {
        SdkError::ServiceError(s) => s.err().code().unwrap_or("Unknown").to_string(),
        SdkError::TimeoutError(_) => "Timeout".to_string(),
        SdkError::DispatchFailure(_) => "ConnectionFailure".to_string(),
        _ => "ClientError".to_string(),
    }
}

/// Jittered exponential backoff: up to 200 ms × 2^(attempt-1), capped at 10 s.
fn backoff(attempt: u32) -> Duration {
    let cap_ms = (200u64 << (attempt - 1).min(6)).min(10_000);
    jitter(Duration::from_millis(cap_ms))
}

/// A duration between half of `cap` and `cap`. Jitter from the clock's low
/// bits: enough to de-synchronise retries without a randomness crate.
fn jitter(cap: Duration) -> Duration {
    let cap_ms = cap.as_millis() as u64;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    Duration::from_millis(cap_ms / 2 + nanos % (cap_ms / 2 + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The actions the EC2 implementation sends and how: scanned from its
    /// source so a new call cannot skip the table.
    fn calls_in_source() -> Vec<(String, bool)> {
        let sources = [
            include_str!("volumes.rs"),
            include_str!("snapshots.rs"),
            include_str!("mod.rs"),
        ];
        let mut found = Vec::new();
        for src in sources {
            for (marker, checked) in [
                (".call(", false),
                (".call_checked(", true),
                (".paged(", false),
            ] {
                for (i, _) in src.match_indices(marker) {
                    let rest = src[i + marker.len()..].trim_start();
                    let Some(rest) = rest.strip_prefix('"') else {
                        continue;
                    };
                    let name: String = rest.chars().take_while(|c| c.is_alphanumeric()).collect();
                    found.push((name, checked));
                }
            }
        }
        found
    }

    #[test]
    fn every_action_sent_has_a_rule_and_the_non_blind_ones_a_check() {
        let calls = calls_in_source();
        assert!(calls.len() >= 15, "scan found too little: {calls:?}");
        for (action, checked) in &calls {
            let rule = rule(action).unwrap_or_else(|| panic!("{action} has no retry rule"));
            assert_eq!(
                rule != Rule::Blind,
                *checked,
                "{action} is {rule:?} but is sent with{} a check",
                if *checked { "" } else { "out" }
            );
        }
        for (action, _) in RULES {
            assert!(
                calls.iter().any(|(a, _)| a == action),
                "{action} is in the table but never sent"
            );
        }
    }

    #[test]
    fn the_rules() {
        for a in [
            "DescribeVolumes",
            "DescribeSnapshots",
            "CreateTags",
            "DeleteTags",
            "CreateVolume",
            "CopyVolumes",
        ] {
            assert!(blind_retry_safe(a), "{a}");
        }
        for a in [
            "AttachVolume",
            "DetachVolume",
            "DeleteVolume",
            "DeleteSnapshot",
            "ModifyVolume",
        ] {
            assert_eq!(rule(a), Some(Rule::AfterStateCheck), "{a}");
        }
        for a in ["CreateSnapshot", "CreateSnapshots"] {
            assert_eq!(rule(a), Some(Rule::AfterLookup), "{a}");
            assert!(!blind_retry_safe(a));
        }
        // Unknown actions are never blind-safe.
        assert_eq!(rule("CreateImage"), None);
        assert!(!blind_retry_safe("CreateImage"));
    }

    #[test]
    fn only_server_and_transport_errors_are_ambiguous() {
        assert!(ambiguous(&CloudError::Unavailable("500".into())));
        assert!(!ambiguous(&CloudError::Throttled("503".into())));
        assert!(!ambiguous(&CloudError::InvalidParameter("400".into())));
        assert!(!ambiguous(&CloudError::NotFound("404".into())));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        for attempt in 1..20 {
            let d = backoff(attempt);
            let cap = (200u64 << (attempt - 1).min(6)).min(10_000);
            assert!(
                d.as_millis() as u64 >= cap / 2 && d.as_millis() as u64 <= cap,
                "{d:?}"
            );
        }
    }
}
