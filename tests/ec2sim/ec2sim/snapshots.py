"""Snapshots as EC2 has them: pending for a while, with bytes, listed page by page.

moto creates snapshots `completed` at once, reports the source volume's live
size (a snapshot taken before a resize would "grow"), ignores OwnerIds,
MaxResults and NextToken, and lists the snapshots behind its ~1300 built-in
AMIs as if they were ours. This module makes snapshots:
  * `pending` with a progress percentage for the `snapshot` delay, then
    `completed` (computed lazily from timestamps);
  * remember the volume size at creation time;
  * keep the volume's bytes at the moment CreateSnapshot was answered (a
    point-in-time sparse copy, devices.py), as EBS snapshots are crash
    consistent at that instant;
  * listed the way an account sees them: its own, public ones, and ones shared
    with it; OwnerIds ("self", account ids) honoured; MaxResults / NextToken
    with EC2's rules (cap 1000).
DeleteSnapshot also removes the bytes and any fast snapshot restore state.
CreateSnapshots honours ExcludeDataVolumeIds (moto snapshots every volume).
"""

from __future__ import annotations

import time
from typing import Any

from moto.core.responses import ActionResult
from moto.ec2.exceptions import EC2ClientError
from moto.ec2.responses.elastic_block_store import ElasticBlockStore
from moto.ec2.utils import generic_filter

from . import fsr
from .paging import paginate, validate
from .sim import current
from .states import lazy_progress

_orig_create_snapshot = ElasticBlockStore.create_snapshot
_orig_create_snapshots = ElasticBlockStore.create_snapshots
_orig_delete_snapshot = ElasticBlockStore.delete_snapshot


# --- model patches (installed by patches.py) ---------------------------------------
def _status_get(self: Any) -> str:
    stored = self.__dict__.get("_moto_status", "completed")
    started = self.__dict__.get("_sim_started")
    if stored == "completed" and started is not None:
        if time.monotonic() < started + self.__dict__.get("_sim_duration", 0.0):
            return "pending"
    return stored


def _status_set(self: Any, value: str) -> None:
    self.__dict__["_moto_status"] = value


def _progress(self: Any) -> str:
    started = self.__dict__.get("_sim_started")
    if started is None:
        return "100%"
    return f"{lazy_progress(started, self.__dict__.get('_sim_duration', 0.0))}%"


def _volume_size(self: Any) -> int:
    size = self.__dict__.get("_sim_volume_size")
    return size if size is not None else self.volume.size


SNAPSHOT_PROPERTIES = {
    "status": property(_status_get, _status_set),
    "progress": property(_progress),
    "volume_size": property(_volume_size),
}


def _start(sim: Any, snapshot: Any) -> None:
    snapshot._sim_volume_size = snapshot.volume.size
    snapshot._sim_duration = sim.delays["snapshot"]
    t0 = snapshot._sim_started = time.monotonic()
    sim.devices.snapshot(snapshot.volume.id, snapshot.id)
    sim.events.record("snapshot", snapshot.id, None, "pending", at=t0, volume=snapshot.volume.id)
    due = t0 + snapshot._sim_duration

    def completed() -> None:  # the state itself is computed lazily; this only logs it at its due time
        if sim.backend.snapshots.get(snapshot.id) is snapshot and snapshot.status == "completed":
            sim.events.record("snapshot", snapshot.id, "pending", "completed", at=due, volume=snapshot.volume.id)

    sim.scheduler.at(due, completed)


# --- response methods ------------------------------------------------------------------
def create_snapshot(self: Any) -> Any:
    sim = current()
    volume = self.ec2_backend.get_volume(self._get_param("VolumeId"))
    if volume.status == "creating":
        raise EC2ClientError("IncorrectState", f"Volume '{volume.id}' is in the 'creating' state.")
    result = _orig_create_snapshot(self)
    _start(sim, result.result)
    return result


def _excluded_data_volumes(spec: Any) -> set[str]:
    """ExcludeDataVolumeIds of an InstanceSpecification, however moto parsed
    the query list (`ExcludeDataVolumeId.N`: a list or an index dict)."""
    out: set[str] = set()
    if not isinstance(spec, dict):
        return out
    for key, value in spec.items():
        if not key.startswith("ExcludeDataVolumeId"):
            continue
        if isinstance(value, str):
            out.add(value)
        elif isinstance(value, dict):
            out.update(v for v in value.values() if isinstance(v, str))
        elif isinstance(value, (list, tuple)):
            out.update(v for v in value if isinstance(v, str))
    return out


# Where moto attaches the root volume it makes for every instance, whatever
# root device name the AMI declares.
MOTO_ROOT_DEVICE = "/dev/sda1"


def create_snapshots(self: Any) -> Any:
    """moto ignores ExcludeDataVolumeIds, and recognises the boot volume only
    when it sits at the AMI's root device name (it attaches it at /dev/sda1
    whatever the AMI says). EC2 leaves both out, so their snapshots are
    dropped here before anyone sees them."""
    sim = current()
    spec = self._get_param("InstanceSpecification", {})
    excluded = _excluded_data_volumes(spec)
    if str(spec.get("ExcludeBootVolume", False)).lower() == "true":
        instance = self.ec2_backend.get_instance(spec.get("InstanceId"))
        roots = {instance.root_device_name, MOTO_ROOT_DEVICE}
        excluded.update(m.volume_id for k, m in instance.get_block_device_mapping if k in roots)
    result = _orig_create_snapshots(self)
    kept = []
    for snap in result.result["Snapshots"]:
        if snap.volume.id in excluded:
            self.ec2_backend.snapshots.pop(snap.id, None)
            continue
        _start(sim, snap)
        kept.append(snap)
    result.result["Snapshots"] = kept
    return result


def delete_snapshot(self: Any) -> Any:
    sim = current()
    snapshot_id = self._get_param("SnapshotId")
    snap = self.ec2_backend.snapshots.get(snapshot_id)
    state = snap.status if snap is not None else None
    result = _orig_delete_snapshot(self)
    sim.events.record("snapshot", snapshot_id, state, "deleted")
    sim.devices.delete_snapshot(snapshot_id)
    fsr.forget_snapshot(sim, snapshot_id)
    return result


def visible(snapshot: Any, account_id: str) -> bool:
    return (
        snapshot.owner_id == account_id
        or "all" in snapshot.create_volume_permission_groups
        or account_id in snapshot.create_volume_permission_userids
    )


def describe_snapshots(self: Any) -> Any:
    backend = self.ec2_backend
    account = backend.account_id
    filters = self._filters_from_querystring()
    snapshot_ids = self._get_param("SnapshotIds", [])
    owner_ids = self._get_param("OwnerIds", [])
    restorable_by = self._get_param("RestorableByUserIds", [])
    validate(self.params, ids_param="SnapshotIds", ids_name="snapshotSet")
    if snapshot_ids:
        missing = [s for s in snapshot_ids if s not in backend.snapshots]
        if missing:
            raise EC2ClientError("InvalidSnapshot.NotFound", f"The snapshot '{', '.join(missing)}' does not exist.")
        snapshots = [backend.snapshots[s] for s in snapshot_ids]
    else:
        snapshots = [s for s in backend.snapshots.values() if visible(s, account)]
    if owner_ids:
        owners = {account if o == "self" else o for o in owner_ids}
        snapshots = [
            s for s in snapshots if s.owner_id in owners or getattr(s, "owner_alias", None) in owners
        ]
    if restorable_by:
        users = {account if u == "self" else u for u in restorable_by}
        snapshots = [
            s
            for s in snapshots
            if s.owner_id in users
            or "all" in s.create_volume_permission_groups
            or users & s.create_volume_permission_userids
        ]
    if filters:
        snapshots = generic_filter(filters, snapshots)
    page, token = paginate(
        snapshots, self.params, key=lambda s: s.id, cap=1000, ids_param="SnapshotIds", ids_name="snapshotSet"
    )
    return ActionResult({"Snapshots": page, "NextToken": token})
