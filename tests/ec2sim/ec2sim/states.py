"""Delay profiles and the scheduler behind EC2's asynchronous state machines.

Real EC2 answers a CreateVolume with `creating` and the volume becomes
`available` seconds later; attachments go attaching -> attached, detachments
detaching -> gone, snapshots pending -> completed, modifications
modifying -> optimizing -> completed. A driver that does not wait for these
passes against moto and fails on AWS, so the layer plays them out with
configurable durations.

Two mechanisms, both cheap with hundreds of resources and neither sleeping:
  * transitions without side effects (volume creating, snapshot pending,
    fast snapshot restore states, progress percentages) are computed lazily
    from timestamps when a resource is read;
  * transitions with side effects (a loop device appearing when an attachment
    becomes `attached`, the device and moto's attachment going away when a
    detach completes, the volume growing when a modification reaches
    `optimizing`) are due events on a heap. The front runs due events under the
    backend lock before handling every EC2 request, and a light ticker runs them
    between requests, so a device exists before any DescribeVolumes can report
    its attachment as `attached`.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("ec2sim.states")

# Seconds per transition. `none` is moto as it is (everything immediate);
# `fast` keeps every intermediate state observable for tests at a cost of tens
# to a few hundred milliseconds; `realistic` uses the order of magnitude EC2
# shows for small volumes.
PROFILES: dict[str, dict[str, float]] = {
    "none": {
        "create": 0.0, "attach": 0.0, "detach": 0.0, "snapshot": 0.0,
        "modify": 0.0, "optimize": 0.0,
        "fsr_enable": 0.0, "fsr_optimize": 0.0, "fsr_disable": 0.0,
    },
    "fast": {
        "create": 0.2, "attach": 0.15, "detach": 0.15, "snapshot": 0.3,
        "modify": 0.2, "optimize": 0.3,
        "fsr_enable": 0.1, "fsr_optimize": 0.1, "fsr_disable": 0.1,
    },
    "realistic": {
        "create": 3.0, "attach": 5.0, "detach": 5.0, "snapshot": 10.0,
        "modify": 6.0, "optimize": 20.0,
        "fsr_enable": 5.0, "fsr_optimize": 15.0, "fsr_disable": 5.0,
    },
}


class Delays:
    """The active delay table: a profile name plus optional per-key overrides.

    `jitter` (a fraction, 0 by default) spreads every delay drawn from the
    table uniformly over ±jitter of its value, from a generator seeded by
    `seed`, so runs repeat. Real EC2's transitions vary by seconds; with
    every attach taking exactly 5 s, a driver polling on a fixed grid sees
    each transition at the same phase of its grid, and a lag measured
    against it reflects that coincidence rather than the polling.
    """

    def __init__(self, profile: str = "fast") -> None:
        self.profile = "fast"
        self.table = dict(PROFILES["fast"])
        self.jitter = 0.0
        self.seed = 0
        self._rng = random.Random(0)
        self.configure(profile)

    def configure(self, spec: Any) -> None:
        """Accept a profile name, or {"profile": name, "jitter": fraction,
        "seed": int, <key>: seconds, ...}."""
        if isinstance(spec, str):
            spec = {"profile": spec}
        if not isinstance(spec, dict):
            raise ValueError("delays must be a profile name or an object")
        table = dict(self.table)
        profile = self.profile
        jitter, seed = self.jitter, self.seed
        if "profile" in spec:
            profile = spec["profile"]
            if profile not in PROFILES:
                raise ValueError(f"unknown delay profile {profile!r} (none, fast, realistic)")
            table = dict(PROFILES[profile])
            jitter = 0.0
        for key, value in spec.items():
            if key == "profile":
                continue
            if key == "jitter":
                jitter = float(value)
                if not 0.0 <= jitter < 1.0:
                    raise ValueError(f"delay jitter {value!r} must be a fraction in [0, 1)")
                continue
            if key == "seed":
                seed = int(value)
                continue
            if key not in table:
                raise ValueError(f"unknown delay key {key!r}; known: {sorted(table)} (and jitter, seed)")
            if float(value) < 0:
                raise ValueError(f"delay {key} must be >= 0")
            table[key] = float(value)
        self.profile, self.table = profile, table
        if (jitter, seed) != (self.jitter, self.seed) or "seed" in spec:
            self._rng = random.Random(seed)
        self.jitter, self.seed = jitter, seed

    def __getitem__(self, key: str) -> float:
        base = self.table[key]
        if self.jitter == 0.0 or base == 0.0:
            return base
        return base * (1.0 + self._rng.uniform(-self.jitter, self.jitter))

    def as_json(self) -> dict[str, Any]:
        return {"profile": self.profile, **self.table, "jitter": self.jitter, "seed": self.seed}


def lazy_progress(start: float, duration: float, now: float | None = None) -> int:
    """Percent done of a timed phase, 0..100."""
    now = time.monotonic() if now is None else now
    if duration <= 0 or now >= start + duration:
        return 100
    return max(0, min(99, int((now - start) * 100 / duration)))


class Scheduler:
    """A heap of due callbacks. Not thread safe: callers hold the backend lock."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()

    def at(self, due: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._heap, (due, next(self._seq), fn))

    def after(self, seconds: float, fn: Callable[[], None]) -> None:
        self.at(time.monotonic() + seconds, fn)

    def next_due(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def run_due(self, now: float | None = None) -> int:
        now = time.monotonic() if now is None else now
        ran = 0
        while self._heap and self._heap[0][0] <= now:
            _, _, fn = heapq.heappop(self._heap)
            ran += 1
            try:
                fn()
            except Exception:  # a broken transition must not wedge the others
                log.exception("scheduled transition failed")
        return ran

    def clear(self) -> None:
        self._heap.clear()

    def __len__(self) -> int:
        return len(self._heap)
