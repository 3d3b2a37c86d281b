"""Installs the realism layer onto moto's EC2 classes, once, before the app is built.

Why patch instead of proxying XML: moto already parses every Query parameter
from botocore's service model and serialises answers with EC2's exact XML, so
overriding its per-action response methods (and a few model properties) keeps
parsing and serialisation exact while the layer only decides *what* happens.
moto dispatches an action to the method of the same snake_case name found on
EC2Response's class, so defining a method there overrides the mixin's (or adds
an action moto lacks, like the fast snapshot restore ones).

Every patched method runs under Sim.lock (the front holds it around moto).
Volumes and snapshots that moto creates internally (an instance's root
volume, the snapshots behind its built-in AMIs) carry none of the layer's
markers and keep moto's behaviour.
"""

from __future__ import annotations

from moto.ec2.models.elastic_block_store import Snapshot, Volume
from moto.ec2.responses import EC2Response

from . import attach, fsr, snapshots, volumes

_installed = False

RESPONSE_METHODS = {
    "create_volume": volumes.create_volume,
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


def install() -> None:
    global _installed
    if _installed:
        return
    Volume.status = volumes.volume_status(Volume.status)
    for name, prop in snapshots.SNAPSHOT_PROPERTIES.items():
        setattr(Snapshot, name, prop)
    for name, fn in RESPONSE_METHODS.items():
        setattr(EC2Response, name, fn)
    _installed = True
