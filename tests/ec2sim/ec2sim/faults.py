"""Fault injection: make chosen actions fail or slow down, reproducibly.

A driver has to survive EC2's bad moments (throttling bursts, 500s, 503s, slow
answers, and 500s returned after the change was in fact made), and only an
emulator that produces them on demand lets tests prove it. SPEC syntax
(documented in README.md):

    SPEC  := RULE ("," RULE)*
    RULE  := ACTION ":" KIND [":" RATE [":" COUNT]]
    ACTION:= an EC2 action name (CreateVolume) or "*" for every action
    KIND  := throttle        -> 503 RequestLimitExceeded
           | internal        -> 500 InternalError (request not executed)
           | internal-after  -> request executed, then 500 InternalError
           | unavailable     -> 503 Unavailable
           | slow=<ms>       -> wait <ms> milliseconds, then answer normally
    RATE  := probability 0..1 that a matching request gets the fault (default 1)
    COUNT := stop after injecting this many times (default: no limit)

Rules are tried in order; the first rule whose action matches and whose dice
roll hits wins. Dice come from one random.Random seeded with --seed, so a run
with the same requests in the same order injects the same faults.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass

KINDS = ("throttle", "internal", "internal-after", "unavailable", "slow")


@dataclass
class Rule:
    action: str
    kind: str
    rate: float = 1.0
    slow_ms: int = 0
    count: int | None = None
    injected: int = 0

    def spec(self) -> str:
        kind = f"slow={self.slow_ms}" if self.kind == "slow" else self.kind
        out = f"{self.action}:{kind}:{self.rate:g}"
        if self.count is not None:
            out += f":{self.count}"
        return out


@dataclass
class Fault:
    kind: str
    slow_ms: int = 0


def parse_spec(spec: str | None) -> list[Rule]:
    """Parse a SPEC string; raises ValueError with a readable message."""
    rules: list[Rule] = []
    if not spec or spec.strip().lower() in ("", "none", "off"):
        return rules
    for raw in spec.split(","):
        raw = raw.strip()
        if not raw:
            continue
        parts = raw.split(":")
        if len(parts) < 2 or len(parts) > 4:
            raise ValueError(f"fault rule {raw!r}: expected Action:kind[:rate[:count]]")
        action, kind = parts[0].strip(), parts[1].strip()
        if not action:
            raise ValueError(f"fault rule {raw!r}: empty action")
        slow_ms = 0
        if kind.startswith("slow="):
            try:
                slow_ms = int(kind[5:])
            except ValueError:
                raise ValueError(f"fault rule {raw!r}: slow=<ms> needs an integer") from None
            if slow_ms < 0:
                raise ValueError(f"fault rule {raw!r}: negative delay")
            kind = "slow"
        elif kind not in KINDS or kind == "slow":
            raise ValueError(f"fault rule {raw!r}: kind must be one of {', '.join(KINDS[:-1])}, slow=<ms>")
        rate = 1.0
        if len(parts) >= 3 and parts[2].strip():
            try:
                rate = float(parts[2])
            except ValueError:
                raise ValueError(f"fault rule {raw!r}: rate must be a number") from None
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"fault rule {raw!r}: rate must be within 0..1")
        count = None
        if len(parts) == 4:
            try:
                count = int(parts[3])
            except ValueError:
                raise ValueError(f"fault rule {raw!r}: count must be an integer") from None
        rules.append(Rule(action, kind, rate, slow_ms, count))
    return rules


class FaultInjector:
    def __init__(self, spec: str | None = None, seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self.seed = seed
        self.rng = random.Random(seed)
        self.rules = parse_spec(spec)

    def configure(self, spec: str | None) -> None:
        rules = parse_spec(spec)
        with self._lock:
            self.rules = rules
            self.rng = random.Random(self.seed)

    def decide(self, action: str) -> Fault | None:
        with self._lock:
            for rule in self.rules:
                if rule.action != "*" and rule.action != action:
                    continue
                if rule.count is not None and rule.injected >= rule.count:
                    continue
                if rule.rate < 1.0 and self.rng.random() >= rule.rate:
                    continue
                rule.injected += 1
                return Fault(rule.kind, rule.slow_ms)
        return None

    def spec(self) -> str:
        with self._lock:
            return ",".join(r.spec() for r in self.rules)
