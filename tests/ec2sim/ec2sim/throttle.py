"""Per-account request throttling the way EC2 does it: token buckets per action class.

EC2 meters API calls per account and region with token buckets ("request
token bucket"): every call takes one token, an empty bucket answers
RequestLimitExceeded (HTTP 503), and the bucket refills at a fixed rate up to its
burst size. AWS documents the defaults used here:

  non-mutating (Describe*, Get*, List*, Search*): burst 100, refill 20/s
  mutating (every other action the driver calls):  burst 200, refill 5/s

(CopyVolumes is mutating: it falls in the second class by name.)

A driver that polls DescribeVolumes in a tight loop, or retries without
backoff, runs into this on real EC2; moto never throttles, so the layer does.
Test-setup actions (RunInstances and friends) are left unthrottled so that a
test preparing its world does not eat the driver's budget; this is documented
in README.md.
"""

from __future__ import annotations

import threading
import time
from typing import Any

DEFAULTS = {
    "describe": {"burst": 100.0, "rate": 20.0},
    "mutating": {"burst": 200.0, "rate": 5.0},
}

NON_MUTATING_PREFIXES = ("Describe", "Get", "List", "Search")
UNTHROTTLED = frozenset(
    {"RunInstances", "TerminateInstances", "StartInstances", "StopInstances", "RebootInstances"}
)


def action_class(action: str) -> str | None:
    """Bucket name for an action, or None when the action is never throttled."""
    if action in UNTHROTTLED:
        return None
    if action.startswith(NON_MUTATING_PREFIXES):
        return "describe"
    return "mutating"


class TokenBucket:
    """Classic token bucket; refills lazily from the monotonic clock."""

    def __init__(self, burst: float, rate: float) -> None:
        self.burst = float(burst)
        self.rate = float(rate)
        self.tokens = float(burst)
        self.stamp = time.monotonic()
        self.lock = threading.Lock()

    def _refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self) -> bool:
        with self.lock:
            self._refill(time.monotonic())
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return True
            return False

    def snapshot(self) -> dict[str, float]:
        with self.lock:
            self._refill(time.monotonic())
            return {"burst": self.burst, "rate": self.rate, "tokens": round(self.tokens, 3)}


class Throttler:
    """The account's buckets plus the on/off switch; safe to call from any thread."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.buckets = {name: TokenBucket(**cfg) for name, cfg in DEFAULTS.items()}
        self._lock = threading.Lock()

    def allow(self, action: str) -> bool:
        if not self.enabled:
            return True
        cls = action_class(action)
        if cls is None:
            return True
        return self.buckets[cls].take()

    def configure(self, cfg: dict[str, Any]) -> None:
        """Apply {"enabled": bool, "describe": {"burst", "rate"}, "mutating": {...}}.

        A bucket whose burst or rate is given is rebuilt full, so a test that
        changes limits starts from a known state.
        """
        with self._lock:
            if "enabled" in cfg:
                self.enabled = bool(cfg["enabled"])
            for name in DEFAULTS:
                if name in cfg and cfg[name] is not None:
                    cur = self.buckets[name]
                    burst = float(cfg[name].get("burst", cur.burst))
                    rate = float(cfg[name].get("rate", cur.rate))
                    if burst < 1 or rate < 0:
                        raise ValueError(f"bad {name} bucket: burst>=1 and rate>=0 needed")
                    self.buckets[name] = TokenBucket(burst, rate)
            unknown = set(cfg) - {"enabled", *DEFAULTS}
            if unknown:
                raise ValueError(f"unknown throttle keys: {sorted(unknown)}")

    def refill(self) -> None:
        """Fill every bucket (used by /_sim/reset)."""
        with self._lock:
            for name, b in list(self.buckets.items()):
                self.buckets[name] = TokenBucket(b.burst, b.rate)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"enabled": self.enabled}
        for name, b in self.buckets.items():
            out[name] = b.snapshot()
        return out
