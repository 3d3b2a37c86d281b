"""The transition log: every simulated state change, stamped with the instant it happened.

Benchmarks of the driver need the lag between EC2's state change (a volume
becoming `available`, an attachment `attached`, ...) and the driver's RPC
returning; the driver only sees EC2 through polls on ticks, so the emulator
has to say when each change happened. Served as GET /_sim/events (control.py).

What "happened" means: the instant from which every EC2 request sees the new
state. For transitions computed lazily from timestamps (volume `creating` ->
`available`, snapshot `pending` -> `completed`) that is their due time, and the
layer schedules a recording callback at that due time that stamps the event
with the due time itself, not with the moment the callback (or a first
Describe) ran. For due events with side effects (attach, detach, modification
phases) it is also the due time: the front runs due events before serving any
request, so no request after the due time can see the old state. Changes made
by a request itself (CreateVolume -> `creating`, AttachVolume -> `attaching`,
deletions) are stamped with the instant the request made them.

Each event is a dict:
  {"t": wall-clock seconds (time.time() scale) of the instant,
   "mono": the same instant on the simulator's time.monotonic() clock,
   "seq": 1, 2, ... in recording order (restarts at 1 after a reset); answers
          list events in time order, which can differ from seq order by a hair,
   "kind": "volume" | "attachment" | "snapshot" | "modification",
   "id": "vol-…" | "snap-…" (modifications: the volume id),
   "from": previous state or null (the resource is new),
   "to": new state ("deleted" for deletions, "detached" when an attachment is gone),
   ...extra members per kind: "instance" and "device" (attachments),
   "action" (volume creation: CreateVolume | CopyVolumes), "source" (copies),
   "snapshot" (volumes restored from one), "volume" (snapshots)}

`t` is derived from `mono` when the event is recorded (wall now minus the
monotonic distance back to the instant), so t and mono of one event describe
the same instant even for events recorded a tick after they were due.

The log is bounded (the newest MAX_EVENTS are kept; `dropped` counts the rest)
and is emptied by /_sim/reset and POST /_sim/events/reset. Every recording
happens under Sim.lock (patched moto methods and due callbacks run under it),
and the control endpoint runs due transitions under that lock before it reads,
so a poller that passes the previous answer's `now` as `since` misses nothing.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from typing import Any

MAX_EVENTS = 100_000


class EventLog:
    def __init__(self, max_events: int = MAX_EVENTS) -> None:
        self._lock = threading.Lock()
        self.max_events = max_events
        self.clear()

    def clear(self) -> None:
        with self._lock:
            self._events: deque[dict[str, Any]] = deque(maxlen=self.max_events)
            self._seq = itertools.count(1)
            self.dropped = 0

    def record(self, kind: str, rid: str, frm: str | None, to: str, at: float | None = None,
               **extra: Any) -> dict[str, Any]:
        """Append one transition. `at`: its instant on time.monotonic() (default: now)."""
        now_mono = time.monotonic()
        now_wall = time.time()
        mono = now_mono if at is None else at
        event: dict[str, Any] = {
            "t": now_wall - (now_mono - mono),
            "mono": mono,
            "kind": kind,
            "id": rid,
            "from": frm,
            "to": to,
        }
        event.update({k: v for k, v in extra.items() if v is not None})
        with self._lock:
            event["seq"] = next(self._seq)
            if len(self._events) == self.max_events:
                self.dropped += 1
            self._events.append(event)
        return event

    def since(self, t: float | None = None) -> list[dict[str, Any]]:
        """Events whose t is strictly greater than `t` (all when None), in time order.

        The log is nearly in time order already; a due transition whose instant fell
        between the front's run of due events and a request's own change is recorded
        just after that change, so sort (stable, linear on sorted input).
        """
        with self._lock:
            out = list(self._events) if t is None else [e for e in self._events if e["t"] > t]
        out.sort(key=lambda e: e["mono"])
        return out

    def __len__(self) -> int:
        return len(self._events)

