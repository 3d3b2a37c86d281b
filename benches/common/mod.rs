//! What the benchmarks share: percentiles, the driver's memory and threads
//! from /proc, and the emulator's transition log (when EC2 changed a state,
//! so that a benchmark measures the lag from there to the RPC's return).

#![allow(dead_code)] // each benchmark uses a part

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::support::Ec2Sim;

/// The `p` quantile (0..=1) of `values`, sorting a copy; 0 when empty.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The number in environment variable `name`, or `default` when unset or
/// not a number (the benchmarks' knobs).
pub fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Wall-clock seconds since the epoch (the emulator's event clock).
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A `kB` field of /proc/PID/status in MiB (VmRSS, VmHWM); 0 if absent.
pub fn status_mib(pid: u32, key: &str) -> f64 {
    status_field(pid, key).map_or(0.0, |kb| kb / 1024.0)
}

/// The process's thread count.
pub fn threads(pid: u32) -> u64 {
    status_field(pid, "Threads").unwrap_or(0.0) as u64
}

/// VmRSS split as /proc/PID/status reports it: (anonymous, file-backed
/// — the binary's and libraries' pages touched —, shared memory), MiB.
pub fn rss_split(pid: u32) -> (f64, f64, f64) {
    let mib = |k| status_field(pid, k).unwrap_or(0.0) / 1024.0;
    (mib("RssAnon"), mib("RssFile"), mib("RssShmem"))
}

/// Proportional set size from /proc/PID/smaps_rollup: (Pss, Pss_Anon,
/// Pss_File), MiB — file pages shared with other processes (the binary's,
/// libc's) counted by share, which is what a node pays per process.
pub fn pss_split(pid: u32) -> (f64, f64, f64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(key) && l[key.len()..].starts_with(':'))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("Pss"), field("Pss_Anon"), field("Pss_File"))
}

fn status_field(pid: u32, key: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(key) && l[key.len()..].starts_with(':'))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// The emulator's transitions: (kind, id, to state) → when, epoch seconds.
/// The first of each is kept (a volume is created once, but attached as
/// many times as a benchmark attaches it: callers ask for the one after
/// a moment with [`Events::after`]).
pub struct Events {
    by_key: HashMap<(String, String, String), Vec<f64>>,
}

impl Events {
    /// Everything the emulator logged since its last reset.
    pub fn fetch(sim: &Ec2Sim) -> Events {
        let answer = sim.get("events");
        let mut by_key: HashMap<(String, String, String), Vec<f64>> = HashMap::new();
        for e in answer["events"].as_array().into_iter().flatten() {
            let text = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            let Some(t) = e["t"].as_f64() else { continue };
            by_key
                .entry((text("kind"), text("id"), text("to")))
                .or_default()
                .push(t);
        }
        for times in by_key.values_mut() {
            times.sort_by(|a, b| a.total_cmp(b));
        }
        assert_eq!(
            answer["dropped"].as_u64().unwrap_or(0),
            0,
            "the emulator's event log overflowed"
        );
        Events { by_key }
    }

    /// The first time `id` (of `kind`) reached `to` at or after `since`.
    pub fn after(&self, kind: &str, id: &str, to: &str, since: f64) -> Option<f64> {
        self.by_key
            .get(&(kind.to_string(), id.to_string(), to.to_string()))?
            .iter()
            .copied()
            .find(|t| *t >= since)
    }
}

/// Lags in milliseconds: each RPC's return minus when EC2 made the change
/// it waited for. Missing events are reported, not guessed.
pub fn lags_ms(events: &Events, kind: &str, to: &str, done: &[(String, f64, f64)]) -> Vec<f64> {
    let mut out = Vec::new();
    let mut missing = 0;
    for (id, started, returned) in done {
        match events.after(kind, id, to, *started) {
            Some(t) => out.push((returned - t) * 1000.0),
            None => missing += 1,
        }
    }
    if missing > 0 {
        eprintln!("  ({missing} {kind} → {to} events not found)");
    }
    out
}

/// `p50/p95` of lags, in milliseconds.
pub fn lag_cell(lags: &[f64]) -> String {
    if lags.is_empty() {
        return "-".into();
    }
    format!("{:.0}/{:.0}", percentile(lags, 0.5), percentile(lags, 0.95))
}

/// Milliseconds each successful EC2 call of `action` took, as the driver
/// logged them (`ec2 call` debug lines): the emulator's share of a lag.
pub fn ec2_call_ms(log: &str, action: &str) -> Vec<f64> {
    let quoted = format!("action=\"{action}\"");
    let bare = format!("action={action} ");
    log.lines()
        .filter(|l| l.contains(" ec2 call ") || l.ends_with(" ec2 call"))
        .filter(|l| l.contains(&quoted) || l.contains(&bare))
        .filter_map(|l| {
            let rest = &l[l.find(" ms=")? + 4..];
            let end = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            rest[..end].parse().ok()
        })
        .collect()
}

/// Sum of the emulator's per-action counts under `section` whose action
/// starts with `prefix` ("" for all).
pub fn counted(counters: &Value, section: &str, prefix: &str) -> u64 {
    counters[section]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, v)| v.as_u64().unwrap_or(0))
        .sum()
}

/// The `n` mappings of the process holding the most resident memory, as
/// (KiB, "path permissions"), from /proc/PID/smaps: where VmRSS goes.
pub fn top_mappings(pid: u32, n: usize) -> Vec<(u64, String)> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut by: HashMap<String, u64> = HashMap::new();
    let mut current = String::new();
    for line in smaps.lines() {
        let mut parts = line.split_whitespace();
        let first = parts.next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            let perms = parts.next().unwrap_or("");
            let path = parts.nth(3).unwrap_or("[anon]");
            current = format!("{path} {perms}");
        } else if first == "Rss:" {
            let kb: u64 = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            *by.entry(current.clone()).or_default() += kb;
        }
    }
    let mut top: Vec<(u64, String)> = by.into_iter().map(|(k, v)| (v, k)).collect();
    top.sort_by(|a, b| b.cmp(a));
    top.truncate(n);
    top
}
