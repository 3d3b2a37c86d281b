"""CreateVolume / DeleteVolume / ModifyVolume / DescribeVolumes* as real EC2 answers them.

What moto lacks and this module adds:
  * ClientToken idempotency for CreateVolume: the same token with the same
    parameters returns the same volume (never a second one); the same token
    with different parameters is IdempotentParameterMismatch. The driver relies
    on this to make CreateVolume retries safe.
  * the `creating` state for a configurable time after CreateVolume;
  * EC2's size limits per volume type and zone validation;
  * snapshot checks on restore (pending snapshot -> IncorrectState, size
    smaller than the snapshot -> InvalidParameterValue) and the snapshot's bytes
    as the new volume's content (devices.py);
  * DeleteVolume of an attached volume (in any attachment state) -> VolumeInUse;
  * ModifyVolume as an asynchronous modification (modifying -> optimizing ->
    completed) that changes the volume's size/type/iops when it reaches
    `optimizing`, grows the real device then, and refuses a second
    modification while one is modifying or optimizing
    (IncorrectModificationState). EC2's 6-hour cooldown between modifications
    is deliberately not emulated (tests would have to wait hours);
  * DescribeVolumesModifications returning only the latest modification per
    volume, and InvalidVolumeModification.NotFound for a named volume that was
    never modified;
  * MaxResults / NextToken for DescribeVolumes and DescribeVolumesModifications.
"""

from __future__ import annotations

import json
import time
from typing import Any

from moto.core.responses import ActionResult
from moto.core.utils import utcnow
from moto.ec2.exceptions import EC2ClientError
from moto.ec2.responses.elastic_block_store import ElasticBlockStore
from moto.ec2.utils import generic_filter

from . import fsr
from .paging import paginate, validate
from .sim import current
from .states import lazy_progress

# EC2's documented size range per volume type, GiB.
SIZE_LIMITS = {
    "standard": (1, 1024),
    "gp2": (1, 16384),
    "gp3": (1, 65536),  # raised from 16 TiB to 64 TiB in 2025
    "io1": (4, 16384),
    "io2": (4, 65536),
    "st1": (125, 16384),
    "sc1": (125, 16384),
}

_orig_create_volume = ElasticBlockStore.create_volume
_orig_delete_volume = ElasticBlockStore.delete_volume


# --- model patches (installed by patches.py) ---------------------------------------
def volume_status(orig_status: Any) -> property:
    """Volume.status that reports `creating` until the volume's ready time."""

    def status(self: Any) -> str:
        if getattr(self, "_sim_deleted", False):
            return "deleted"
        ready = getattr(self, "_sim_ready_at", None)
        if ready is not None and time.monotonic() < ready:
            return "creating"
        return orig_status.fget(self)

    return property(status)


def find_volumes(backend: Any, volume_ids: list[str]) -> list[Any]:
    """Volumes by id with EC2's NotFound message naming only the missing ones."""
    missing = [v for v in volume_ids if v not in backend.volumes]
    if missing:
        raise EC2ClientError("InvalidVolume.NotFound", f"The volume '{', '.join(missing)}' does not exist.")
    return [backend.volumes[v] for v in volume_ids]


def check_size(size: int, volume_type: str) -> None:
    lo, hi = SIZE_LIMITS[volume_type]
    if size < lo:
        raise EC2ClientError("InvalidParameterValue", f"Volume of {size}GiB is too small; minimum is {lo}GiB.")
    if size > hi:
        raise EC2ClientError(
            "InvalidParameterValue",
            f"Volume of {size}GiB is too large for volume type {volume_type}; maximum is {hi}GiB.",
        )


def _check_type(volume_type: str) -> None:
    if volume_type not in SIZE_LIMITS:
        raise EC2ClientError(
            "InvalidParameterValue",
            f"Value ({volume_type}) for parameter volumeType is invalid. "
            f"Allowed values are [{', '.join(SIZE_LIMITS)}]",
        )


def _fingerprint(params: dict[str, Any]) -> str:
    rest = {k: v for k, v in params.items() if k not in ("ClientToken", "DryRun")}
    return json.dumps(rest, sort_keys=True, default=str)


# --- response methods (installed on moto's EC2Response by patches.py) ----------------
def create_volume(self: Any) -> Any:
    sim = current()
    backend = self.ec2_backend
    params = self.params
    token = params.get("ClientToken")
    if token:
        seen = sim.client_tokens.get(token)
        if seen is not None:
            fingerprint, volume = seen
            if fingerprint != _fingerprint(params):
                raise EC2ClientError(
                    "IdempotentParameterMismatch",
                    "The client token you have provided is associated with a resource that has "
                    "different parameters. Use a different client token or the same parameters.",
                )
            self.error_on_dryrun()
            return ActionResult(volume)

    zone = params.get("AvailabilityZone")
    if zone and backend.get_zone_by_name(zone) is None:
        raise EC2ClientError("InvalidZone.NotFound", f"The zone '{zone}' does not exist.")
    volume_type = params.get("VolumeType") or "gp2"
    _check_type(volume_type)
    size = params.get("Size")
    snapshot_id = params.get("SnapshotId")
    snapshot = None
    if snapshot_id:
        snapshot = backend.get_snapshot(snapshot_id)  # InvalidSnapshot.NotFound
        if snapshot.status != "completed":
            raise EC2ClientError("IncorrectState", f"Snapshot is in invalid state - {snapshot.status}")
        snap_size = snapshot.volume_size
        if size is not None and int(size) < snap_size:
            raise EC2ClientError(
                "InvalidParameterValue",
                f"Volume of size {size}GB is smaller than snapshot '{snapshot_id}', expect size >= {snap_size}GB",
            )
    if size is not None:
        check_size(int(size), volume_type)

    result = _orig_create_volume(self)  # moto validates the rest and honours DryRun
    volume = result.result
    if snapshot is not None and size is None:
        volume.size = snapshot.volume_size  # moto would read the live source volume
    volume._sim_ready_at = time.monotonic() + sim.delays["create"]
    if token:
        sim.client_tokens[token] = (_fingerprint(params), volume)
    if snapshot is not None:
        sim.devices.restore(snapshot.id, volume.id, volume.size)
        if fsr.is_enabled(sim, snapshot.id, volume.availability_zone):
            volume.fast_restored = True
    return result


def delete_volume(self: Any) -> Any:
    sim = current()
    volume_id = self._get_param("VolumeId")
    volume = self.ec2_backend.get_volume(volume_id)
    if volume.attachment is not None:
        raise EC2ClientError(
            "VolumeInUse", f"Volume {volume_id} is currently attached to {volume.attachment.instance.id}"
        )
    result = _orig_delete_volume(self)
    volume._sim_deleted = True
    sim.devices.delete_volume(volume_id)
    return result


def describe_volumes(self: Any) -> Any:
    filters = self._filters_from_querystring()
    volume_ids = self._get_param("VolumeIds", [])
    backend = self.ec2_backend
    validate(self.params, ids_param="VolumeIds", ids_name="volumeSet")
    volumes = find_volumes(backend, volume_ids) if volume_ids else list(backend.volumes.values())
    if filters:
        volumes = generic_filter(filters, volumes)
    page, token = paginate(
        volumes, self.params, key=lambda v: v.id, cap=500, ids_param="VolumeIds", ids_name="volumeSet"
    )
    return ActionResult({"Volumes": page, "NextToken": token})


# --- modifications -------------------------------------------------------------------
class SimModification:
    """One volume modification with EC2's fields; attribute names match the API shape."""

    def __init__(self, volume: Any, target: dict[str, Any], modify_s: float, optimize_s: float) -> None:
        self.volume = volume
        self.volume_id = volume.id
        self.original_size = volume.size
        self.original_volume_type = volume.volume_type
        self.original_iops = volume.iops
        self.original_throughput = volume.throughput
        self.original_multi_attach_enabled = bool(volume.multi_attach_enabled)
        self.target_size = target["size"]
        self.target_volume_type = target["type"]
        self.target_iops = target["iops"]
        self.target_throughput = target["throughput"]
        self.target_multi_attach_enabled = target["multi_attach"]
        self.start_time = utcnow()
        self.end_time = None
        self.status_message = None
        self.modification_state = "modifying"
        self._t0 = time.monotonic()
        self._modify_s = modify_s
        self._optimize_s = optimize_s

    @property
    def progress(self) -> int:
        if self.modification_state == "completed":
            return 100
        if self.modification_state == "modifying":
            return lazy_progress(self._t0, self._modify_s) // 2
        return 50 + lazy_progress(self._t0 + self._modify_s, self._optimize_s) // 2

    def get_filter_value(self, name: str, method_name: str | None = None) -> Any:
        return {
            "modification-state": self.modification_state,
            "volume-id": self.volume_id,
            "original-size": self.original_size,
            "original-volume-type": self.original_volume_type,
            "original-iops": self.original_iops,
            "original-multi-attach-enabled": str(self.original_multi_attach_enabled).lower(),
            "target-size": self.target_size,
            "target-volume-type": self.target_volume_type,
            "target-iops": self.target_iops,
            "target-throughput": self.target_throughput,
            "target-multi-attach-enabled": str(self.target_multi_attach_enabled).lower(),
            "start-time": self.start_time,
        }.get(name)


def _optimizing(sim: Any, mod: SimModification) -> None:
    """modifying -> optimizing: the new configuration takes effect (EC2: usable now)."""
    vol = mod.volume
    if getattr(vol, "_sim_deleted", False) or not vol.modifications or vol.modifications[-1] is not mod:
        return
    grew = mod.target_size > vol.size
    vol.size = mod.target_size
    vol.volume_type = mod.target_volume_type
    vol.iops = mod.target_iops
    vol.throughput = mod.target_throughput
    vol.multi_attach_enabled = mod.target_multi_attach_enabled
    mod.modification_state = "optimizing"
    if grew:
        sim.devices.grow(vol.id, vol.size)


def _completed(mod: SimModification) -> None:
    if mod.modification_state == "optimizing":
        mod.modification_state = "completed"
        mod.end_time = utcnow()


def modify_volume(self: Any) -> Any:
    sim = current()
    params = self.params
    volume = self.ec2_backend.get_volume(params.get("VolumeId"))
    if volume.status not in ("available", "in-use"):
        raise EC2ClientError("IncorrectState", f"Volume '{volume.id}' is in the '{volume.status}' state.")
    if volume.modifications and volume.modifications[-1].modification_state in ("modifying", "optimizing"):
        state = volume.modifications[-1].modification_state
        raise EC2ClientError(
            "IncorrectModificationState",
            f"Volume {volume.id} is already being modified (modification state '{state}'); "
            "a new modification is accepted once it is completed.",
        )
    size, vtype = params.get("Size"), params.get("VolumeType")
    iops, throughput = params.get("Iops"), params.get("Throughput")
    multi = params.get("MultiAttachEnabled")
    if size is None and vtype is None and iops is None and throughput is None and multi is None:
        raise EC2ClientError(
            "MissingParameter", "At least one of size, volumeType, iops, throughput or multiAttachEnabled is required."
        )
    target_type = vtype or volume.volume_type
    _check_type(target_type)
    target_size = int(size) if size is not None else volume.size
    if target_size < volume.size:
        raise EC2ClientError(
            "InvalidParameterValue",
            f"New size cannot be smaller than existing size: {target_size}GiB < {volume.size}GiB.",
        )
    check_size(target_size, target_type)
    target_iops = int(iops) if iops is not None else volume.iops
    target_tp = int(throughput) if throughput is not None else volume.throughput
    if target_type == "gp3":
        target_iops = target_iops or 3000
        target_tp = target_tp or 125
    elif target_type not in ("io1", "io2"):
        target_iops = None if target_type != "gp2" else max(100, min(16000, 3 * target_size))
        target_tp = None
    self.error_on_dryrun()
    mod = SimModification(
        volume,
        {
            "size": target_size,
            "type": target_type,
            "iops": target_iops,
            "throughput": target_tp,
            "multi_attach": bool(multi) if multi is not None else bool(volume.multi_attach_enabled),
        },
        sim.delays["modify"],
        sim.delays["optimize"],
    )
    volume.modifications = [mod]  # EC2 reports only the latest modification
    t1 = mod._t0 + mod._modify_s
    sim.scheduler.at(t1, lambda: _optimizing(sim, mod))
    sim.scheduler.at(t1 + mod._optimize_s, lambda: _completed(mod))
    return ActionResult({"VolumeModification": mod})


def describe_volumes_modifications(self: Any) -> Any:
    volume_ids = self._get_param("VolumeIds", [])
    filters = self._filters_from_querystring()
    backend = self.ec2_backend
    if volume_ids:
        volumes = find_volumes(backend, volume_ids)
        for v in volumes:
            if not v.modifications:
                raise EC2ClientError(
                    "InvalidVolumeModification.NotFound", f"Modification for volume '{v.id}' does not exist."
                )
    else:
        volumes = list(backend.volumes.values())
    mods = [v.modifications[-1] for v in volumes if v.modifications]
    if filters:
        mods = generic_filter(filters, mods)
    page, token = paginate(mods, self.params, key=lambda m: m.volume_id, cap=500)
    return ActionResult({"VolumesModifications": page, "NextToken": token})
