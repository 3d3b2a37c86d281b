"""Per-action counters that tests and benchmarks read through /_sim/counters.

They answer questions such as "did the batcher really turn 100 DescribeVolumes
into a handful of calls?" or "did the driver back off after throttling?".
`calls` counts every EC2 request received, by action, including the ones that
were then throttled or answered with an injected fault; `throttled` counts the
requests refused by the token buckets; `faults` counts injected faults by action
and `fault_kinds` splits them by kind.
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from typing import Any


class Counters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.calls: Counter[str] = Counter()
            self.throttled: Counter[str] = Counter()
            self.faults: Counter[str] = Counter()
            self.fault_kinds: defaultdict[str, Counter[str]] = defaultdict(Counter)

    def call(self, action: str) -> None:
        with self._lock:
            self.calls[action] += 1

    def throttle(self, action: str) -> None:
        with self._lock:
            self.throttled[action] += 1

    def fault(self, action: str, kind: str) -> None:
        with self._lock:
            self.faults[action] += 1
            self.fault_kinds[action][kind] += 1

    def as_json(self) -> dict[str, Any]:
        with self._lock:
            return {
                "calls": dict(self.calls),
                "throttled": dict(self.throttled),
                "faults": dict(self.faults),
                "fault_kinds": {a: dict(k) for a, k in self.fault_kinds.items()},
                "total_calls": sum(self.calls.values()),
            }
