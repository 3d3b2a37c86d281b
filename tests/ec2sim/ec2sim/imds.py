"""IMDSv2 for the local instance, on the same port as the EC2 endpoint.

The driver's node service learns its instance id, type, zone and region from
instance metadata. moto's responder is fixed (i-fake in us-east-1a), accepts
calls without a token and lacks block-device-mapping/ and the
instance-identity document, so a driver that skipped the IMDSv2 token or
read the wrong path would pass against it. This responder describes the
simulator's real local instance and enforces IMDSv2 like an instance with
HttpTokens=required:
  PUT /latest/api/token with X-aws-ec2-metadata-token-ttl-seconds (1..21600)
      -> token (400 without a valid TTL, 403 when X-Forwarded-For is present)
  GET /latest/meta-data/... and /latest/dynamic/... need
      X-aws-ec2-metadata-token (401 when missing, unknown or expired)
Like EC2, block-device-mapping/ lists only what was mapped at launch (ami and
root); volumes attached later never appear there.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

TTL_HEADER = "HTTP_X_AWS_EC2_METADATA_TOKEN_TTL_SECONDS"
TOKEN_HEADER = "HTTP_X_AWS_EC2_METADATA_TOKEN"
MAX_TTL = 21600


class Imds:
    def __init__(self, sim: Any) -> None:
        self.sim = sim
        self._tokens: dict[str, float] = {}
        self._lock = threading.Lock()

    # -- data -------------------------------------------------------------------------
    def _info(self) -> dict[str, Any]:
        sim = self.sim
        with sim.lock:
            inst = sim.local_instance()
            zone = inst.placement.zone
            zone_id = next((z.zone_id for z in sim.backend.describe_availability_zones() if z.name == zone), "")
            ip = inst.private_ip or "10.0.0.10"
            return {
                "instance_id": inst.id,
                "instance_type": inst.instance_type,
                "image_id": inst.image_id,
                "zone": zone,
                "zone_id": zone_id,
                "region": sim.region,
                "account_id": sim.account_id,
                "private_ip": ip,
                "hostname": inst.private_dns_name,
                "root": inst.root_device_name,
                "architecture": getattr(inst, "architecture", "x86_64") or "x86_64",
                "launch_time": inst.launch_time.strftime("%Y-%m-%dT%H:%M:%SZ"),
            }

    def _tree(self) -> dict[str, Any]:
        i = self._info()
        mac = "0e:00:00:00:00:01"
        return {
            "meta-data": {
                "ami-id": i["image_id"],
                "ami-launch-index": "0",
                "block-device-mapping": {"ami": i["root"], "root": i["root"]},
                "hostname": i["hostname"],
                "instance-action": "none",
                "instance-id": i["instance_id"],
                "instance-life-cycle": "on-demand",
                "instance-type": i["instance_type"],
                "local-hostname": i["hostname"],
                "local-ipv4": i["private_ip"],
                "mac": mac,
                "placement": {
                    "availability-zone": i["zone"],
                    "availability-zone-id": i["zone_id"],
                    "region": i["region"],
                },
                "services": {"domain": "amazonaws.com", "partition": "aws"},
            },
            "dynamic": {
                "instance-identity": {
                    "document": json.dumps(
                        {
                            "accountId": i["account_id"],
                            "architecture": i["architecture"],
                            "availabilityZone": i["zone"],
                            "billingProducts": None,
                            "devpayProductCodes": None,
                            "marketplaceProductCodes": None,
                            "imageId": i["image_id"],
                            "instanceId": i["instance_id"],
                            "instanceType": i["instance_type"],
                            "kernelId": None,
                            "pendingTime": i["launch_time"],
                            "privateIp": i["private_ip"],
                            "ramdiskId": None,
                            "region": i["region"],
                            "version": "2017-09-30",
                        },
                        indent=2,
                        default=str,
                    ),
                }
            },
        }

    # -- tokens -----------------------------------------------------------------------
    def _new_token(self, ttl: int) -> str:
        token = secrets.token_urlsafe(42)
        now = time.monotonic()
        with self._lock:
            self._tokens = {t: exp for t, exp in self._tokens.items() if exp > now}
            self._tokens[token] = now + ttl
        return token

    def _valid(self, token: str | None) -> bool:
        if not token:
            return False
        with self._lock:
            exp = self._tokens.get(token)
        return exp is not None and exp > time.monotonic()

    # -- WSGI ---------------------------------------------------------------------------
    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "")

        def reply(status: str, body: str, extra: list[tuple[str, str]] | None = None) -> list[bytes]:
            data = body.encode()
            headers = [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))]
            start_response(status, headers + (extra or []))
            return [data]

        if path == "/latest/api/token":
            if method != "PUT":
                return reply("405 Method Not Allowed", "")
            if environ.get("HTTP_X_FORWARDED_FOR"):
                return reply("403 Forbidden", "")
            try:
                ttl = int(environ.get(TTL_HEADER, ""))
            except ValueError:
                return reply("400 Bad Request", "")
            if not 1 <= ttl <= MAX_TTL:
                return reply("400 Bad Request", "")
            return reply("200 OK", self._new_token(ttl), [("X-aws-ec2-metadata-token-ttl-seconds", str(ttl))])

        if method not in ("GET", "HEAD"):
            return reply("405 Method Not Allowed", "")
        if not self._valid(environ.get(TOKEN_HEADER)):
            return reply("401 Unauthorized", "")
        parts = [p for p in path.split("/")[2:] if p]  # drop "", "latest"
        node: Any = self._tree()
        for p in parts:
            if not isinstance(node, dict) or p not in node:
                return reply("404 Not Found", "")
            node = node[p]
        if isinstance(node, dict):
            listing = "\n".join(k + "/" if isinstance(v, dict) else k for k, v in node.items())
            return reply("200 OK", listing)
        return reply("200 OK", str(node))
