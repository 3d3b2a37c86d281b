"""Partitions on the local instance's devices: /dev/loopNpK like a real disk's partitions.

A static PV may name a partition of a volume (`partition: "1"`), so a volume whose
bytes hold a partition table must show its partitions. The devices layer makes its
loop devices with `losetup --partscan`, re-reads tables with `partx -u` at attach and
on POST /_sim/devices/rescan, links `<link>-partK` (udev's by-id `-part%n` links), and
removes partitions and links at detach. A test that writes a table through an attached
device runs `partx -u` itself: on a kernel without partition-table parsers (this test
bed's development kernel has neither CONFIG_MSDOS_PARTITION nor CONFIG_EFI_PARTITION),
BLKRRPART (`blockdev --rereadpt`, sfdisk's own re-read) succeeds and adds nothing,
while partx, which parses in user space and adds with BLKPG, works everywhere.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess

import pytest
from conftest import IS_ROOT, attachment_state, wait_for, wait_volume_state

ZONE = "us-east-1a"
GIB = 1024**3
SECTOR = 512

pytestmark = [
    pytest.mark.skipif(not IS_ROOT, reason="partitions need real loop devices, and those need root: run the suite as root"),
    pytest.mark.skipif(IS_ROOT and not shutil.which("partx"), reason="partx (util-linux) not installed"),
]
needs_sfdisk = pytest.mark.skipif(not shutil.which("sfdisk"), reason="sfdisk not installed (Debian package fdisk)")


def link_for(sim, volume_id):
    return os.path.join(sim.info["device_dir"], "nvme-Amazon_Elastic_Block_Store_" + volume_id.replace("-", ""))


def new_volume(ec2, size=1, **kw):
    v = ec2.create_volume(Size=size, AvailabilityZone=ZONE, VolumeType="gp3", **kw)
    wait_volume_state(ec2, v["VolumeId"], "available")
    return v["VolumeId"]


def attach_local(ec2, sim, vid, device="/dev/xvdba"):
    ec2.attach_volume(VolumeId=vid, InstanceId=sim.info["instance_id"], Device=device)
    wait_for(lambda: attachment_state(ec2, vid) == "attached", what=f"{vid} attached")
    link = link_for(sim, vid)
    return link, os.path.realpath(link)


def detach(ec2, vid, **kw):
    ec2.detach_volume(VolumeId=vid, **kw)
    wait_volume_state(ec2, vid, "available")


def size_of(dev):
    return int(subprocess.check_output(["blockdev", "--getsize64", dev]))


def kernel_partitions(dev):
    """Partition devices the kernel has for `dev` (sysfs), e.g. ["loop3p1"]."""
    name = os.path.basename(dev)
    try:
        entries = os.listdir(f"/sys/block/{name}")
    except FileNotFoundError:
        return []
    return sorted(e for e in entries if os.path.exists(f"/sys/block/{name}/{e}/partition"))


def write_mbr(dev, start, sectors, ptype=0x83):
    """A DOS partition table with one primary partition, written by hand (no sfdisk needed)."""
    entry = struct.pack("<B3sB3sII", 0x00, b"\xfe\xff\xff", ptype, b"\xfe\xff\xff", start, sectors)
    mbr = bytearray(SECTOR)
    mbr[446:462] = entry
    mbr[510:512] = b"\x55\xaa"
    fd = os.open(dev, os.O_WRONLY)
    try:
        os.pwrite(fd, bytes(mbr), 0)
        os.fsync(fd)
    finally:
        os.close(fd)


def partx_update(dev):
    subprocess.run(["partx", "-u", dev], check=True, capture_output=True)


def assert_no_partitions_left(dev):
    name = os.path.basename(dev)
    assert not [p for p in os.listdir("/dev") if p.startswith(name + "p")], "partition device nodes left behind"
    assert kernel_partitions(dev) == []


@needs_sfdisk
def test_gpt_written_with_sfdisk_shows_partition(ec2, sim, tmp_path):
    vid = new_volume(ec2, size=1)
    link, dev = attach_local(ec2, sim, vid)
    assert dev.startswith("/dev/loop") and kernel_partitions(dev) == []
    # GPT with one 512 MiB Linux partition, written through the device (the link).
    script = "label: gpt\nstart=2048, size=1048576, type=L\n"
    subprocess.run(["sfdisk", "-q", "--no-reread", link], input=script, text=True, check=True)
    table = json.loads(subprocess.check_output(["sfdisk", "-J", link]))["partitiontable"]
    assert table["label"] == "gpt" and len(table["partitions"]) == 1
    part = table["partitions"][0]
    assert part["start"] == 2048 and part["size"] == 1048576
    partx_update(dev)
    p1 = dev + "p1"
    wait_for(lambda: os.path.exists(p1), timeout=5, what=f"{p1}")
    assert kernel_partitions(dev) == [os.path.basename(p1)]
    assert size_of(p1) == part["size"] * SECTOR == 512 * 1024**2
    with open(f"/sys/block/{os.path.basename(dev)}/{os.path.basename(p1)}/start") as f:
        assert int(f.read()) == 2048
    assert size_of(link) == GIB  # the disk itself is unchanged

    # The layer's rescan gives the udev-style link and reports the partition.
    devices = sim.control("POST", "/_sim/devices/rescan", {"volume": vid})["devices"]
    assert devices[vid]["partitions"] == {"1": p1}
    assert os.readlink(link + "-part1") == p1
    assert sim.control("GET", "/_sim/state")["devices"][vid]["partitions"] == {"1": p1}

    # A filesystem on the partition; while it is mounted the detach stays busy.
    subprocess.run(["mkfs.ext4", "-q", "-F", p1], check=True)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", p1, str(mnt)], check=True)
    try:
        (mnt / "hello").write_text("partition one")
        ec2.detach_volume(VolumeId=vid)
        wait_for(lambda: attachment_state(ec2, vid) == "busy", what="busy while the partition is mounted")
        assert os.path.exists(p1)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    wait_volume_state(ec2, vid, "available")
    assert not os.path.lexists(link) and not os.path.lexists(link + "-part1")
    assert_no_partitions_left(dev)

    # Attached again: the table is in the volume's bytes, the partition is there at once.
    link, dev = attach_local(ec2, sim, vid, device="/dev/xvdbb")
    p1 = dev + "p1"
    assert os.path.exists(p1) and size_of(p1) == 512 * 1024**2
    assert os.readlink(link + "-part1") == p1
    subprocess.run(["mount", "-o", "ro", p1, str(mnt)], check=True)
    try:
        assert (mnt / "hello").read_text() == "partition one"
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    detach(ec2, vid)
    assert_no_partitions_left(dev)


def test_mbr_partition_appears_after_partx(ec2, sim):
    vid = new_volume(ec2, size=1)
    link, dev = attach_local(ec2, sim, vid)
    write_mbr(link, start=2048, sectors=409600)  # 200 MiB
    partx_update(dev)
    p1 = dev + "p1"
    wait_for(lambda: os.path.exists(p1), timeout=5, what=f"{p1}")
    assert size_of(p1) == 409600 * SECTOR
    # The table removed (sector 0 zeroed): a rescan drops the partition and its link.
    sim.control("POST", "/_sim/devices/rescan", {})
    assert os.readlink(link + "-part1") == p1
    fd = os.open(link, os.O_WRONLY)
    try:
        os.pwrite(fd, bytes(SECTOR), 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    devices = sim.control("POST", "/_sim/devices/rescan", {"volume": vid})["devices"]
    assert devices[vid]["partitions"] == {}
    assert not os.path.lexists(link + "-part1")
    assert_no_partitions_left(dev)
    detach(ec2, vid)


def test_partitions_survive_snapshot_restore_and_copy(ec2, sim):
    vid = new_volume(ec2, size=1)
    link, dev = attach_local(ec2, sim, vid)
    write_mbr(link, start=2048, sectors=204800)  # 100 MiB
    sid = ec2.create_snapshot(VolumeId=vid)["SnapshotId"]
    clone = ec2.copy_volumes(SourceVolumeId=vid)["Volumes"][0]["VolumeId"]
    detach(ec2, vid)
    wait_for(lambda: ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]["State"] == "completed",
             what="snapshot completed")
    restored = ec2.create_volume(SnapshotId=sid, AvailabilityZone=ZONE, Size=2)["VolumeId"]
    wait_volume_state(ec2, restored, "available")
    wait_volume_state(ec2, clone, "available")
    for i, v in enumerate((restored, clone)):
        link, dev = attach_local(ec2, sim, v, device=f"/dev/xvdc{'ab'[i]}")
        assert size_of(dev + "p1") == 204800 * SECTOR  # at attach, no partx needed
        assert os.readlink(link + "-part1") == dev + "p1"
        detach(ec2, v)
        assert_no_partitions_left(dev)


def test_force_detach_and_reset_leave_no_partitions(ec2, sim, tmp_path):
    vid = new_volume(ec2, size=1)
    link, dev = attach_local(ec2, sim, vid)
    write_mbr(link, start=2048, sectors=204800)
    partx_update(dev)
    p1 = dev + "p1"
    wait_for(lambda: os.path.exists(p1), timeout=5, what=f"{p1}")
    subprocess.run(["mkfs.ext4", "-q", "-F", p1], check=True)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", p1, str(mnt)], check=True)
    try:
        detach(ec2, vid, Force=True)  # lazily unmounts the partition
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
    assert not os.path.lexists(link) and not os.path.lexists(link + "-part1")
    wait_for(lambda: kernel_partitions(dev) == [], timeout=5, what="partition gone")
    assert_no_partitions_left(dev)

    # /_sim/reset with a partitioned device attached: nothing left either.
    vid2 = new_volume(ec2, size=1)
    link2, dev2 = attach_local(ec2, sim, vid2)
    write_mbr(link2, start=2048, sectors=204800)
    sim.control("POST", "/_sim/devices/rescan", {})
    assert os.path.exists(dev2 + "p1") and os.path.islink(link2 + "-part1")
    sim.reset()
    assert not os.path.lexists(link2 + "-part1")
    assert_no_partitions_left(dev2)


def test_rescan_of_a_volume_without_device_is_refused(ec2, sim):
    vid = new_volume(ec2)
    status, _, body = sim.http("POST", "/_sim/devices/rescan", json.dumps({"volume": vid}).encode(),
                               {"Content-Type": "application/json"})
    assert status == 400 and vid.encode() in body
    status, _, body = sim.http("POST", "/_sim/devices/rescan", json.dumps({"bogus": 1}).encode(),
                               {"Content-Type": "application/json"})
    assert status == 400
