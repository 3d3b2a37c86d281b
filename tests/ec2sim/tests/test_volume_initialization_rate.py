"""CreateVolume's VolumeInitializationRate (Provisioned Rate for Volume Initialization).

EC2's rules (CreateVolume API reference
https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateVolume.html, the same
text as botocore's and aws-sdk-ec2's model docs; EBS user guide
https://docs.aws.amazon.com/ebs/latest/userguide/initalize-volume.html): 100-300 MiB/s,
only for volumes created from a snapshot, a rate beats an enabled fast snapshot restore,
reported as Volume.VolumeInitializationRate (null when none was given), and no such
parameter on CopyVolumes. See ec2sim/volumes.py:check_initialization_rate.
"""

from __future__ import annotations

import urllib.parse

import pytest
from botocore.exceptions import ClientError
from conftest import error_code, volume, wait_for, wait_volume_state

ZONE = "us-east-1a"


def completed_snapshot(ec2, size=2):
    vid = ec2.create_volume(Size=size, AvailabilityZone=ZONE, VolumeType="gp3")["VolumeId"]
    wait_volume_state(ec2, vid, "available")
    sid = ec2.create_snapshot(VolumeId=vid)["SnapshotId"]
    wait_for(lambda: ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]["State"] == "completed",
             what="snapshot completed")
    return vid, sid


def raw_call(sim, action, **params):
    body = urllib.parse.urlencode({"Action": action, "Version": "2016-11-15", **params}).encode()
    return sim.http("POST", "/", body, {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})


@pytest.mark.parametrize("rate", [100, 200, 300])
def test_rate_from_snapshot_is_kept_and_reported(ec2, sim, rate):
    _, sid = completed_snapshot(ec2)
    v = ec2.create_volume(SnapshotId=sid, AvailabilityZone=ZONE, VolumeType="gp3", VolumeInitializationRate=rate)
    assert v["VolumeInitializationRate"] == rate  # in CreateVolume's answer
    assert v["SnapshotId"] == sid
    assert volume(ec2, v["VolumeId"])["VolumeInitializationRate"] == rate  # and in DescribeVolumes
    ready = wait_volume_state(ec2, v["VolumeId"], "available")
    assert ready["VolumeInitializationRate"] == rate
    listed = {x["VolumeId"]: x for x in ec2.describe_volumes()["Volumes"]}
    assert listed[v["VolumeId"]]["VolumeInitializationRate"] == rate
    state = {x["id"]: x for x in sim.control("GET", "/_sim/state")["volumes"]}
    assert state[v["VolumeId"]]["volume_initialization_rate"] == rate


def test_xml_member_name_is_volumeInitializationRate(ec2, sim):
    """The member aws-sdk-ec2 parses (shape_volume.rs, shape_create_volume.rs)."""
    _, sid = completed_snapshot(ec2)
    status, _, body = raw_call(sim, "CreateVolume", SnapshotId=sid, AvailabilityZone=ZONE,
                               VolumeInitializationRate="150")
    assert status == 200, body
    assert b"<volumeInitializationRate>150</volumeInitializationRate>" in body
    vid = body.split(b"<volumeId>")[1].split(b"</volumeId>")[0].decode()
    status, _, body = raw_call(sim, "DescribeVolumes", **{"VolumeId.1": vid})
    assert status == 200 and b"<volumeInitializationRate>150</volumeInitializationRate>" in body


def test_no_rate_means_no_member(ec2, sim):
    """"If no volume initialization rate was specified, the value is null": the member is absent."""
    _, sid = completed_snapshot(ec2)
    restored = ec2.create_volume(SnapshotId=sid, AvailabilityZone=ZONE)
    plain = ec2.create_volume(Size=1, AvailabilityZone=ZONE)
    for v in (restored, plain):
        assert "VolumeInitializationRate" not in v
        assert "VolumeInitializationRate" not in volume(ec2, v["VolumeId"])
    status, _, body = raw_call(sim, "DescribeVolumes")
    assert status == 200 and b"volumeInitializationRate" not in body


def test_rate_without_snapshot_is_refused(ec2):
    before = {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]}
    with pytest.raises(ClientError) as e:
        ec2.create_volume(Size=10, AvailabilityZone=ZONE, VolumeType="gp3", VolumeInitializationRate=200)
    assert error_code(e) == "InvalidParameterCombination"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert "VolumeInitializationRate" in e.value.response["Error"]["Message"]
    assert {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]} == before  # nothing made


@pytest.mark.parametrize("rate", [0, 99, 301, 1000, -5])
def test_rate_outside_range_is_refused(ec2, rate):
    _, sid = completed_snapshot(ec2)
    before = {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]}
    with pytest.raises(ClientError) as e:
        ec2.create_volume(SnapshotId=sid, AvailabilityZone=ZONE, VolumeInitializationRate=rate)
    assert error_code(e) == "InvalidParameterValue"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    msg = e.value.response["Error"]["Message"]
    assert "VolumeInitializationRate" in msg and "100" in msg and "300" in msg
    assert {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]} == before


def test_rate_beats_fast_snapshot_restore(ec2, sim):
    """"... the volume will be initialized at the specified rate instead of fast snapshot restore"."""
    _, sid = completed_snapshot(ec2)
    ec2.enable_fast_snapshot_restores(AvailabilityZones=[ZONE], SourceSnapshotIds=[sid])
    wait_for(lambda: [i["State"] for i in ec2.describe_fast_snapshot_restores()["FastSnapshotRestores"]] == ["enabled"],
             what="FSR enabled")
    fsr = ec2.create_volume(SnapshotId=sid, AvailabilityZone=ZONE)
    assert fsr["FastRestored"] is True and "VolumeInitializationRate" not in fsr
    rated = ec2.create_volume(SnapshotId=sid, AvailabilityZone=ZONE, VolumeInitializationRate=250)
    assert not rated.get("FastRestored") and rated["VolumeInitializationRate"] == 250
    assert not volume(ec2, rated["VolumeId"]).get("FastRestored")


def test_client_token_covers_the_rate(ec2):
    _, sid = completed_snapshot(ec2)
    args = dict(SnapshotId=sid, AvailabilityZone=ZONE, ClientToken="rate-tok")
    first = ec2.create_volume(VolumeInitializationRate=200, **args)
    again = ec2.create_volume(VolumeInitializationRate=200, **args)
    assert again["VolumeId"] == first["VolumeId"] and again["VolumeInitializationRate"] == 200
    with pytest.raises(ClientError) as e:
        ec2.create_volume(VolumeInitializationRate=300, **args)
    assert error_code(e) == "IdempotentParameterMismatch"


def test_copy_volumes_has_no_rate_parameter(ec2, sim):
    """Not in CopyVolumes' API (boto3 refuses it client-side); a raw request is UnknownParameter."""
    src, _ = completed_snapshot(ec2)
    from botocore.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError):
        ec2.copy_volumes(SourceVolumeId=src, VolumeInitializationRate=200)
    status, _, body = raw_call(sim, "CopyVolumes", SourceVolumeId=src, VolumeInitializationRate="200")
    assert status == 400 and b"<Code>UnknownParameter</Code>" in body, body
    copies = [v for v in ec2.describe_volumes()["Volumes"] if v.get("SourceVolumeId") == src]
    assert copies == []
    copy = ec2.copy_volumes(SourceVolumeId=src)["Volumes"][0]  # without it: fine, and no rate
    assert "VolumeInitializationRate" not in copy
