"""CreateVolume / CopyVolumes / DeleteVolume / ModifyVolume / DescribeVolumes* as real EC2 answers them.

What moto lacks and this module adds:
  * ClientToken idempotency for CreateVolume: the same token with the same
    parameters returns the same volume (never a second one); the same token
    with different parameters is IdempotentParameterMismatch. The driver relies
    on this to make CreateVolume retries safe.
  * the `creating` state for a configurable time after CreateVolume;
  * CopyVolumes, which moto lacks (the driver clones volumes with it): a copy
    of a volume in its zone with its bytes, the same ClientToken rules, see
    copy_volumes below for the EC2 facts and their sources;
  * EC2's size limits per volume type and zone validation;
  * snapshot checks on restore (pending snapshot -> IncorrectState, size
    smaller than the snapshot -> InvalidParameterValue) and the snapshot's bytes
    as the new volume's content (devices.py);
  * VolumeInitializationRate (moto ignores it): checked, kept on the volume and
    reported as `volumeInitializationRate`, see check_initialization_rate;
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
Every state change is also written to the transition log (events.py).
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


# --- Provisioned Rate for Volume Initialization ------------------------------------
# EC2 facts (CreateVolume API reference,
# https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateVolume.html, the
# same text as botocore 1.44.5's and aws-sdk-ec2 1.274.0's model docs; EBS user guide
# https://docs.aws.amazon.com/ebs/latest/userguide/initalize-volume.html#volume-initialization-rate):
#   * "Valid range: 100 - 300 MiB/s";
#   * "This parameter is supported only for volumes created from snapshots";
#   * "If you specify a snapshot that is enabled for fast snapshot restore and a volume
#     initialization rate, the volume will be initialized at the specified rate instead
#     of fast snapshot restore": such a volume is not FastRestored;
#   * Volume.VolumeInitializationRate (XML `volumeInitializationRate`, what
#     aws-sdk-ec2's shape_volume.rs and shape_create_volume.rs parse): "specified for the
#     volume during creation, in MiB/s. If no volume initialization rate was specified,
#     the value is null" (the member is then absent);
#   * CopyVolumes has no such parameter (absent from its API reference and from both
#     SDK models), and the user guide says "Volume initialization rate and fast snapshot
#     restore are not supported for volume copies".
# The error codes are EC2's generic ones for these cases (API error codes,
# https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html):
# InvalidParameterCombination "an incorrect combination of parameters, or a missing
# parameter" for a rate without SnapshotId (AWS answers it with a 400 and the upstream
# driver's issue kubernetes-sigs/aws-ebs-csi-driver#2691 saw it as an invalid
# argument); InvalidParameterValue for a value outside the range; UnknownParameter
# for a parameter the action does not have. AWS documents no message text for
# these, so the messages below are ours.
INIT_RATE_RANGE = (100, 300)  # MiB/s


def check_initialization_rate(rate: Any, snapshot_id: str | None) -> int | None:
    """CreateVolume's VolumeInitializationRate, validated (None when not given)."""
    if rate is None:
        return None
    if not snapshot_id:
        raise EC2ClientError(
            "InvalidParameterCombination",
            "The parameter VolumeInitializationRate is supported only for volumes created from a snapshot; "
            "specify SnapshotId or omit VolumeInitializationRate.",
        )
    lo, hi = INIT_RATE_RANGE
    try:
        value = int(rate)
    except (TypeError, ValueError):
        value = None
    if value is None or not lo <= value <= hi:
        raise EC2ClientError(
            "InvalidParameterValue",
            f"Value ({rate}) for parameter VolumeInitializationRate is invalid. "
            f"The volume initialization rate must be between {lo} and {hi} MiB/s.",
        )
    return value


def _fingerprint(params: dict[str, Any]) -> str:
    rest = {k: v for k, v in params.items() if k not in ("ClientToken", "DryRun")}
    return json.dumps(rest, sort_keys=True, default=str)


# --- ClientToken idempotency (CreateVolume, CopyVolumes) -------------------------------
_MISMATCH = (
    "The client token you have provided is associated with a resource that has "
    "different parameters. Use a different client token or the same parameters."
)


def _token_key(action: str, token: str) -> Any:
    # CreateVolume keeps the bare token as its key (as before); other actions get
    # their own namespace: EC2's idempotency guide ties a token to "the request"
    # it was used for and says not to reuse it for other API requests, without
    # saying what a reuse across actions answers, so actions do not collide here.
    return token if action == "CreateVolume" else (action, token)


def _replayed(sim: Any, action: str, params: dict[str, Any]) -> Any:
    """The volume an earlier request with this ClientToken made, or None (first use).

    Same token, different parameters (ClientToken and DryRun aside) ->
    IdempotentParameterMismatch, as EC2's idempotency guide documents
    (https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-idempotency.html).
    """
    token = params.get("ClientToken")
    if not token:
        return None
    seen = sim.client_tokens.get(_token_key(action, token))
    if seen is None:
        return None
    fingerprint, volume = seen
    if fingerprint != _fingerprint(params):
        raise EC2ClientError("IdempotentParameterMismatch", _MISMATCH)
    return volume


def _remember(sim: Any, action: str, params: dict[str, Any], volume: Any) -> None:
    token = params.get("ClientToken")
    if token:
        sim.client_tokens[_token_key(action, token)] = (_fingerprint(params), volume)


def _start_creating(sim: Any, volume: Any, action: str, **extra: Any) -> None:
    """`creating` for the `create` delay; the change to `available` is logged at its due time."""
    t0 = time.monotonic()
    due = t0 + sim.delays["create"]
    volume._sim_ready_at = due
    sim.events.record("volume", volume.id, None, "creating", at=t0, action=action, **extra)

    def ready() -> None:
        if getattr(volume, "_sim_deleted", False) or sim.backend.volumes.get(volume.id) is not volume:
            return
        sim.events.record("volume", volume.id, "creating", "available", at=due, action=action)

    sim.scheduler.at(due, ready)


# --- response methods (installed on moto's EC2Response by patches.py) ----------------
def create_volume(self: Any) -> Any:
    sim = current()
    backend = self.ec2_backend
    params = self.params
    replay = _replayed(sim, "CreateVolume", params)
    if replay is not None:
        self.error_on_dryrun()
        return ActionResult(replay)

    zone = params.get("AvailabilityZone")
    if zone and backend.get_zone_by_name(zone) is None:
        raise EC2ClientError("InvalidZone.NotFound", f"The zone '{zone}' does not exist.")
    volume_type = params.get("VolumeType") or "gp2"
    _check_type(volume_type)
    size = params.get("Size")
    snapshot_id = params.get("SnapshotId")
    init_rate = check_initialization_rate(params.get("VolumeInitializationRate"), snapshot_id)
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
    # Volume.VolumeInitializationRate: serialised by moto from this attribute (DescribeVolumes,
    # CreateVolume's answer); None leaves the member out, as EC2 does for "null".
    volume.volume_initialization_rate = init_rate
    _start_creating(sim, volume, "CreateVolume", snapshot=snapshot.id if snapshot is not None else None)
    _remember(sim, "CreateVolume", params, volume)
    if snapshot is not None:
        sim.devices.restore(snapshot.id, volume.id, volume.size)
        # A rate given wins over an enabled FSR (API reference): not fast restored then.
        if init_rate is None and fsr.is_enabled(sim, snapshot.id, volume.availability_zone):
            volume.fast_restored = True
    return result


def copy_volumes(self: Any) -> Any:
    """CopyVolumes (moto 5.2.5 has none): a point-in-time copy of one volume, same zone.

    EC2 facts used (API reference https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CopyVolumes.html,
    the same text as botocore 1.44.5's and aws-sdk-ec2 1.274.0's model docs; user guide
    https://docs.aws.amazon.com/ebs/latest/userguide/ebs-copying-volume.html):
      * "point-in-time copy of an existing Amazon EBS volume within the same
        Availability Zone": the copy lands in the source's zone; its bytes are the
        source's at the moment of the call (devices.copy_volume);
      * Size: "must be equal to or greater than the size of the source volume. If
        not specified, the size defaults to the size of the source volume", with
        the per-type maxima CreateVolume has (SIZE_LIMITS);
      * VolumeType: "If not specified, the volume type defaults to gp2" (not the
        source's type); Iops: "Required for io1 and io2 ... gp3: 3,000 (default)";
        Throughput: gp3 only, 125-2000 MiB/s (125 when omitted, gp3's baseline);
        MultiAttachEnabled: io1/io2 only, off unless given;
      * Encrypted: "If the source volume is encrypted, the service always encrypts
        the copy"; true on an unencrypted source encrypts the copy with KmsKeyId or
        the account's default key. An encrypted source's copy without KmsKeyId keeps
        the source's key (the API text names no other key for that case);
      * "Volume copies are created immediately and can be attached ... once it
        reaches the available state"; the data is copied in the background
        (volume status `initializing`, not a volume state). So the copy goes
        `creating` -> `available` with the `create` delay, no slower key;
      * the answer is CopyVolumesResponse with the new volume in `volumeSet` (what
        aws-sdk-ec2 parses, shape_copy_volumes.rs), carrying `sourceVolumeId`.
    Errors: unknown source -> InvalidVolume.NotFound; a source that is not
    `available` or `in-use` (here: `creating`) -> IncorrectState; a smaller size or a
    size/type outside EC2's ranges -> InvalidParameterValue; ClientToken reuse with
    other parameters -> IdempotentParameterMismatch; moto's own checks for
    Iops/Throughput/MultiAttach/KmsKeyId combinations (InvalidParameterDependency)
    as for CreateVolume.
    """
    sim = current()
    backend = self.ec2_backend
    params = self.params
    if "VolumeInitializationRate" in self.querystring:
        # Not a CopyVolumes parameter (see INIT_RATE_RANGE's notes); the SDKs cannot
        # even send it, a raw request gets EC2's answer for an unknown parameter.
        raise EC2ClientError("UnknownParameter", "The parameter VolumeInitializationRate is not recognized")
    replay = _replayed(sim, "CopyVolumes", params)
    if replay is not None:
        self.error_on_dryrun()
        return ActionResult({"Volumes": [replay]})

    source_id = params.get("SourceVolumeId")
    if not source_id:
        raise EC2ClientError("MissingParameter", "The request must contain the parameter SourceVolumeId")
    source = find_volumes(backend, [source_id])[0]  # InvalidVolume.NotFound
    if source.status not in ("available", "in-use"):
        raise EC2ClientError("IncorrectState", f"Volume '{source.id}' is in the '{source.status}' state.")
    volume_type = params.get("VolumeType") or "gp2"
    _check_type(volume_type)
    size = int(params["Size"]) if params.get("Size") is not None else int(source.size)
    if size < source.size:
        raise EC2ClientError(
            "InvalidParameterValue",
            f"Volume of size {size}GiB is smaller than the source volume '{source.id}', "
            f"expect size >= {source.size}GiB",
        )
    check_size(size, volume_type)
    iops = params.get("Iops")
    throughput = params.get("Throughput")
    if volume_type == "gp3" and throughput is None:
        throughput = 125
    kms_key_id = params.get("KmsKeyId")
    encrypted = bool(source.encrypted) or bool(params.get("Encrypted"))
    if encrypted and not kms_key_id and source.encrypted:
        kms_key_id = source.kms_key_id
    tags = self._parse_tag_specification().get("volume", {})
    self.error_on_dryrun()

    volume = backend.create_volume(  # moto's Iops/Throughput/MultiAttach/KMS checks
        size=size,
        zone_name=source.availability_zone,
        encrypted=encrypted,
        kms_key_id=kms_key_id,
        volume_type=volume_type,
        iops=int(iops) if iops is not None else None,
        throughput=int(throughput) if throughput is not None else None,
        multi_attach_enabled=params.get("MultiAttachEnabled"),
    )
    volume.add_tags(tags)
    volume.source_volume_id = source.id  # Volume.SourceVolumeId, "Only for volume copies"
    _start_creating(sim, volume, "CopyVolumes", source=source.id)
    _remember(sim, "CopyVolumes", params, volume)
    sim.devices.copy_volume(source.id, volume.id, volume.size)
    return ActionResult({"Volumes": [volume]})


def delete_volume(self: Any) -> Any:
    sim = current()
    volume_id = self._get_param("VolumeId")
    volume = self.ec2_backend.get_volume(volume_id)
    if volume.attachment is not None:
        raise EC2ClientError(
            "VolumeInUse", f"Volume {volume_id} is currently attached to {volume.attachment.instance.id}"
        )
    state = volume.status
    result = _orig_delete_volume(self)
    volume._sim_deleted = True
    sim.events.record("volume", volume_id, state, "deleted")
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


def _optimizing(sim: Any, mod: SimModification, due: float) -> None:
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
    sim.events.record("modification", vol.id, "modifying", "optimizing", at=due)
    if grew:
        sim.devices.grow(vol.id, vol.size)


def _completed(sim: Any, mod: SimModification, due: float) -> None:
    if mod.modification_state == "optimizing":
        mod.modification_state = "completed"
        mod.end_time = utcnow()
        sim.events.record("modification", mod.volume_id, "optimizing", "completed", at=due)


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
    sim.events.record("modification", volume.id, None, "modifying", at=mod._t0)
    t1 = mod._t0 + mod._modify_s
    t2 = t1 + mod._optimize_s
    sim.scheduler.at(t1, lambda: _optimizing(sim, mod, t1))
    sim.scheduler.at(t2, lambda: _completed(sim, mod, t2))
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
