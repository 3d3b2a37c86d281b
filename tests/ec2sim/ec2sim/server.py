"""Entry point: command line, the HTTP front, and a process that always cleans up.

One threaded HTTP server on 127.0.0.1 serves three things on one port:
  /_sim/...  control endpoints (control.py)
  /latest/... IMDSv2 for the local instance (imds.py)
  anything else: the EC2 Query API. Each request is counted, may be throttled
  (throttle.py) or given an injected fault (faults.py), then runs through moto
  under the backend lock after due state transitions are applied (sim.py).

Ready protocol: exactly one JSON line on stdout once everything listens; logs
go to stderr. The process owns loop devices and files, so it removes them on
SIGTERM, SIGINT, SIGHUP, normal exit, when its parent process goes away
(polled every 0.5 s; a Rust test that panics drops its child), and optionally
when stdin reaches EOF.
"""

from __future__ import annotations

import argparse
import atexit
import io
import json
import logging
import os
import re
import signal
import stat
import sys
import threading
import time
import traceback
import urllib.parse
from typing import Any

from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler

from . import wire
from .devices import DeviceManager, devices_possible, sweep_stale
from .faults import parse_spec
from .states import PROFILES

log = logging.getLogger("ec2sim")

_CRED_RE = re.compile(r"(Credential=[^/,\s]+/\d{8}/)([^/,\s]+)(/)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="tests/ec2sim/run", description="EC2 test bed for the EBS CSI driver")
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: pick a free one)")
    p.add_argument("--region", default="us-east-1")
    p.add_argument("--zone", default=None, help="local instance's zone (default: region's first zone)")
    p.add_argument("--instance-type", default="m5.large")
    p.add_argument("--device-dir", default=None, help="where by-id style links appear (default: fresh temp dir)")
    p.add_argument("--state-dir", default=None, help="where backing files live (default: fresh temp dir)")
    p.add_argument("--devices", choices=("auto", "on", "off"), default="auto",
                   help="real loop devices: auto = on when root")
    p.add_argument("--delays", choices=sorted(PROFILES), default="fast")
    p.add_argument("--throttle", choices=("on", "off"), default="on")
    p.add_argument("--faults", default="", help="fault SPEC, see README.md")
    p.add_argument("--seed", type=int, default=None, help="seed for fault decisions")
    p.add_argument("--no-parent-watch", action="store_true", help="do not exit when the parent process dies")
    p.add_argument("--exit-on-stdin-eof", action="store_true", help="exit when stdin is closed")
    p.add_argument("--verbose", action="store_true", help="info logs and an access log on stderr")
    args = p.parse_args(argv)
    try:
        parse_spec(args.faults)
    except ValueError as e:
        p.error(str(e))
    return args


class QuietHandler(WSGIRequestHandler):
    verbose = False

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        if self.verbose:
            super().log_request(code, size)


class Server(ThreadedWSGIServer):
    request_queue_size = 1024  # 100+ concurrent clients connect at once
    daemon_threads = True


class Front:
    """The WSGI application: routes to control, IMDS or the EC2 path."""

    def __init__(self, sim: Any, imds: Any, control: Any) -> None:
        self.sim = sim
        self.imds = imds
        self.control = control

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.startswith("/_sim/"):
            return self.control(environ, start_response)
        if path.startswith("/latest/"):
            return self.imds(environ, start_response)
        return self.ec2(environ, start_response)

    @staticmethod
    def _read_body(environ: dict[str, Any]) -> bytes:
        length = environ.get("CONTENT_LENGTH")
        stream = environ["wsgi.input"]
        if length:
            return stream.read(int(length))
        if environ.get("wsgi.input_terminated"):
            return stream.read()
        return b""

    def ec2(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        sim = self.sim
        request_id = wire.new_request_id()

        def reply(status: int, body: bytes, headers: list[tuple[str, str]] | None = None) -> list[bytes]:
            hdrs = [(k, v) for k, v in (headers or wire.XML_HEADERS) if k.lower() not in
                    ("content-length", "x-amzn-requestid", "connection", "server", "date", "status")]
            hdrs += [("Content-Length", str(len(body))), ("x-amzn-requestid", request_id),
                     ("Server", "AmazonEC2")]
            start_response(f"{status} {_REASONS.get(status, 'Error')}", hdrs)
            return [body]

        def error(spec: tuple[int, str, str]) -> list[bytes]:
            return reply(spec[0], wire.error_body(spec[1], spec[2], request_id))

        body = self._read_body(environ)
        params = urllib.parse.parse_qs(body.decode("utf-8", "replace")) if body else {}
        if not params.get("Action"):
            params = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
        action = (params.get("Action") or [""])[0]
        if not action:
            return error((400, "MissingAction", "The request must contain the parameter Action"))

        sim.counters.call(action)
        if not sim.throttler.allow(action):
            sim.counters.throttle(action)
            return error(wire.THROTTLED)
        fault = sim.faults.decide(action)
        if fault is not None:
            sim.counters.fault(action, fault.kind)
            if fault.kind == "slow":
                time.sleep(fault.slow_ms / 1000.0)
            elif fault.kind == "throttle":
                return error(wire.THROTTLED)
            elif fault.kind == "internal":
                return error(wire.INTERNAL)
            elif fault.kind == "unavailable":
                return error(wire.UNAVAILABLE)

        env = dict(environ)
        env["wsgi.input"] = io.BytesIO(body)
        env["CONTENT_LENGTH"] = str(len(body))
        auth = env.get("HTTP_AUTHORIZATION")
        if auth:  # one endpoint is one region, whatever region the client signed for
            env["HTTP_AUTHORIZATION"] = _CRED_RE.sub(lambda m: m.group(1) + sim.region + m.group(3), auth, 1)
        else:
            env["HTTP_AUTHORIZATION"] = (
                f"AWS4-HMAC-SHA256 Credential=anonymous/20250101/{sim.region}/ec2/aws4_request, "
                "SignedHeaders=host, Signature=0"
            )
        try:
            with sim.lock:
                sim.advance()
                status, headers, out = sim.call_moto(env)
        except Exception as e:  # moto raised instead of answering
            if action not in _ec2_operations():
                return reply(400, wire.error_body(
                    "InvalidAction", f"The action {action} is not valid for this web service.", request_id))
            if isinstance(e, NotImplementedError):
                log.warning("moto does not implement %s", action)
                return reply(500, wire.error_body(
                    "InternalError", f"ec2sim: moto does not implement {action}: {e}", request_id))
            log.error("moto failed on %s: %s\n%s", action, e, traceback.format_exc())
            return reply(500, wire.error_body("InternalError", f"ec2sim: {action}: {e}", request_id))
        if fault is not None and fault.kind == "internal-after":
            return error(wire.INTERNAL)
        if status >= 400:
            if status == 404 and b"<Code>" not in out:
                return reply(400, wire.error_body("InvalidAction", f"The action {action} is not valid for this web service.", request_id))
            return reply(status, wire.normalise_error(out, request_id))
        return reply(status, wire.stamp_request_id(out, request_id), headers)


_OPERATIONS: frozenset[str] | None = None


def _ec2_operations() -> frozenset[str]:
    """EC2's action names from botocore's service model (loaded on first need)."""
    global _OPERATIONS
    if _OPERATIONS is None:
        import botocore.session

        _OPERATIONS = frozenset(botocore.session.get_session().get_service_model("ec2").operation_names)
    return _OPERATIONS


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            500: "Internal Server Error", 503: "Service Unavailable"}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO if args.verbose else logging.WARNING,
        format="ec2sim %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("werkzeug").setLevel(logging.INFO if args.verbose else logging.ERROR)
    QuietHandler.verbose = args.verbose

    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        if not stop.is_set():
            log.warning("signal %d: shutting down", signum)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)

    resources: dict[str, Any] = {}
    cleaned = threading.Event()

    def cleanup() -> None:
        if cleaned.is_set():
            return
        cleaned.set()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # finish cleaning whatever comes
        t0 = time.monotonic()
        server = resources.get("server")
        if server is not None:
            server.shutdown()
            server.server_close()
        sim = resources.get("sim")
        if sim is not None:
            sim.close()
        elif resources.get("devices") is not None:
            resources["devices"].close()
        log.info("cleaned up in %.2fs", time.monotonic() - t0)

    atexit.register(cleanup)
    try:
        return _run(args, stop, resources)
    finally:
        cleanup()


def _run(args: argparse.Namespace, stop: threading.Event, resources: dict[str, Any]) -> int:
    possible, why = devices_possible()
    if args.devices == "on" and not possible:
        print(f"ec2sim: --devices on, but devices are impossible here: {why}", file=sys.stderr)
        return 2
    enabled = possible and args.devices != "off"
    if args.devices == "auto" and not possible:
        print(f"ec2sim: real devices are OFF ({why}); attachments will not create block devices",
              file=sys.stderr)
    if enabled:
        sweep_stale()
    devices = DeviceManager(enabled, args.device_dir, args.state_dir)
    resources["devices"] = devices
    if stop.is_set():
        return 0

    from .control import Control
    from .imds import Imds
    from .sim import Sim

    try:
        sim = Sim(region=args.region, zone=args.zone, instance_type=args.instance_type, delays=args.delays,
                  throttle=args.throttle == "on", faults=args.faults, seed=args.seed, devices=devices)
    except ValueError as e:
        print(f"ec2sim: {e}", file=sys.stderr)
        return 2
    resources["sim"] = sim
    sim.start_local_instance()
    if stop.is_set():
        return 0

    server = Server("127.0.0.1", args.port, None, handler=QuietHandler)  # app set below
    port = server.server_port
    base = f"http://127.0.0.1:{port}"

    def ready_info() -> dict[str, Any]:
        return {
            "endpoint": base,
            "imds_endpoint": base,
            "region": sim.region,
            "availability_zone": sim.zone,
            "instance_id": sim.local_instance_id,
            "device_dir": devices.device_dir,
            "devices": devices.enabled,
            "state_dir": devices.state_dir,
            "pid": os.getpid(),
        }

    server.app = Front(sim, Imds(sim), Control(sim, ready_info))
    resources["server"] = server
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="http",
                     daemon=True).start()

    sys.stdout.write(json.dumps(ready_info()) + "\n")
    sys.stdout.flush()

    def ticker() -> None:
        while not stop.wait(0.02):
            try:
                sim.tick()
            except Exception:
                log.exception("ticker failed")

    threading.Thread(target=ticker, name="ticker", daemon=True).start()
    _watch_parent_and_stdin(args, stop)
    while not stop.wait(0.1):
        pass
    return 0


def _watch_parent_and_stdin(args: argparse.Namespace, stop: threading.Event) -> None:
    parent = os.getppid()
    if not args.no_parent_watch and parent > 1:
        def watch_parent() -> None:
            while not stop.wait(0.5):
                if os.getppid() != parent:
                    log.warning("parent process %d went away: shutting down", parent)
                    stop.set()

        threading.Thread(target=watch_parent, name="parent-watch", daemon=True).start()

    if args.exit_on_stdin_eof:
        try:
            mode = os.fstat(0).st_mode
        except OSError:
            return
        if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
            def watch_stdin() -> None:
                while os.read(0, 4096):
                    pass
                log.warning("stdin closed: shutting down")
                stop.set()

            threading.Thread(target=watch_stdin, name="stdin-watch", daemon=True).start()
