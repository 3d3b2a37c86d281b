"""Snapshots: pending -> completed, real bytes through snapshot -> restore, listing, FSR."""

from __future__ import annotations

import os
import subprocess

import pytest
from botocore.exceptions import ClientError
from conftest import attachment_state, error_code, needs_root, wait_for, wait_volume_state

ZONE = "us-east-1a"
GIB = 1024**3


def new_volume(ec2, size=1, **kw):
    v = ec2.create_volume(Size=size, AvailabilityZone=ZONE, VolumeType="gp3", **kw)
    wait_volume_state(ec2, v["VolumeId"], "available")
    return v["VolumeId"]


def snapshot(ec2, sid):
    return ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]


def wait_snapshot(ec2, sid):
    return wait_for(lambda: (s := snapshot(ec2, sid))["State"] == "completed" and s, what="snapshot completed")


def test_snapshot_pending_then_completed(ec2, sim):
    sim.configure(delays={"snapshot": 1.0})
    vid = new_volume(ec2, size=2)
    s = ec2.create_snapshot(VolumeId=vid, Description="x")
    assert s["State"] == "pending"
    assert s["VolumeSize"] == 2
    progress = {snapshot(ec2, s["SnapshotId"])["Progress"] for _ in range(3)}
    assert all(p.endswith("%") and int(p[:-1]) < 100 for p in progress)
    with pytest.raises(ClientError) as e:  # cannot restore from a pending snapshot
        ec2.create_volume(SnapshotId=s["SnapshotId"], AvailabilityZone=ZONE)
    assert error_code(e) == "IncorrectState"
    done = wait_snapshot(ec2, s["SnapshotId"])
    assert done["Progress"] == "100%"
    # a later resize of the source does not change what the snapshot recorded
    ec2.modify_volume(VolumeId=vid, Size=5)
    wait_for(lambda: ec2.describe_volumes(VolumeIds=[vid])["Volumes"][0]["Size"] == 5)
    assert snapshot(ec2, s["SnapshotId"])["VolumeSize"] == 2


def test_restore_size_rules(ec2):
    vid = new_volume(ec2, size=4)
    sid = ec2.create_snapshot(VolumeId=vid)["SnapshotId"]
    wait_snapshot(ec2, sid)
    with pytest.raises(ClientError) as e:
        ec2.create_volume(SnapshotId=sid, AvailabilityZone=ZONE, Size=3)
    assert error_code(e) == "InvalidParameterValue"
    v = ec2.create_volume(SnapshotId=sid, AvailabilityZone=ZONE)
    assert v["Size"] == 4 and v["SnapshotId"] == sid


def test_describe_snapshots_lists_own_and_paginates(ec2):
    vid = new_volume(ec2)
    ids = {ec2.create_snapshot(VolumeId=vid)["SnapshotId"] for _ in range(7)}
    # moto's ~1300 built-in AMI snapshots belong to other accounts: not listed
    assert {s["SnapshotId"] for s in ec2.describe_snapshots()["Snapshots"]} == ids
    assert {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]} == ids
    assert ec2.describe_snapshots(OwnerIds=["999999999999"])["Snapshots"] == []
    r1 = ec2.describe_snapshots(MaxResults=5)
    r2 = ec2.describe_snapshots(MaxResults=5, NextToken=r1["NextToken"])
    assert len(r1["Snapshots"]) == 5 and len(r2["Snapshots"]) == 2 and "NextToken" not in r2
    assert {s["SnapshotId"] for s in r1["Snapshots"] + r2["Snapshots"]} == ids
    with pytest.raises(ClientError) as e:
        ec2.describe_snapshots(SnapshotIds=["snap-00000000000000000"])
    assert error_code(e) == "InvalidSnapshot.NotFound"


def test_fast_snapshot_restores_state_machine(ec2, sim):
    sim.configure(delays={"fsr_enable": 0.5, "fsr_optimize": 0.5, "fsr_disable": 0.3})
    vid = new_volume(ec2)
    sid = ec2.create_snapshot(VolumeId=vid)["SnapshotId"]
    wait_snapshot(ec2, sid)
    r = ec2.enable_fast_snapshot_restores(AvailabilityZones=[ZONE, "us-east-1b"], SourceSnapshotIds=[sid, "snap-0000000000000dead"])
    assert [(i["SnapshotId"], i["AvailabilityZone"], i["State"]) for i in r["Successful"]] == [
        (sid, ZONE, "enabling"), (sid, "us-east-1b", "enabling")]
    assert r["Unsuccessful"][0]["SnapshotId"] == "snap-0000000000000dead"
    assert r["Unsuccessful"][0]["FastSnapshotRestoreStateErrors"][0]["Error"]["Code"] == "InvalidSnapshot.NotFound"

    def states():
        return {(i["AvailabilityZone"], i["State"]) for i in ec2.describe_fast_snapshot_restores()["FastSnapshotRestores"]}

    seen = set()
    wait_for(lambda: (seen.update(states()) or True) and states() == {(ZONE, "enabled"), ("us-east-1b", "enabled")})
    assert (ZONE, "optimizing") in seen or (ZONE, "enabling") in seen
    f = ec2.describe_fast_snapshot_restores(Filters=[{"Name": "availability-zone", "Values": [ZONE]}])
    item = f["FastSnapshotRestores"][0]
    assert item["State"] == "enabled" and "EnabledTime" in item and "OptimizingTime" in item
    assert ec2.create_volume(SnapshotId=sid, AvailabilityZone=ZONE)["FastRestored"] is True

    d = ec2.disable_fast_snapshot_restores(AvailabilityZones=[ZONE], SourceSnapshotIds=[sid])
    assert d["Successful"][0]["State"] == "disabling"
    wait_for(lambda: states() == {("us-east-1b", "enabled")}, what="disabled entry gone")


@needs_root
def test_bytes_survive_snapshot_and_restore(ec2, sim, tmp_path):
    """Data written through a real mount comes back on a volume restored from the snapshot."""
    me = sim.info["instance_id"]
    link = lambda v: os.path.join(sim.info["device_dir"], "nvme-Amazon_Elastic_Block_Store_" + v.replace("-", ""))
    src = new_volume(ec2, size=1)
    ec2.attach_volume(VolumeId=src, InstanceId=me, Device="/dev/xvdba")
    wait_for(lambda: attachment_state(ec2, src) == "attached")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mkfs.ext4", "-q", "-F", link(src)], check=True)
    subprocess.run(["mount", link(src), str(mnt)], check=True)
    payload = os.urandom(1 << 20)
    try:
        (mnt / "data.bin").write_bytes(payload)
        subprocess.run(["sync", "-f", str(mnt / "data.bin")], check=True)
        sid = ec2.create_snapshot(VolumeId=src)["SnapshotId"]
        # written after the snapshot: must not appear in the restore
        (mnt / "later.txt").write_text("after")
        subprocess.run(["sync", "-f", str(mnt / "later.txt")], check=True)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    wait_snapshot(ec2, sid)
    dst = ec2.create_volume(SnapshotId=sid, AvailabilityZone=ZONE, Size=2, VolumeType="gp3")["VolumeId"]
    wait_volume_state(ec2, dst, "available")
    ec2.attach_volume(VolumeId=dst, InstanceId=me, Device="/dev/xvdbb")
    wait_for(lambda: attachment_state(ec2, dst) == "attached")
    assert int(subprocess.check_output(["blockdev", "--getsize64", link(dst)])) == 2 * GIB
    subprocess.run(["mount", "-o", "ro", link(dst), str(mnt)], check=True)
    try:
        assert (mnt / "data.bin").read_bytes() == payload
        assert not (mnt / "later.txt").exists()
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_create_snapshots_leaves_out_excluded_data_volumes(ec2):
    from conftest import run_instance

    inst = run_instance(ec2, ZONE)
    a, b = new_volume(ec2), new_volume(ec2)
    for vid, dev in ((a, "/dev/xvdba"), (b, "/dev/xvdbb")):
        ec2.attach_volume(VolumeId=vid, InstanceId=inst, Device=dev)
        wait_for(lambda: attachment_state(ec2, vid) == "attached", what="attached")
    out = ec2.create_snapshots(
        InstanceSpecification={"InstanceId": inst, "ExcludeBootVolume": True, "ExcludeDataVolumeIds": [b]},
        Description="group",
    )
    assert [s["VolumeId"] for s in out["Snapshots"]] == [a]
    listed = ec2.describe_snapshots(Filters=[{"Name": "volume-id", "Values": [b]}])["Snapshots"]
    assert listed == [], "no snapshot of the excluded volume"
    everything = ec2.create_snapshots(InstanceSpecification={"InstanceId": inst, "ExcludeBootVolume": True})
    assert sorted(s["VolumeId"] for s in everything["Snapshots"]) == sorted([a, b])
