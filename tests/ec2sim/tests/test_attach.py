"""AttachVolume / DetachVolume: EC2's checks, state machine and the real device."""

from __future__ import annotations

import os
import subprocess

import pytest
from botocore.exceptions import ClientError
from conftest import (attachment_state, error_code, needs_root, run_instance, volume, wait_for,
                      wait_volume_state)

ZONE = "us-east-1a"
GIB = 1024**3


def new_volume(ec2, size=1, zone=ZONE, **kw):
    v = ec2.create_volume(Size=size, AvailabilityZone=zone, VolumeType="gp3", **kw)
    wait_volume_state(ec2, v["VolumeId"], "available")
    return v["VolumeId"]


def link_for(sim, volume_id):
    return os.path.join(sim.info["device_dir"], "nvme-Amazon_Elastic_Block_Store_" + volume_id.replace("-", ""))


def test_attach_detach_state_machine(ec2, sim):
    sim.configure(delays={"attach": 0.5, "detach": 0.5})
    vid = new_volume(ec2)
    r = ec2.attach_volume(VolumeId=vid, InstanceId=sim.info["instance_id"], Device="/dev/xvdaa")
    assert r["State"] == "attaching"
    seen = {attachment_state(ec2, vid)}
    wait_for(lambda: attachment_state(ec2, vid) == "attached", what="attached")
    assert "attaching" in seen
    assert volume(ec2, vid)["State"] == "in-use"
    inst = ec2.describe_instances(InstanceIds=[sim.info["instance_id"]])["Reservations"][0]["Instances"][0]
    bdm = {m["DeviceName"]: m["Ebs"] for m in inst["BlockDeviceMappings"]}
    assert bdm["/dev/xvdaa"]["VolumeId"] == vid and bdm["/dev/xvdaa"]["Status"] == "attached"

    d = ec2.detach_volume(VolumeId=vid)
    assert d["State"] == "detaching"
    v = volume(ec2, vid)
    assert v["State"] == "in-use" and v["Attachments"][0]["State"] == "detaching"
    wait_volume_state(ec2, vid, "available")
    assert volume(ec2, vid)["Attachments"] == []


def test_local_instance_has_root_device_without_loop(ec2, sim):
    inst = ec2.describe_instances(InstanceIds=[sim.info["instance_id"]])["Reservations"][0]["Instances"][0]
    assert inst["RootDeviceName"] == "/dev/xvda"
    assert inst["Placement"]["AvailabilityZone"] == sim.info["availability_zone"]
    names = [m["DeviceName"] for m in inst["BlockDeviceMappings"]]
    assert names == ["/dev/xvda"]
    assert sim.control("GET", "/_sim/state")["devices"] == {}


def test_attached_elsewhere_is_volume_in_use(ec2, sim):
    other = run_instance(ec2, ZONE)
    vid = new_volume(ec2)
    ec2.attach_volume(VolumeId=vid, InstanceId=other, Device="/dev/xvdba")
    for target, device in ((sim.info["instance_id"], "/dev/xvdbb"), (other, "/dev/xvdbc")):
        with pytest.raises(ClientError) as e:
            ec2.attach_volume(VolumeId=vid, InstanceId=target, Device=device)
        assert error_code(e) == "VolumeInUse"
    # moto alone would have moved it; it must still be on `other`
    assert volume(ec2, vid)["Attachments"][0]["InstanceId"] == other


def test_zone_mismatch(ec2, sim):
    vid = new_volume(ec2, zone="us-east-1b")
    with pytest.raises(ClientError) as e:
        ec2.attach_volume(VolumeId=vid, InstanceId=sim.info["instance_id"], Device="/dev/xvdba")
    assert error_code(e) == "InvalidVolume.ZoneMismatch"


def test_device_name_in_use(ec2, sim):
    a, b = new_volume(ec2), new_volume(ec2)
    ec2.attach_volume(VolumeId=a, InstanceId=sim.info["instance_id"], Device="/dev/xvdba")
    with pytest.raises(ClientError) as e:
        ec2.attach_volume(VolumeId=b, InstanceId=sim.info["instance_id"], Device="/dev/xvdba")
    assert error_code(e) == "InvalidParameterValue"
    assert "is already in use" in e.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as e:  # the root device too
        ec2.attach_volume(VolumeId=b, InstanceId=sim.info["instance_id"], Device="/dev/xvda")
    assert "is already in use" in e.value.response["Error"]["Message"]
    assert volume(ec2, a)["Attachments"][0]["State"] in ("attaching", "attached")


@pytest.mark.parametrize("device", ["/dev/foo", "xvdf", "/dev/xvdzz", "/dev/xvdde9", "/dev/nvme1n1", "/dev/sdf16", ""])
def test_invalid_device_names(ec2, sim, device):
    vid = new_volume(ec2)
    with pytest.raises(ClientError) as e:
        ec2.attach_volume(VolumeId=vid, InstanceId=sim.info["instance_id"], Device=device)
    assert error_code(e) in ("InvalidParameterValue", "MissingParameter")


@pytest.mark.parametrize("device", ["/dev/sdf", "/dev/sdp", "/dev/xvdb", "/dev/xvdaa", "/dev/xvdcz", "/dev/xvddx", "/dev/sdf1"])
def test_valid_device_names(ec2, device):
    other = run_instance(ec2, ZONE)
    vid = new_volume(ec2)
    assert ec2.attach_volume(VolumeId=vid, InstanceId=other, Device=device)["State"] == "attaching"


def test_attach_while_creating_and_detach_when_available(ec2, sim):
    v = ec2.create_volume(Size=1, AvailabilityZone=ZONE)
    with pytest.raises(ClientError) as e:
        ec2.attach_volume(VolumeId=v["VolumeId"], InstanceId=sim.info["instance_id"], Device="/dev/xvdba")
    assert error_code(e) == "IncorrectState"
    wait_volume_state(ec2, v["VolumeId"], "available")
    with pytest.raises(ClientError) as e:
        ec2.detach_volume(VolumeId=v["VolumeId"])
    assert error_code(e) == "IncorrectState"


def test_detach_from_wrong_instance(ec2, sim):
    other = run_instance(ec2, ZONE)
    vid = new_volume(ec2)
    ec2.attach_volume(VolumeId=vid, InstanceId=other, Device="/dev/xvdba")
    with pytest.raises(ClientError) as e:
        ec2.detach_volume(VolumeId=vid, InstanceId=sim.info["instance_id"])
    assert error_code(e) == "InvalidAttachment.NotFound"


def test_delete_attached_volume_is_volume_in_use(ec2, sim):
    sim.configure(delays={"detach": 1.0})
    vid = new_volume(ec2)
    ec2.attach_volume(VolumeId=vid, InstanceId=sim.info["instance_id"], Device="/dev/xvdba")
    for _ in ("attaching", "attached"):
        with pytest.raises(ClientError) as e:
            ec2.delete_volume(VolumeId=vid)
        assert error_code(e) == "VolumeInUse"
        wait_for(lambda: attachment_state(ec2, vid) == "attached")
    ec2.detach_volume(VolumeId=vid)
    with pytest.raises(ClientError) as e:  # still detaching
        ec2.delete_volume(VolumeId=vid)
    assert error_code(e) == "VolumeInUse"
    wait_volume_state(ec2, vid, "available")
    ec2.delete_volume(VolumeId=vid)


@needs_root
def test_attach_makes_real_device_of_right_size(ec2, sim):
    sim.configure(delays={"attach": 0.5})
    vid = new_volume(ec2, size=3)
    link = link_for(sim, vid)
    ec2.attach_volume(VolumeId=vid, InstanceId=sim.info["instance_id"], Device="/dev/xvdba")
    assert not os.path.exists(link)  # not before EC2 says attached
    wait_for(lambda: attachment_state(ec2, vid) == "attached")
    assert os.path.islink(link)
    dev = os.path.realpath(link)
    assert dev.startswith("/dev/loop")
    size = int(subprocess.check_output(["blockdev", "--getsize64", link]))
    assert size == 3 * GIB
    ec2.detach_volume(VolumeId=vid)
    wait_volume_state(ec2, vid, "available")
    assert not os.path.lexists(link)
    out = subprocess.check_output(["losetup", "-a"], text=True)
    assert sim.info["state_dir"] not in out


@needs_root
def test_other_instances_get_no_device(ec2, sim):
    other = run_instance(ec2, ZONE)
    vid = new_volume(ec2)
    ec2.attach_volume(VolumeId=vid, InstanceId=other, Device="/dev/xvdba")
    wait_for(lambda: attachment_state(ec2, vid) == "attached")
    assert not os.path.lexists(link_for(sim, vid))
    assert sim.control("GET", "/_sim/state")["devices"] == {}


@needs_root
def test_detach_of_mounted_volume_stays_busy_until_unmounted(ec2, sim, tmp_path):
    vid = new_volume(ec2)
    link = link_for(sim, vid)
    ec2.attach_volume(VolumeId=vid, InstanceId=sim.info["instance_id"], Device="/dev/xvdba")
    wait_for(lambda: attachment_state(ec2, vid) == "attached")
    subprocess.run(["mkfs.ext4", "-q", "-F", link], check=True)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", link, str(mnt)], check=True)
    try:
        ec2.detach_volume(VolumeId=vid)
        wait_for(lambda: attachment_state(ec2, vid) == "busy", what="busy")
        assert os.path.islink(link)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    wait_volume_state(ec2, vid, "available")
    assert not os.path.lexists(link)


@needs_root
def test_terminating_the_local_instance_removes_its_devices(ec2, sim):
    vid = new_volume(ec2)
    ec2.attach_volume(VolumeId=vid, InstanceId=sim.info["instance_id"], Device="/dev/xvdba")
    wait_for(lambda: attachment_state(ec2, vid) == "attached")
    assert os.path.islink(link_for(sim, vid))
    ec2.terminate_instances(InstanceIds=[sim.info["instance_id"]])
    wait_for(lambda: not os.path.lexists(link_for(sim, vid)), timeout=5, what="device removed")
    assert sim.control("GET", "/_sim/state")["devices"] == {}
