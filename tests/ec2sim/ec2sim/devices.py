"""Real block devices for volumes attached to the local instance.

On a Nitro instance an attached EBS volume shows up as an NVMe disk and udev
links it as /dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol<id without
dash>. The node half of the driver finds, formats, mounts and grows exactly
that, so the test bed makes it real: every volume has a sparse backing file
(<state-dir>/<vol-id>.img), an attach to the local instance puts a loop device
over it and links it as <device-dir>/nvme-Amazon_Elastic_Block_Store_vol<hex>,
detach removes both, growth truncates the file up and refreshes the loop size.
Snapshots keep a sparse copy of the file, and a volume created from a snapshot
starts from that copy, so bytes written through a real mount survive
snapshot -> restore. CopyVolumes copies the source's file the same way, so a
clone shows the source's data as it was at the CopyVolumes call.

Everything this module creates is tracked so that shutdown (SIGTERM, SIGINT,
parent death, normal exit) removes it; `sweep_stale` also cleans loop devices
left by an earlier simulator that was SIGKILLed. Without root (or without
losetup) the manager runs disabled and every call is a no-op.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import threading

log = logging.getLogger("ec2sim.devices")

GIB = 1024**3
LINK_PREFIX = "nvme-Amazon_Elastic_Block_Store_"
LOCK_NAME = ".ec2sim.lock"
STATE_DIR_PREFIX = "ec2sim-state-"
_OUR_FILE_RE = re.compile(r"^(vol|snap)-[0-9a-f]+\.img$")
_STALE_RE = re.compile(r"/" + STATE_DIR_PREFIX + r"(\d+)-[^/]+/")


def devices_possible() -> tuple[bool, str]:
    """Can this process make loop devices? (root, losetup, /dev/loop-control)"""
    if os.geteuid() != 0:
        return False, "not running as root"
    if not shutil.which("losetup"):
        return False, "losetup not found"
    if not os.path.exists("/dev/loop-control"):
        return False, "/dev/loop-control missing"
    return True, "ok"


def _run(*cmd: str) -> str:
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr.strip()}")
    return res.stdout.strip()


def link_name(volume_id: str) -> str:
    return LINK_PREFIX + volume_id.replace("-", "")


def _mount_points(dev: str) -> list[str]:
    """Mount points whose source is the block device `dev` (by major:minor)."""
    try:
        rdev = os.stat(dev).st_rdev
    except OSError:
        return []
    want = f"{os.major(rdev)}:{os.minor(rdev)}"
    points = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 4 and fields[2] == want:
                    points.append(fields[4].replace("\\040", " "))
    except OSError:
        pass
    return points


class DeviceManager:
    def __init__(self, enabled: bool, device_dir: str | None, state_dir: str | None) -> None:
        self.enabled = enabled
        self._lock = threading.RLock()
        self.loops: dict[str, str] = {}  # volume id -> /dev/loopN
        self.own_device_dir = device_dir is None
        self.own_state_dir = state_dir is None
        pid = os.getpid()
        if device_dir is None:
            device_dir = tempfile.mkdtemp(prefix=f"ec2sim-dev-{pid}-")
        else:
            os.makedirs(device_dir, exist_ok=True)
        if state_dir is None:
            state_dir = tempfile.mkdtemp(prefix=f"{STATE_DIR_PREFIX}{pid}-")
        else:
            os.makedirs(state_dir, exist_ok=True)
        self.device_dir = os.path.abspath(device_dir)
        self.state_dir = os.path.abspath(state_dir)
        # Held while we live: tells a sweeping simulator (even one in another PID
        # namespace) that this state dir is in use. The kernel drops it on SIGKILL.
        self._lock_path = os.path.join(self.state_dir, LOCK_NAME)
        self._lock_fd = os.open(self._lock_path, os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.files: set[str] = set()  # every backing/snapshot file we wrote
        self.links: set[str] = set()  # every link we made

    # -- paths ---------------------------------------------------------------
    def volume_file(self, volume_id: str) -> str:
        return os.path.join(self.state_dir, f"{volume_id}.img")

    def snapshot_file(self, snapshot_id: str) -> str:
        return os.path.join(self.state_dir, f"{snapshot_id}.img")

    def link_path(self, volume_id: str) -> str:
        return os.path.join(self.device_dir, link_name(volume_id))

    # -- volume lifecycle ----------------------------------------------------
    def _ensure_file(self, volume_id: str, size_gib: int) -> str:
        path = self.volume_file(volume_id)
        want = int(size_gib) * GIB
        if not os.path.exists(path):
            with open(path, "wb"):
                pass
            self.files.add(path)
        if os.path.getsize(path) < want:
            os.truncate(path, want)  # sparse: no blocks are allocated
        return path

    def attach(self, volume_id: str, size_gib: int) -> str | None:
        """Loop device + by-id style link for a volume; returns the link path."""
        if not self.enabled:
            return None
        with self._lock:
            if volume_id in self.loops:
                return self.link_path(volume_id)
            path = self._ensure_file(volume_id, size_gib)
            dev = _run("losetup", "--find", "--show", path)
            self.loops[volume_id] = dev
            link = self.link_path(volume_id)
            tmp = link + ".tmp"
            if os.path.lexists(tmp):
                os.unlink(tmp)
            os.symlink(dev, tmp)
            os.replace(tmp, link)
            self.links.add(link)
            log.info("attached %s as %s -> %s", volume_id, link, dev)
            return link

    def device_of(self, volume_id: str) -> str | None:
        return self.loops.get(volume_id)

    def is_mounted(self, volume_id: str) -> bool:
        dev = self.loops.get(volume_id)
        return bool(dev and _mount_points(dev))

    def detach(self, volume_id: str, force_unmount: bool = False) -> None:
        if not self.enabled:
            return
        with self._lock:
            link = self.link_path(volume_id)
            if link in self.links:
                if os.path.lexists(link):
                    os.unlink(link)
                self.links.discard(link)
            dev = self.loops.pop(volume_id, None)
            if dev is None:
                return
            if force_unmount:
                for point in _mount_points(dev):
                    subprocess.run(["umount", "-l", point], capture_output=True, check=False)
                    log.warning("lazily unmounted %s (was on %s of %s)", point, dev, volume_id)
            try:
                # On a busy device the kernel turns this into autoclear: the loop
                # device goes away as soon as its last user (a mount) lets go.
                _run("losetup", "-d", dev)
            except RuntimeError as e:
                log.error("could not detach %s of %s: %s", dev, volume_id, e)
            log.info("detached %s (%s)", volume_id, dev)

    def grow(self, volume_id: str, size_gib: int) -> None:
        if not self.enabled:
            return
        with self._lock:
            path = self.volume_file(volume_id)
            if not os.path.exists(path):
                return  # never had bytes; it will be created at the new size
            if os.path.getsize(path) < int(size_gib) * GIB:
                os.truncate(path, int(size_gib) * GIB)
            dev = self.loops.get(volume_id)
            if dev:
                _run("losetup", "-c", dev)
                log.info("grew %s to %d GiB (%s)", volume_id, size_gib, dev)

    def delete_volume(self, volume_id: str) -> None:
        if not self.enabled:
            return
        with self._lock:
            if volume_id in self.loops:
                self.detach(volume_id, force_unmount=True)
            self._remove(self.volume_file(volume_id))

    # -- snapshots -------------------------------------------------------------
    def snapshot(self, volume_id: str, snapshot_id: str) -> bool:
        """Point-in-time sparse copy of the volume's bytes (False: never had any)."""
        if not self.enabled:
            return False
        with self._lock:
            src = self.volume_file(volume_id)
            if not os.path.exists(src):
                return False
            dst = self.snapshot_file(snapshot_id)
            self.files.add(dst)  # before cp: a half-written copy is ours to delete too
            _run("cp", "--sparse=always", src, dst)
            return True

    def restore(self, snapshot_id: str, volume_id: str, size_gib: int) -> bool:
        if not self.enabled:
            return False
        with self._lock:
            src = self.snapshot_file(snapshot_id)
            if not os.path.exists(src):
                return False
            dst = self.volume_file(volume_id)
            self.files.add(dst)
            _run("cp", "--sparse=always", src, dst)
            self._ensure_file(volume_id, size_gib)
            return True

    def copy_volume(self, source_id: str, volume_id: str, size_gib: int) -> bool:
        """CopyVolumes: the source's bytes at this instant, grown to the copy's size.

        Same point-in-time sparse copy as a snapshot (EBS: a volume copy "includes
        all the data blocks written to the source volume at the time the volume
        copy initialization begins"). What sits in a writer's page cache and never
        reached the source's loop device is not in the copy, as on EBS (crash
        consistent). False: the source never had bytes, so neither has the copy.
        """
        if not self.enabled:
            return False
        with self._lock:
            src = self.volume_file(source_id)
            if not os.path.exists(src):
                return False
            dst = self.volume_file(volume_id)
            self.files.add(dst)  # before cp: a half-written copy is ours to delete too
            _run("cp", "--sparse=always", src, dst)
            self._ensure_file(volume_id, size_gib)
            return True

    def delete_snapshot(self, snapshot_id: str) -> None:
        if self.enabled:
            self._remove(self.snapshot_file(snapshot_id))

    # -- bulk ----------------------------------------------------------------------
    def _remove(self, path: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        self.files.discard(path)

    def release_all(self) -> None:
        """Detach every loop device and delete every file we made (reset/shutdown)."""
        with self._lock:
            for vol in list(self.loops):
                self.detach(vol, force_unmount=True)
            for path in list(self.files):
                self._remove(path)
            for link in list(self.links):
                if os.path.lexists(link):
                    os.unlink(link)
                self.links.discard(link)
            # Files that tracking missed (e.g. a cp that failed half way); only in
            # a state dir we created, never in one we were given.
            if self.own_state_dir:
                for name in os.listdir(self.state_dir):
                    if _OUR_FILE_RE.match(name):
                        self._remove(os.path.join(self.state_dir, name))

    def close(self) -> None:
        self.release_all()
        if self._lock_fd is not None:
            try:
                os.unlink(self._lock_path)
            except FileNotFoundError:
                pass
            os.close(self._lock_fd)
            self._lock_fd = None
        for own, d in ((self.own_device_dir, self.device_dir), (self.own_state_dir, self.state_dir)):
            if own:
                shutil.rmtree(d, ignore_errors=True)

    def describe(self) -> dict[str, dict[str, str]]:
        with self._lock:
            return {v: {"loop": dev, "link": self.link_path(v)} for v, dev in self.loops.items()}


def _dir_in_use(state_dir: str, pid: int) -> bool:
    """Is the simulator owning `state_dir` alive? (its flock, else its pid)"""
    if pid == os.getpid() or os.path.exists(f"/proc/{pid}"):
        return True
    try:
        fd = os.open(os.path.join(state_dir, LOCK_NAME), os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def sweep_stale() -> int:
    """Detach loop devices whose backing file sits in the default state dir of a dead simulator.

    A SIGKILLed simulator cannot clean up; the next one does it for it. Only
    files under <tmp>/ec2sim-state-<pid>-*/ with <pid> no longer alive are touched.
    """
    ok, _ = devices_possible()
    if not ok:
        return 0
    try:
        out = json.loads(_run("losetup", "-J", "-l") or '{"loopdevices": []}')
    except (RuntimeError, ValueError):
        return 0
    swept = 0
    tmp = tempfile.gettempdir().rstrip("/") + "/"
    for dev in out.get("loopdevices", []):
        back = dev.get("back-file") or ""
        m = _STALE_RE.search(back)
        if not back.startswith(tmp) or not m:
            continue
        pid = int(m.group(1))
        if _dir_in_use(back[: m.end() - 1], pid):
            continue
        for point in _mount_points(dev["name"]):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
        subprocess.run(["losetup", "-d", dev["name"]], capture_output=True, check=False)
        swept += 1
        log.warning("removed stale loop device %s of dead simulator %d", dev["name"], pid)
    # Temp dirs of dead simulators: state dirs first (their lock tells), then
    # device dirs whose owner has no state dir in use.
    names = sorted(os.listdir(tmp), key=lambda n: "dev" in n.split("-")[1:2])
    live: set[int] = set()
    for name in names:
        m = re.match(r"ec2sim-(state|dev)-(\d+)-", name)
        if not m:
            continue
        path = os.path.join(tmp, name)
        pid = int(m.group(2))
        if m.group(1) == "state" and _dir_in_use(path, pid):
            live.add(pid)
            continue
        if m.group(1) == "dev" and (pid in live or pid == os.getpid() or os.path.exists(f"/proc/{pid}")):
            continue
        shutil.rmtree(path, ignore_errors=True)
    return swept
