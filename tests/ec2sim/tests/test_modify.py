"""ModifyVolume: modifying -> optimizing -> completed, one at a time, real growth."""

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


def mod(ec2, vid):
    return ec2.describe_volumes_modifications(VolumeIds=[vid])["VolumesModifications"][0]


def size(ec2, vid):
    return ec2.describe_volumes(VolumeIds=[vid])["Volumes"][0]["Size"]


def test_modification_states_and_one_at_a_time(ec2, sim):
    sim.configure(delays={"modify": 0.6, "optimize": 0.8})
    vid = new_volume(ec2, size=1)
    with pytest.raises(ClientError) as e:
        ec2.describe_volumes_modifications(VolumeIds=[vid])
    assert error_code(e) == "InvalidVolumeModification.NotFound"

    m = ec2.modify_volume(VolumeId=vid, Size=2, VolumeType="gp3", Iops=4000)["VolumeModification"]
    assert m["ModificationState"] == "modifying"
    assert (m["OriginalSize"], m["TargetSize"], m["TargetIops"], m["OriginalIops"]) == (1, 2, 4000, 3000)
    assert size(ec2, vid) == 1  # not before optimizing
    with pytest.raises(ClientError) as e:
        ec2.modify_volume(VolumeId=vid, Size=3)
    assert error_code(e) == "IncorrectModificationState"

    wait_for(lambda: mod(ec2, vid)["ModificationState"] == "optimizing", what="optimizing")
    assert size(ec2, vid) == 2
    assert ec2.describe_volumes(VolumeIds=[vid])["Volumes"][0]["Iops"] == 4000
    with pytest.raises(ClientError) as e:  # still refused while optimizing
        ec2.modify_volume(VolumeId=vid, Size=3)
    assert error_code(e) == "IncorrectModificationState"

    done = wait_for(lambda: (x := mod(ec2, vid))["ModificationState"] == "completed" and x, what="completed")
    assert done["Progress"] == 100 and "EndTime" in done
    ec2.modify_volume(VolumeId=vid, Size=3)  # accepted once completed (no 6h cooldown)
    mods = ec2.describe_volumes_modifications(VolumeIds=[vid])["VolumesModifications"]
    assert len(mods) == 1 and mods[0]["TargetSize"] == 3  # only the latest one


def test_shrink_and_empty_modification_refused(ec2):
    vid = new_volume(ec2, size=4)
    with pytest.raises(ClientError) as e:
        ec2.modify_volume(VolumeId=vid, Size=3)
    assert error_code(e) == "InvalidParameterValue"
    with pytest.raises(ClientError) as e:
        ec2.modify_volume(VolumeId=vid)
    assert error_code(e) == "MissingParameter"


def test_modification_filters(ec2, sim):
    sim.configure(delays={"modify": 2.0})
    a, b = new_volume(ec2), new_volume(ec2)
    ec2.modify_volume(VolumeId=a, Size=2)
    r = ec2.describe_volumes_modifications(Filters=[{"Name": "modification-state", "Values": ["modifying"]}])
    assert [m["VolumeId"] for m in r["VolumesModifications"]] == [a]
    assert b not in {m["VolumeId"] for m in ec2.describe_volumes_modifications()["VolumesModifications"]}


@needs_root
def test_growth_visible_to_blockdev(ec2, sim):
    vid = new_volume(ec2, size=1)
    link = os.path.join(sim.info["device_dir"], "nvme-Amazon_Elastic_Block_Store_" + vid.replace("-", ""))
    ec2.attach_volume(VolumeId=vid, InstanceId=sim.info["instance_id"], Device="/dev/xvdba")
    wait_for(lambda: attachment_state(ec2, vid) == "attached")

    def blk():
        return int(subprocess.check_output(["blockdev", "--getsize64", link]))

    assert blk() == 1 * GIB
    ec2.modify_volume(VolumeId=vid, Size=3)
    wait_for(lambda: mod(ec2, vid)["ModificationState"] in ("optimizing", "completed"))
    assert blk() == 3 * GIB
