"""Control endpoints under /_sim/ for tests and benchmarks (JSON in, JSON out).

The prefix never clashes with EC2 (POST /) or IMDS (/latest/...). Endpoints:
  GET  /_sim/health          -> {"ok": true}
  GET  /_sim/counters        -> {"calls": {...}, "throttled": {...}, "faults": {...},
                                 "fault_kinds": {...}, "total_calls": N}
  POST /_sim/counters/reset  -> {"ok": true}
  POST /_sim/reset           -> all EC2 state back to just the local instance,
                                devices released, counters reset, buckets full;
                                answers with the ready-line object
  GET  /_sim/config          -> current delays, throttle and faults
  POST /_sim/config          -> body: any subset of
                                {"delays": "fast" | {"profile": .., "<key>": s},
                                 "throttle": {"enabled": b, "describe": {"burst", "rate"},
                                              "mutating": {...}},
                                 "faults": "SPEC"}; answers like GET /_sim/config
  GET  /_sim/state           -> volumes, snapshots, devices with simulated states
  GET  /_sim/events?since=T  -> {"events": [...], "now": wall time, "now_mono": ..,
                                 "dropped": N}: the transition log (events.py),
                                events with t > T (all without since)
  POST /_sim/events/reset    -> {"ok": true}; empties the transition log
  POST /_sim/devices/rescan  -> body {} or {"volume": "vol-..."}: re-read the partition
                                tables of the local devices (all, or that volume's) with
                                partx -u, refresh the <link>-partK links; answers
                                {"devices": {...}} as in GET /_sim/state (devices.py)
Errors answer 400 {"error": "..."}; unknown paths 404.
"""

from __future__ import annotations

import json
import math
import time
import urllib.parse
from collections.abc import Callable
from typing import Any


class Control:
    def __init__(self, sim: Any, ready_info: Callable[[], dict[str, Any]]) -> None:
        self.sim = sim
        self.ready_info = ready_info

    def config(self) -> dict[str, Any]:
        return {
            "delays": self.sim.delays.as_json(),
            "throttle": self.sim.throttler.describe(),
            "faults": self.sim.faults.spec(),
        }

    def apply_config(self, body: dict[str, Any]) -> None:
        unknown = set(body) - {"delays", "throttle", "faults"}
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        # Validate everything before changing anything.
        if "faults" in body:
            from .faults import parse_spec

            parse_spec(body["faults"])
        if "delays" in body:
            with self.sim.lock:
                self.sim.delays.configure(body["delays"])
        if "throttle" in body:
            throttle = body["throttle"]
            if isinstance(throttle, bool):
                throttle = {"enabled": throttle}
            if not isinstance(throttle, dict):
                raise ValueError("throttle must be an object or a boolean")
            self.sim.throttler.configure(throttle)
        if "faults" in body:
            self.sim.faults.configure(body["faults"])

    def events(self, query: str) -> dict[str, Any]:
        args = urllib.parse.parse_qs(query, keep_blank_values=True)
        unknown = set(args) - {"since"}
        if unknown:
            raise ValueError(f"unknown query parameters: {sorted(unknown)}")
        since = None
        if "since" in args:
            try:
                since = float(args["since"][-1])
            except ValueError:
                raise ValueError(f"since must be a number (seconds since the epoch), got {args['since'][-1]!r}") from None
            if math.isnan(since):
                raise ValueError("since must be a number, not NaN")
        sim = self.sim
        with sim.lock:
            # Run what is due up to now_mono first: every event with t <= now is then in
            # the log, so `since=<previous now>` never misses one (see events.py).
            now_mono = time.monotonic()
            sim.advance(now_mono)
            now = time.time() - (time.monotonic() - now_mono)
            events = sim.events.since(since)
            dropped = sim.events.dropped
        return {"events": events, "now": now, "now_mono": now_mono, "dropped": dropped}

    def rescan(self, body: dict[str, Any]) -> dict[str, Any]:
        unknown = set(body) - {"volume"}
        if unknown:
            raise ValueError(f"unknown keys: {sorted(unknown)}")
        volume = body.get("volume")
        if volume is not None and not isinstance(volume, str):
            raise ValueError("volume must be a volume id")
        try:
            return self.sim.devices.rescan(volume)
        except KeyError:
            raise ValueError(f"{volume} has no device here (not attached to the local instance, or devices off)") from None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "").rstrip("/")

        def reply(status: str, obj: Any) -> list[bytes]:
            data = json.dumps(obj, default=str).encode()
            start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
            return [data]

        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            raw = environ["wsgi.input"].read(length) if length else b""
            body = json.loads(raw) if raw.strip() else {}
            if not isinstance(body, dict):
                raise ValueError("body must be a JSON object")
        except ValueError as e:
            return reply("400 Bad Request", {"error": f"bad JSON body: {e}"})

        route = (method, path)
        try:
            if route == ("GET", "/_sim/health"):
                return reply("200 OK", {"ok": True})
            if route == ("GET", "/_sim/counters"):
                return reply("200 OK", self.sim.counters.as_json())
            if route == ("POST", "/_sim/counters/reset"):
                self.sim.counters.reset()
                return reply("200 OK", {"ok": True})
            if route == ("POST", "/_sim/reset"):
                self.sim.reset()
                return reply("200 OK", self.ready_info())
            if route == ("GET", "/_sim/config"):
                return reply("200 OK", self.config())
            if route == ("POST", "/_sim/config"):
                self.apply_config(body)
                return reply("200 OK", self.config())
            if route == ("GET", "/_sim/state"):
                return reply("200 OK", self.sim.describe_state())
            if route == ("GET", "/_sim/events"):
                return reply("200 OK", self.events(environ.get("QUERY_STRING", "")))
            if route == ("POST", "/_sim/devices/rescan"):
                return reply("200 OK", {"devices": self.rescan(body)})
            if route == ("POST", "/_sim/events/reset"):
                with self.sim.lock:
                    self.sim.events.clear()
                return reply("200 OK", {"ok": True})
        except ValueError as e:
            return reply("400 Bad Request", {"error": str(e)})
        return reply("404 Not Found", {"error": f"no control endpoint {method} {path}"})
