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

Partitions: a volume may hold a partition table (a static PV can name
`partition: "1"`), so loop devices are made with `losetup --partscan` and the
partitions appear as /dev/loopNpK, named like an NVMe disk's (nvme1n1p1), with
`<link>-partK` links beside the volume's link, as udev's persistent-storage rules
make `...-part%n` links for by-id disks. The kernel's own partition scan (at
losetup --partscan, BLKRRPART from `blockdev --rereadpt` or sfdisk) needs the
kernel's partition-table parsers; a kernel built without them (like the one this
test bed was developed on: no CONFIG_MSDOS_PARTITION / CONFIG_EFI_PARTITION)
answers BLKRRPART with success and adds nothing. `partx -u` reads the table in
user space (libblkid) and adds, resizes or deletes the kernel's partitions with
BLKPG, which works with or without the parsers, so the layer runs it at every
attach and on `rescan` (POST /_sim/devices/rescan), and a test that wrote a table
through an attached device runs it too (or asks for the rescan). Detach deletes
the partitions (`partx -d`) and their links before `losetup -d`; a partition still
mounted keeps the attachment `busy` like a mounted whole device.

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
from typing import Any

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


def partitions(dev: str) -> dict[str, str]:
    """Partitions the kernel has for the disk `dev`: {"1": "/dev/loop3p1", ...} (from sysfs)."""
    name = os.path.basename(dev)
    base = f"/sys/block/{name}"
    found: dict[str, str] = {}
    try:
        entries = os.listdir(base)
    except OSError:
        return found
    for entry in entries:
        try:
            with open(f"{base}/{entry}/partition") as f:
                number = f.read().strip()
        except OSError:
            continue  # not a partition (queue/, holders/, ...)
        found[number] = f"/dev/{entry}"
    return dict(sorted(found.items(), key=lambda kv: int(kv[0])))


def reread_partitions(dev: str) -> dict[str, str]:
    """Make the kernel's partitions of `dev` match its partition table (`partx -u`).

    partx -u adds partitions the table has and the kernel lacks, resizes changed
    ones and deletes those the table no longer has; without any table it fails
    ("failed to read partition table"), so stale partitions are then deleted with
    partx -d. Returns the partitions afterwards.
    """
    if not shutil.which("partx"):
        return partitions(dev)
    res = subprocess.run(["partx", "-u", dev], capture_output=True, text=True, check=False)
    if res.returncode != 0 and partitions(dev):
        subprocess.run(["partx", "-d", dev], capture_output=True, check=False)
    return partitions(dev)


def _disk_mount_points(dev: str) -> list[str]:
    """Mount points of the disk `dev` itself and of each of its partitions."""
    points = _mount_points(dev)
    for part in partitions(dev).values():
        points += _mount_points(part)
    return points


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
            # --partscan (LO_FLAGS_PARTSCAN): the device may carry partitions, like a disk.
            dev = _run("losetup", "--find", "--show", "--partscan", path)
            self.loops[volume_id] = dev
            link = self.link_path(volume_id)
            self._link(dev, link)
            parts = reread_partitions(dev)  # bytes restored or copied may hold a table
            self._sync_part_links(volume_id, parts)
            log.info("attached %s as %s -> %s%s", volume_id, link, dev, f" partitions {parts}" if parts else "")
            return link

    def _link(self, target: str, link: str) -> None:
        tmp = link + ".tmp"
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(target, tmp)
        os.replace(tmp, link)
        self.links.add(link)

    def _part_links(self, volume_id: str) -> list[str]:
        prefix = self.link_path(volume_id) + "-part"
        return [link for link in self.links if link.startswith(prefix)]

    def _sync_part_links(self, volume_id: str, parts: dict[str, str]) -> None:
        """`<link>-partK` -> /dev/loopNpK for exactly the partitions the kernel has."""
        want = {f"{self.link_path(volume_id)}-part{n}": dev for n, dev in parts.items()}
        for link in self._part_links(volume_id):
            if link not in want:
                self._unlink(link)
        for link, dev in want.items():
            if not (os.path.islink(link) and os.readlink(link) == dev):
                self._link(dev, link)

    def _unlink(self, link: str) -> None:
        if os.path.lexists(link):
            os.unlink(link)
        self.links.discard(link)

    def rescan(self, volume_id: str | None = None) -> dict[str, dict[str, Any]]:
        """Re-read the partition tables of one attached volume (or all): partitions and links.

        What the kernel's scan plus udev do on a host whose kernel reads partition
        tables; see the module's notes. Unknown or unattached volume -> KeyError.
        """
        if not self.enabled:
            if volume_id is not None:
                raise KeyError(volume_id)
            return {}
        with self._lock:
            if volume_id is not None and volume_id not in self.loops:
                raise KeyError(volume_id)
            for vol in [volume_id] if volume_id is not None else list(self.loops):
                self._sync_part_links(vol, reread_partitions(self.loops[vol]))
            return self.describe()

    def device_of(self, volume_id: str) -> str | None:
        return self.loops.get(volume_id)

    def is_mounted(self, volume_id: str) -> bool:
        """The volume's device or one of its partitions is mounted."""
        dev = self.loops.get(volume_id)
        return bool(dev and _disk_mount_points(dev))

    def detach(self, volume_id: str, force_unmount: bool = False) -> None:
        if not self.enabled:
            return
        with self._lock:
            for part_link in self._part_links(volume_id):
                self._unlink(part_link)
            link = self.link_path(volume_id)
            if link in self.links:
                self._unlink(link)
            dev = self.loops.pop(volume_id, None)
            if dev is None:
                return
            if force_unmount:
                for point in _disk_mount_points(dev):
                    subprocess.run(["umount", "-l", point], capture_output=True, check=False)
                    log.warning("lazily unmounted %s (was on %s of %s)", point, dev, volume_id)
            if partitions(dev) and shutil.which("partx"):
                # Drop /dev/loopNpK now. A partition still open (a lazy unmount not yet
                # finished) refuses (EBUSY); the kernel then drops the partitions itself
                # when the autocleared device goes (loop's partscan flag).
                subprocess.run(["partx", "-d", dev], capture_output=True, check=False)
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

    def describe(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {
                v: {"loop": dev, "link": self.link_path(v), "partitions": partitions(dev)}
                for v, dev in self.loops.items()
            }


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
        for point in _disk_mount_points(dev["name"]):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
        if partitions(dev["name"]) and shutil.which("partx"):
            subprocess.run(["partx", "-d", dev["name"]], capture_output=True, check=False)
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
