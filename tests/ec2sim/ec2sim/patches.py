"""Installs the realism layer onto moto's EC2 classes, once, before the app is built.

Why patch instead of proxying XML: moto already parses every Query parameter
from botocore's service model and serialises answers with EC2's exact XML, so
overriding its per-action response methods (and a few model properties) keeps
parsing and serialisation exact while the layer only decides *what* happens.
moto dispatches an action to the method of the same snake_case name found on
EC2Response's class, so defining a method there overrides the mixin's (or adds
an action moto lacks, like CopyVolumes and the fast snapshot restore ones).

Every patched method runs under Sim.lock (the front holds it around moto).
Volumes and snapshots that moto creates internally (an instance's root
volume, the snapshots behind its built-in AMIs) carry none of the layer's
markers and keep moto's behaviour.
"""

from __future__ import annotations

import copy
from typing import Any

from moto import settings as moto_settings
from moto.ec2.models.elastic_block_store import Snapshot, Volume, VolumeAttachment
from moto.ec2.models.instances import Instance
from moto.ec2.responses import EC2Response

from . import attach, fsr, limits, snapshots, volumes

_installed = False

RESPONSE_METHODS = {
    "create_volume": volumes.create_volume,
    "copy_volumes": volumes.copy_volumes,
    "delete_volume": volumes.delete_volume,
    "describe_volumes": volumes.describe_volumes,
    "modify_volume": volumes.modify_volume,
    "describe_volumes_modifications": volumes.describe_volumes_modifications,
    "attach_volume": attach.attach_volume,
    "detach_volume": attach.detach_volume,
    "create_snapshot": snapshots.create_snapshot,
    "create_snapshots": snapshots.create_snapshots,
    "delete_snapshot": snapshots.delete_snapshot,
    "describe_snapshots": snapshots.describe_snapshots,
    "enable_fast_snapshot_restores": fsr.enable_fast_snapshot_restores,
    "disable_fast_snapshot_restores": fsr.disable_fast_snapshot_restores,
    "describe_fast_snapshot_restores": fsr.describe_fast_snapshot_restores,
}


def _attachment_card(att: VolumeAttachment) -> int | None:
    """VolumeAttachment.ebs_card_index: DescribeVolumes' attachmentSet ebsCardIndex (absent when None)."""
    return limits.reported_card(att)


def _instance_block_device_mappings(inst: Instance) -> list[dict[str, Any]]:
    """moto's Instance.block_device_mappings plus ebs.ebsCardIndex (DescribeInstances)."""
    result = []
    for device_name, block in inst.get_block_device_mapping:
        block_copy = copy.copy(block)
        block_copy.status = inst.get_block_device_status(block.status)
        vol = inst.ec2_backend.volumes.get(block.volume_id) if block.volume_id else None
        att = vol.attachment if vol is not None else None
        block_copy.ebs_card_index = limits.reported_card(att) if att is not None and att.instance is inst else None
        result.append({"DeviceName": device_name, "Ebs": block_copy})
    return result


def install() -> None:
    global _installed
    if _installed:
        return
    Volume.status = volumes.volume_status(Volume.status)
    # moto's offering lists lack some types of the limits table (23 in us-east-1,
    # e.g. g4ad.xlarge, hpc7a.12xlarge); it only checks
    # them when MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION is set, so keep that
    # off whatever the environment says: every type of the limits table starts.
    moto_settings.EC2_ENABLE_INSTANCE_TYPE_VALIDATION = False
    VolumeAttachment.ebs_card_index = property(_attachment_card)
    Instance.block_device_mappings = property(_instance_block_device_mappings)
    for name, prop in snapshots.SNAPSHOT_PROPERTIES.items():
        setattr(Snapshot, name, prop)
    for name, fn in RESPONSE_METHODS.items():
        setattr(EC2Response, name, fn)
    _installed = True
