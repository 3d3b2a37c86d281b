"""The simulator's shared state and the one lock around moto.

moto's backends are plain Python objects with no locking of their own, while
the driver sends many concurrent requests (100+ is a real test case). Every
EC2 request therefore runs moto under `Sim.lock`, after the due state
transitions have been applied (see states.py). Throttling, fault injection,
IMDS and the control endpoints work outside this lock.

The Sim also owns the "local instance": one moto instance, started at boot and
after every reset, that stands for this machine. Only attachments to it get
real devices, and IMDS describes it. Its instance id is kept across resets so a
test harness can keep using the id from the ready line.
"""

from __future__ import annotations

import io
import logging
import re
import threading
import time
import urllib.parse
from typing import Any

from moto.core import DEFAULT_ACCOUNT_ID

from .counters import Counters
from .devices import DeviceManager
from .events import EventLog
from .faults import FaultInjector
from .states import Delays, Scheduler
from .throttle import Throttler

log = logging.getLogger("ec2sim.sim")

# Amazon Linux HVM image that moto ships in every region; its root device is
# /dev/xvda like current Nitro instances, and it is x86_64.
LOCAL_AMI = "ami-760aaa0f"
LOCAL_ROOT_DEVICE = "/dev/xvda"
LOCAL_NAME_TAG = "ec2sim-local"

_current: "Sim | None" = None


def current() -> "Sim":
    """The running simulator (used by the patched moto methods)."""
    if _current is None:
        raise RuntimeError("ec2sim: simulator not started")
    return _current


class Sim:
    def __init__(
        self,
        *,
        region: str,
        zone: str | None,
        instance_type: str,
        delays: str,
        throttle: bool,
        faults: str | None,
        seed: int | None,
        devices: DeviceManager,
    ) -> None:
        global _current
        self.lock = threading.RLock()
        self.region = region
        self.account_id = DEFAULT_ACCOUNT_ID
        self.instance_type = instance_type
        self.delays = Delays(delays)
        self.scheduler = Scheduler()
        self.events = EventLog()
        self.devices = devices
        self.throttler = Throttler(throttle)
        self.faults = FaultInjector(faults, seed)
        self.counters = Counters()
        self.client_tokens: dict[Any, tuple[str, Any]] = {}  # token (CreateVolume) or (action, token)
        self.fsr: dict[tuple[str, str], Any] = {}
        self.local_instance_id: str | None = None
        self._last_reconcile = 0.0
        self.moto_app = None
        _current = self
        from moto.moto_server.werkzeug_app import create_backend_app

        from . import patches

        patches.install()
        self.moto_app = create_backend_app("ec2")
        zones = [z.name for z in self.backend.describe_availability_zones()]
        if not zones:
            raise ValueError(f"moto knows no availability zones for region {region!r}")
        self.zone = zone or sorted(zones)[0]
        if self.zone not in zones:
            raise ValueError(f"zone {self.zone!r} is not in region {region} ({', '.join(sorted(zones))})")

    # -- moto access -------------------------------------------------------------
    @property
    def backend(self) -> Any:
        from moto.ec2.models import ec2_backends

        return ec2_backends[self.account_id][self.region]

    def call_moto(self, environ: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
        """Run one request through moto's EC2 Flask app. Caller holds self.lock."""
        captured: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured["status"] = int(status.split()[0])
            captured["headers"] = headers
            return lambda data: None

        chunks = self.moto_app(environ, start_response)
        try:
            body = b"".join(chunks)
        finally:
            close = getattr(chunks, "close", None)
            if close:
                close()
        return captured["status"], captured["headers"], body

    def query(self, params: dict[str, str]) -> tuple[int, bytes]:
        """Internal EC2 Query call (used to set up the local instance)."""
        body = urllib.parse.urlencode({"Version": "2016-11-15", **params}).encode()
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": "/",
            "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "HTTP_HOST": f"ec2.{self.region}.amazonaws.com",
            "CONTENT_TYPE": "application/x-www-form-urlencoded; charset=utf-8",
            "CONTENT_LENGTH": str(len(body)),
            "HTTP_AUTHORIZATION": (
                f"AWS4-HMAC-SHA256 Credential=ec2sim/20250101/{self.region}/ec2/aws4_request, "
                "SignedHeaders=host, Signature=0"
            ),
            "wsgi.input": io.BytesIO(body),
            "wsgi.url_scheme": "http",
            "wsgi.errors": io.StringIO(),
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "wsgi.version": (1, 0),
        }
        status, _, out = self.call_moto(environ)
        return status, out

    # -- state machines ----------------------------------------------------------
    def advance(self, now: float | None = None) -> None:
        """Apply transitions due by `now` (monotonic; default: now). Caller holds self.lock."""
        self.scheduler.run_due(time.monotonic() if now is None else now)

    def tick(self) -> None:
        """Ticker body: take the lock only when something is due."""
        now = time.monotonic()
        due = self.scheduler.next_due()
        if due is not None and due <= now:
            with self.lock:
                self.advance()
        if self.devices.loops and now - self._last_reconcile > 0.5:
            self._last_reconcile = now
            self.reconcile_devices()

    def reconcile_devices(self) -> None:
        """Drop devices whose volume is no longer attached to the local instance.

        Detach, delete and reset release devices themselves; this catches paths
        that bypass the layer, such as TerminateInstances of the local instance.
        """
        with self.lock:
            for volume_id in list(self.devices.loops):
                vol = self.backend.volumes.get(volume_id)
                att = vol.attachment if vol is not None else None
                if att is None or not self.is_local(att.instance):
                    log.warning("%s is no longer attached here; removing its device", volume_id)
                    self.devices.detach(volume_id, force_unmount=True)

    # -- local instance ----------------------------------------------------------
    def start_local_instance(self) -> None:
        with self.lock:
            status, out = self.query(
                {
                    "Action": "RunInstances",
                    "ImageId": LOCAL_AMI,
                    "MinCount": "1",
                    "MaxCount": "1",
                    "InstanceType": self.instance_type,
                    "Placement.AvailabilityZone": self.zone,
                    "BlockDeviceMapping.1.DeviceName": LOCAL_ROOT_DEVICE,
                    "BlockDeviceMapping.1.Ebs.VolumeSize": "8",
                    "BlockDeviceMapping.1.Ebs.VolumeType": "gp3",
                    "BlockDeviceMapping.1.Ebs.DeleteOnTermination": "true",
                    "TagSpecification.1.ResourceType": "instance",
                    "TagSpecification.1.Tag.1.Key": "Name",
                    "TagSpecification.1.Tag.1.Value": LOCAL_NAME_TAG,
                }
            )
            if status != 200:
                raise RuntimeError(f"could not start the local instance: {out[:500]!r}")
            m = re.search(rb"<instanceId>(i-[0-9a-f]+)</instanceId>", out)
            if not m:
                raise RuntimeError(f"RunInstances answer without an instance id: {out[:500]!r}")
            inst = self.backend.get_instance(m.group(1).decode())
            if self.local_instance_id is None:
                self.local_instance_id = inst.id
            else:
                inst.id = self.local_instance_id  # same id across /_sim/reset
            inst.root_device_name = LOCAL_ROOT_DEVICE
            inst._sim_local = True
            log.info("local instance %s (%s) in %s", inst.id, self.instance_type, self.zone)

    def local_instance(self) -> Any:
        return self.backend.get_instance(self.local_instance_id)

    def is_local(self, instance: Any) -> bool:
        return instance is not None and instance.id == self.local_instance_id

    # -- reset / shutdown ----------------------------------------------------------
    def reset(self) -> None:
        """All EC2 state back to just the local instance; devices released; counters reset."""
        with self.lock:
            self.scheduler.clear()
            self.devices.release_all()
            self.backend.reset()
            self.client_tokens.clear()
            self.fsr.clear()
            self.start_local_instance()
            self.events.clear()
        self.counters.reset()
        self.throttler.refill()

    def close(self) -> None:
        with self.lock:
            self.scheduler.clear()
            self.devices.close()

    def describe_state(self) -> dict[str, Any]:
        """Snapshot for GET /_sim/state."""
        with self.lock:
            self.advance()
            vols = []
            for v in self.backend.volumes.values():
                att = v.attachment
                vols.append(
                    {
                        "id": v.id,
                        "state": v.status,
                        "size": v.size,
                        "type": v.volume_type,
                        "zone": v.availability_zone,
                        "source_volume_id": getattr(v, "source_volume_id", None),
                        "volume_initialization_rate": getattr(v, "volume_initialization_rate", None),
                        "attachment": None if att is None else {
                            "instance_id": att.instance.id,
                            "device": att.device,
                            "state": att.status,
                        },
                        "modification": None if not v.modifications else v.modifications[-1].modification_state,
                    }
                )
            snaps = [
                {"id": s.id, "state": s.status, "progress": s.progress, "volume_id": s.volume.id,
                 "volume_size": s.volume_size}
                for s in self.backend.snapshots.values()
                if s.owner_id == self.account_id
            ]
            return {
                "local_instance_id": self.local_instance_id,
                "volumes": vols,
                "snapshots": snaps,
                "devices": self.devices.describe(),
                "pending_transitions": len(self.scheduler),
                "events": len(self.events),
            }
