"""AttachVolume / DetachVolume with EC2's checks and state machine.

moto moves a volume that is attached elsewhere, attaches across zones,
overwrites a device name in use and accepts any string as a device; EC2
refuses all four, and a driver must handle each refusal, so they are enforced
here with EC2's error codes:
  * invalid device name            -> InvalidParameterValue "... is not a valid EBS device name."
  * volume still `creating`        -> IncorrectState
  * volume attached (any state)    -> VolumeInUse "... is already attached to an instance"
  * volume and instance zones differ -> InvalidVolume.ZoneMismatch
  * device name taken on instance  -> InvalidParameterValue "... Attachment point X is already in use"
  * EbsCardIndex outside the type's cards -> InvalidParameterValue
  * instance type's limit reached  -> AttachmentLimitExceeded (see limits.py for the counting)

Device names accepted are the ones EC2 accepts for Linux EBS volumes (found by
trial on EC2 and used by the upstream driver): /dev/sd[a-z], /dev/sd[a-z]1..15,
/dev/xvd[a-z], /dev/xvd[a-c][a-z] and /dev/xvdd[a-x].

State machine: attaching -> attached after the `attach` delay, when the real
loop device is made for the local instance; detaching -> (gone) after the
`detach` delay, when the device is removed and moto's attachment dropped. A
detach of a volume whose device is still mounted stays in `busy` until it is
unmounted, as AWS documents for a mounted volume, unless Force is set.
Each of these changes is logged with its due time (events.py).
Multi-attach (io1/io2 to several instances) is not modelled: moto keeps one
attachment per volume, so a second attach is VolumeInUse.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from moto.core.responses import ActionResult
from moto.ec2.exceptions import EC2ClientError
from moto.ec2.responses.elastic_block_store import ElasticBlockStore

from . import limits
from .sim import current

log = logging.getLogger("ec2sim.attach")

DEVICE_RE = re.compile(r"^/dev/(sd[a-z](1[0-5]|[1-9])?|xvd[a-z]|xvd[a-c][a-z]|xvdd[a-x])$")
BUSY_RECHECK_S = 0.1

_orig_attach_volume = ElasticBlockStore.attach_volume


def valid_device(name: str) -> bool:
    return bool(DEVICE_RE.match(name or ""))


def _set_bdm_status(att: Any, status: str) -> None:
    bdm = att.instance.block_device_mapping.get(att.device)
    if bdm is not None and bdm.volume_id == att.volume.id:
        bdm.status = status


def _event(sim: Any, att: Any, frm: str | None, to: str, at: float | None = None) -> None:
    sim.events.record("attachment", att.volume.id, frm, to, at=at, instance=att.instance.id, device=att.device)


def _complete_attach(sim: Any, att: Any, due: float) -> None:
    vol = att.volume
    if vol.attachment is not att or att.status != "attaching":
        return
    if sim.is_local(att.instance):
        try:
            sim.devices.attach(vol.id, vol.size)
        except Exception:
            log.exception("could not make the device for %s; reporting it attached anyway", vol.id)
    att.status = "attached"
    _set_bdm_status(att, "attached")
    _event(sim, att, "attaching", "attached", at=due)


def _complete_detach(sim: Any, att: Any, force: bool, due: float) -> None:
    vol = att.volume
    if vol.attachment is not att or att.status not in ("detaching", "busy"):
        return
    if sim.is_local(att.instance) and not force and sim.devices.is_mounted(vol.id):
        if att.status != "busy":
            log.warning("%s is still mounted; detach stays busy until it is unmounted", vol.id)
            _event(sim, att, att.status, "busy", at=due)
        att.status = "busy"
        _set_bdm_status(att, "busy")
        _detach_at(sim, att, force, time.monotonic() + BUSY_RECHECK_S)
        return
    if sim.is_local(att.instance):
        sim.devices.detach(vol.id, force_unmount=force)
    frm = att.status
    sim.backend.detach_volume(vol.id, att.instance.id, att.device)
    _event(sim, att, frm, "detached", at=due)


def _detach_at(sim: Any, att: Any, force: bool, due: float) -> None:
    sim.scheduler.at(due, lambda: _complete_detach(sim, att, force, due))


def attach_volume(self: Any) -> Any:
    sim = current()
    backend = self.ec2_backend
    volume_id = self._get_param("VolumeId")
    instance_id = self._get_param("InstanceId")
    device = self._get_param("Device")
    if not device:
        raise EC2ClientError("MissingParameter", "The request must contain the parameter device")
    if not valid_device(device):
        raise EC2ClientError(
            "InvalidParameterValue",
            f"Value ({device}) for parameter device is invalid. {device} is not a valid EBS device name.",
        )
    volume = backend.get_volume(volume_id)  # InvalidVolume.NotFound
    instance = backend.get_instance(instance_id)  # InvalidInstanceID.NotFound
    if instance.state in ("terminated", "shutting-down"):
        raise EC2ClientError(
            "IncorrectInstanceState", f"The instance '{instance_id}' is not in a valid state for this operation."
        )
    card = limits.parse_card_index(self._get_param("EbsCardIndex"), instance)
    if volume.status == "creating":
        raise EC2ClientError("IncorrectState", f"{volume_id} is not 'available'.")
    if volume.attachment is not None:
        raise EC2ClientError("VolumeInUse", f"{volume_id} is already attached to an instance")
    if volume.availability_zone != instance.placement.zone:
        raise EC2ClientError(
            "InvalidVolume.ZoneMismatch",
            f"The volume '{volume_id}' is not in the same availability zone as instance '{instance_id}'",
        )
    if device in instance.block_device_mapping:
        raise EC2ClientError(
            "InvalidParameterValue",
            f"Invalid value '{device}' for unixDevice. Attachment point {device} is already in use",
        )
    limits.check_attach(backend, instance, card)
    result = _orig_attach_volume(self)  # honours DryRun
    att = volume.attachment
    setattr(att, limits.CARD_ATTR, card)
    reported = limits.reported_card(att)
    if reported is not None and isinstance(result.result, dict):
        result.result["EbsCardIndex"] = reported
    att.status = "attaching"
    _set_bdm_status(att, "attaching")
    t0 = time.monotonic()
    due = t0 + sim.delays["attach"]
    _event(sim, att, None, "attaching", at=t0)
    sim.scheduler.at(due, lambda: _complete_attach(sim, att, due))
    return result


def detach_volume(self: Any) -> Any:
    sim = current()
    backend = self.ec2_backend
    volume_id = self._get_param("VolumeId")
    instance_id = self._get_param("InstanceId")
    device = self._get_param("Device")
    force = bool(self._get_param("Force", False))
    volume = backend.get_volume(volume_id)
    att = volume.attachment
    if att is None:
        raise EC2ClientError("IncorrectState", f"Volume '{volume_id}' is in the '{volume.status}' state.")
    if instance_id and instance_id != att.instance.id:
        backend.get_instance(instance_id)  # InvalidInstanceID.NotFound first, like EC2
        raise EC2ClientError(
            "InvalidAttachment.NotFound",
            f"The volume '{volume_id}' is not attached to instance '{instance_id}'",
        )
    if device and device != att.device:
        raise EC2ClientError(
            "InvalidAttachment.NotFound",
            f"The volume '{volume_id}' is not attached to instance '{att.instance.id}' as device '{device}'",
        )
    self.error_on_dryrun()
    if att.status in ("attaching", "attached"):
        t0 = time.monotonic()
        _event(sim, att, att.status, "detaching", at=t0)
        att.status = "detaching"
        _set_bdm_status(att, "detaching")
        _detach_at(sim, att, force, t0 + sim.delays["detach"])
    elif force and att.status == "busy":
        _detach_at(sim, att, True, time.monotonic())
    return ActionResult(
        {
            "VolumeId": volume.id,
            "InstanceId": att.instance.id,
            "Device": att.device,
            "State": "detaching" if att.status != "busy" else "busy",
            "AttachTime": att.attach_time,
        }
    )
