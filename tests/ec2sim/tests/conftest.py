"""Fixtures: start the real simulator through tests/ec2sim/run and always stop it cleanly.

Every simulator a test starts is stopped with SIGTERM at teardown (also when
the test failed), and teardown then checks that none of its loop devices, links
or files is left on the machine. The shared `sim` is reset before each test
that uses `ec2`, so tests start from "just the local instance".
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

HERE = Path(__file__).resolve().parent.parent
RUN = HERE / "run"
IS_ROOT = os.geteuid() == 0

needs_root = pytest.mark.skipif(not IS_ROOT, reason="real loop devices need root")


def loop_devices_backed_by(directory: str) -> list[str]:
    """Loop devices whose backing file lives in `directory` (from losetup -a)."""
    if not IS_ROOT:
        return []
    out = subprocess.run(["losetup", "-a"], capture_output=True, text=True, check=False).stdout
    return [line for line in out.splitlines() if directory and directory in line]


class SimProcess:
    """A running simulator: its ready line, clients and control helpers."""

    def __init__(self, *args: str, timeout: float = 30.0, stderr_path: Path | None = None) -> None:
        self.args = list(args)
        self.stderr_file = open(stderr_path, "w+") if stderr_path else subprocess.DEVNULL
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [str(RUN), *args], stdout=subprocess.PIPE, stderr=self.stderr_file, stdin=subprocess.DEVNULL
        )
        line = self._readline(timeout)
        self.startup_s = time.monotonic() - t0
        if not line:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"simulator did not start (rc={self.proc.returncode}): {self.stderr_text()}")
        self.info: dict[str, Any] = json.loads(line)
        self.endpoint: str = self.info["endpoint"]

    def _readline(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        buf = b""
        fd = self.proc.stdout.fileno()
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    return ""
                buf += chunk
                if b"\n" in buf:
                    return buf.split(b"\n", 1)[0].decode()
            elif self.proc.poll() is not None:
                return ""
        return ""

    def stderr_text(self) -> str:
        if self.stderr_file is subprocess.DEVNULL:
            return ""
        self.stderr_file.seek(0)
        return self.stderr_file.read()

    # -- clients ------------------------------------------------------------------------
    def client(self, retries: int = 1) -> Any:
        return boto3.client(
            "ec2",
            endpoint_url=self.endpoint,
            region_name=self.info["region"],
            aws_access_key_id="test",
            aws_secret_access_key="test",
            config=Config(retries={"total_max_attempts": retries, "mode": "standard"}, max_pool_connections=200),
        )

    def http(self, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(self.endpoint + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def control(self, method: str, path: str, obj: Any = None) -> Any:
        body = json.dumps(obj).encode() if obj is not None else None
        status, _, data = self.http(method, path, body, {"Content-Type": "application/json"})
        assert status == 200, (status, data)
        return json.loads(data)

    def reset(self) -> None:
        self.control("POST", "/_sim/reset")

    def counters(self) -> dict[str, Any]:
        return self.control("GET", "/_sim/counters")

    def configure(self, **cfg: Any) -> dict[str, Any]:
        return self.control("POST", "/_sim/config", cfg)

    # -- shutdown -----------------------------------------------------------------------
    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("simulator did not exit after SIGTERM")
        if self.proc.stdout:
            self.proc.stdout.close()
        return self.proc.returncode

    def assert_no_leftovers(self) -> None:
        state_dir, device_dir = self.info["state_dir"], self.info["device_dir"]
        assert loop_devices_backed_by(state_dir) == [], "loop devices left behind"
        assert not os.path.exists(state_dir), f"state dir left behind: {os.listdir(state_dir)}"
        assert not os.path.exists(device_dir), "device dir left behind"


@pytest.fixture
def start_sim(tmp_path: Path):
    """Factory: start extra simulators with given flags; all are stopped and checked at teardown."""
    started: list[SimProcess] = []

    def start(*args: str, **kw: Any) -> SimProcess:
        kw.setdefault("stderr_path", tmp_path / f"sim{len(started)}.stderr")
        s = SimProcess(*args, **kw)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()
    for s in started:
        s.assert_no_leftovers()


@pytest.fixture(scope="session")
def sim(tmp_path_factory: pytest.TempPathFactory):
    """One shared simulator (fast delays, throttling off) for most tests."""
    log = tmp_path_factory.mktemp("shared") / "sim.stderr"
    s = SimProcess("--delays", "fast", "--throttle", "off", stderr_path=log)
    yield s
    s.stop()
    s.assert_no_leftovers()


@pytest.fixture
def ec2(sim: SimProcess):
    """A boto3 EC2 client on the shared simulator, reset to a clean state."""
    sim.reset()
    sim.configure(delays="fast", throttle={"enabled": False}, faults="")
    yield sim.client()
    # leave nothing attached for the next test's reset to fight with
    sim.reset()


def wait_for(fn, timeout: float = 10.0, interval: float = 0.02, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def volume(ec2: Any, volume_id: str) -> dict[str, Any]:
    return ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]


def wait_volume_state(ec2: Any, volume_id: str, state: str, timeout: float = 10.0) -> dict[str, Any]:
    return wait_for(lambda: (v := volume(ec2, volume_id))["State"] == state and v, timeout, what=f"{volume_id} {state}")


def attachment_state(ec2: Any, volume_id: str) -> str | None:
    atts = volume(ec2, volume_id)["Attachments"]
    return atts[0]["State"] if atts else None


def error_code(excinfo: Any) -> str:
    return excinfo.value.response["Error"]["Code"]


def run_instance(ec2: Any, zone: str) -> str:
    r = ec2.run_instances(ImageId="ami-760aaa0f", MinCount=1, MaxCount=1, InstanceType="m5.large",
                          Placement={"AvailabilityZone": zone})
    return r["Instances"][0]["InstanceId"]
