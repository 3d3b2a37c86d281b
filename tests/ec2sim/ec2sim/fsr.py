"""Fast snapshot restores (FSR): Enable / Describe / Disable, absent from moto.

The driver enables FSR for snapshots when a StorageClass asks for it; moto
answers these actions with an HTML 500. EC2's model, reproduced here: FSR is
per (snapshot, availability zone); enabling goes enabling -> optimizing ->
enabled, disabling goes disabling -> disabled (and the entry disappears from
Describe). Enable/Disable answer per item: `Successful` entries with the state
and its timestamps, `Unsuccessful` entries with per-zone errors (unknown
snapshot, unknown zone) instead of failing the whole call. States are computed
lazily from the times captured when the request was made, so a later change of
the delay profile does not move transitions already under way. Volumes created
from a snapshot whose FSR is `enabled` in their zone report FastRestored=true.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from moto.core.responses import ActionResult
from moto.core.utils import utcnow
from moto.ec2.utils import generic_filter

from .paging import paginate
from .sim import current

REASON_USER = "Client.UserInitiated"
REASON_LIFECYCLE = "Client.UserInitiated - Lifecycle state transition"


class FsrEntry:
    def __init__(self, snapshot: Any, zone: str, delays: Any) -> None:
        self.snapshot_id = snapshot.id
        self.availability_zone = zone
        self.owner_id = snapshot.owner_id
        self.owner_alias = getattr(snapshot, "owner_alias", None)
        self.t0 = time.monotonic()
        self.wall0 = utcnow()
        self.enable_s = delays["fsr_enable"]
        self.optimize_s = delays["fsr_optimize"]
        self.disable_t0: float | None = None
        self.disable_wall0 = None
        self.disable_s = 0.0

    def start_disable(self, delays: Any) -> None:
        if self.disable_t0 is None:
            self.disable_t0 = time.monotonic()
            self.disable_wall0 = utcnow()
            self.disable_s = delays["fsr_disable"]

    def state(self, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        if self.disable_t0 is not None:
            return "disabling" if now < self.disable_t0 + self.disable_s else "disabled"
        if now < self.t0 + self.enable_s:
            return "enabling"
        if now < self.t0 + self.enable_s + self.optimize_s:
            return "optimizing"
        return "enabled"

    def item(self) -> dict[str, Any]:
        """The API item (same members for Enable/Describe/Disable success items)."""
        state = self.state()
        out: dict[str, Any] = {
            "SnapshotId": self.snapshot_id,
            "AvailabilityZone": self.availability_zone,
            "State": state,
            "StateTransitionReason": REASON_USER if state in ("enabling", "disabling") else REASON_LIFECYCLE,
            "OwnerId": self.owner_id,
            "EnablingTime": self.wall0,
        }
        if self.owner_alias:
            out["OwnerAlias"] = self.owner_alias
        reached_opt = self.disable_t0 is not None or state in ("optimizing", "enabled")
        if reached_opt and (self.disable_t0 is None or self.disable_t0 >= self.t0 + self.enable_s):
            out["OptimizingTime"] = self.wall0 + timedelta(seconds=self.enable_s)
        enabled_at = self.t0 + self.enable_s + self.optimize_s
        if state == "enabled" or (self.disable_t0 is not None and self.disable_t0 >= enabled_at):
            out["EnabledTime"] = self.wall0 + timedelta(seconds=self.enable_s + self.optimize_s)
        if self.disable_t0 is not None:
            out["DisablingTime"] = self.disable_wall0
            if state == "disabled":
                out["DisabledTime"] = self.disable_wall0 + timedelta(seconds=self.disable_s)
        return out

    def get_filter_value(self, name: str, method_name: str | None = None) -> Any:
        return {
            "availability-zone": self.availability_zone,
            "owner-id": self.owner_id,
            "snapshot-id": self.snapshot_id,
            "state": self.state(),
        }.get(name)


def _purge(sim: Any) -> None:
    for key, entry in list(sim.fsr.items()):
        if entry.state() == "disabled":
            del sim.fsr[key]


def is_enabled(sim: Any, snapshot_id: str, zone: str | None) -> bool:
    entry = sim.fsr.get((snapshot_id, zone))
    return entry is not None and entry.state() == "enabled"


def forget_snapshot(sim: Any, snapshot_id: str) -> None:
    for key in [k for k in sim.fsr if k[0] == snapshot_id]:
        del sim.fsr[key]


def _errors(snapshot_id: str, zones: list[str], code: str, message: str) -> dict[str, Any]:
    return {
        "SnapshotId": snapshot_id,
        "FastSnapshotRestoreStateErrors": [
            {"AvailabilityZone": z, "Error": {"Code": code, "Message": message}} for z in zones
        ],
    }


def _split(self: Any) -> tuple[Any, list[str], list[str], list[dict[str, Any]], list[Any]]:
    """Common parameter handling: returns (sim, good zones, snapshot ids, unsuccessful, snapshots)."""
    sim = current()
    backend = self.ec2_backend
    zones = self._get_param("AvailabilityZones", [])
    snapshot_ids = self._get_param("SourceSnapshotIds", [])
    known_zones = {z.name for z in backend.describe_availability_zones()}
    bad_zones = [z for z in zones if z not in known_zones]
    good_zones = [z for z in zones if z in known_zones]
    unsuccessful: list[dict[str, Any]] = []
    snapshots = []
    for sid in snapshot_ids:
        snap = backend.snapshots.get(sid)
        if snap is None:
            unsuccessful.append(_errors(sid, zones, "InvalidSnapshot.NotFound", f"The snapshot '{sid}' does not exist."))
            continue
        if bad_zones:
            unsuccessful.append(
                _errors(sid, bad_zones, "InvalidParameterValue", f"Invalid availability zone: [{', '.join(bad_zones)}]")
            )
        snapshots.append(snap)
    return sim, good_zones, snapshot_ids, unsuccessful, snapshots


def enable_fast_snapshot_restores(self: Any) -> Any:
    sim, zones, _, unsuccessful, snapshots = _split(self)
    self.error_on_dryrun()
    _purge(sim)
    successful = []
    for snap in snapshots:
        for zone in zones:
            entry = sim.fsr.get((snap.id, zone))
            if entry is None or entry.disable_t0 is not None:
                entry = FsrEntry(snap, zone, sim.delays)
                sim.fsr[(snap.id, zone)] = entry
            successful.append(entry.item())
    return ActionResult({"Successful": successful, "Unsuccessful": unsuccessful})


def disable_fast_snapshot_restores(self: Any) -> Any:
    sim, zones, _, unsuccessful, snapshots = _split(self)
    self.error_on_dryrun()
    _purge(sim)
    successful = []
    for snap in snapshots:
        for zone in zones:
            entry = sim.fsr.get((snap.id, zone))
            if entry is None:
                item = {"SnapshotId": snap.id, "AvailabilityZone": zone, "State": "disabled",
                        "StateTransitionReason": REASON_USER, "OwnerId": snap.owner_id}
                successful.append(item)
                continue
            entry.start_disable(sim.delays)
            successful.append(entry.item())
    return ActionResult({"Successful": successful, "Unsuccessful": unsuccessful})


def describe_fast_snapshot_restores(self: Any) -> Any:
    sim = current()
    _purge(sim)
    entries = list(sim.fsr.values())
    filters = self._filters_from_querystring()
    if filters:
        entries = generic_filter(filters, entries)
    page, token = paginate(
        entries, self.params, key=lambda e: f"{e.snapshot_id}/{e.availability_zone}", cap=200, minimum=0
    )
    return ActionResult({"FastSnapshotRestores": [e.item() for e in page], "NextToken": token})
