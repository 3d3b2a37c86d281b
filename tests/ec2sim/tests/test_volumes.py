"""CreateVolume / DeleteVolume / DescribeVolumes realism (what moto alone gets wrong)."""

from __future__ import annotations

import time

import pytest
from botocore.exceptions import ClientError
from conftest import error_code, volume, wait_volume_state

ZONE = "us-east-1a"


def test_create_volume_goes_creating_then_available(ec2, sim):
    sim.configure(delays={"create": 1.0})  # wide enough to observe on a loaded machine
    v = ec2.create_volume(Size=1, AvailabilityZone=ZONE, VolumeType="gp3")
    assert v["State"] == "creating"
    assert volume(ec2, v["VolumeId"])["State"] == "creating"
    t0 = time.monotonic()
    wait_volume_state(ec2, v["VolumeId"], "available", timeout=5)
    assert 0.3 <= time.monotonic() - t0 < 2.5


def test_client_token_same_params_returns_same_volume(ec2):
    args = dict(Size=3, AvailabilityZone=ZONE, VolumeType="gp3", ClientToken="pvc-1234",
                TagSpecifications=[{"ResourceType": "volume", "Tags": [{"Key": "CSIVolumeName", "Value": "pvc-1234"}]}])
    first = ec2.create_volume(**args)
    second = ec2.create_volume(**args)
    assert first["VolumeId"] == second["VolumeId"]
    ours = ec2.describe_volumes(Filters=[{"Name": "tag:CSIVolumeName", "Values": ["pvc-1234"]}])["Volumes"]
    assert [v["VolumeId"] for v in ours] == [first["VolumeId"]]
    # the replay reports the volume as it is now
    wait_volume_state(ec2, first["VolumeId"], "available")
    assert ec2.create_volume(**args)["State"] == "available"


def test_client_token_different_params_is_mismatch(ec2):
    ec2.create_volume(Size=3, AvailabilityZone=ZONE, VolumeType="gp3", ClientToken="tok-a")
    with pytest.raises(ClientError) as e:
        ec2.create_volume(Size=4, AvailabilityZone=ZONE, VolumeType="gp3", ClientToken="tok-a")
    assert error_code(e) == "IdempotentParameterMismatch"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


@pytest.mark.parametrize(
    "kwargs, code",
    [
        (dict(Size=0, VolumeType="gp3"), "InvalidParameterValue"),
        (dict(Size=16385, VolumeType="gp2"), "InvalidParameterValue"),
        (dict(Size=65537, VolumeType="gp3"), "InvalidParameterValue"),
        (dict(Size=65537, VolumeType="io2", Iops=1000), "InvalidParameterValue"),
        (dict(Size=10, VolumeType="st1"), "InvalidParameterValue"),
        (dict(Size=10, VolumeType="gp9"), "InvalidParameterValue"),
    ],
)
def test_size_and_type_validation(ec2, kwargs, code):
    with pytest.raises(ClientError) as e:
        ec2.create_volume(AvailabilityZone=ZONE, **kwargs)
    assert error_code(e) == code


def test_unknown_zone_is_refused(ec2):
    with pytest.raises(ClientError) as e:
        ec2.create_volume(Size=1, AvailabilityZone="us-east-1z")
    assert error_code(e) == "InvalidZone.NotFound"


def test_io2_block_express_size_accepted(ec2):
    v = ec2.create_volume(Size=65536, AvailabilityZone=ZONE, VolumeType="io2", Iops=3000)
    assert v["Size"] == 65536


def test_describe_unknown_volume_names_only_missing_ids(ec2):
    v = ec2.create_volume(Size=1, AvailabilityZone=ZONE)
    with pytest.raises(ClientError) as e:
        ec2.describe_volumes(VolumeIds=[v["VolumeId"], "vol-0000000000000dead"])
    assert error_code(e) == "InvalidVolume.NotFound"
    msg = e.value.response["Error"]["Message"]
    assert "vol-0000000000000dead" in msg and v["VolumeId"] not in msg


def test_describe_volumes_paginates(ec2):
    made = {ec2.create_volume(Size=1, AvailabilityZone=ZONE)["VolumeId"] for _ in range(11)}
    total = len(ec2.describe_volumes()["Volumes"])  # + the local instance's root volume
    assert total == 12
    seen, pages, token = [], [], None
    while True:
        kw = {"MaxResults": 5}
        if token:
            kw["NextToken"] = token
        r = ec2.describe_volumes(**kw)
        pages.append(len(r["Volumes"]))
        seen += [v["VolumeId"] for v in r["Volumes"]]
        token = r.get("NextToken")
        if not token:
            break
    assert pages == [5, 5, 2]
    assert len(seen) == len(set(seen)) == 12 and made <= set(seen)


def test_pagination_survives_deletion_between_pages(ec2):
    for _ in range(9):
        ec2.create_volume(Size=1, AvailabilityZone=ZONE)
    r = ec2.describe_volumes(MaxResults=5)
    first = [v["VolumeId"] for v in r["Volumes"]]
    ec2.delete_volume(VolumeId=first[-1])  # the token's anchor disappears
    rest = ec2.describe_volumes(MaxResults=5, NextToken=r["NextToken"])["Volumes"]
    assert len(rest) == 5 and not set(first) & {v["VolumeId"] for v in rest}


@pytest.mark.parametrize(
    "kwargs, code",
    [
        (dict(MaxResults=4), "InvalidParameterValue"),
        (dict(MaxResults=5, VolumeIds=["vol-1"]), "InvalidParameterCombination"),
        (dict(MaxResults=5, NextToken="garbage!"), "InvalidParameterValue"),
    ],
)
def test_pagination_rules(ec2, kwargs, code):
    with pytest.raises(ClientError) as e:
        ec2.describe_volumes(**kwargs)
    assert error_code(e) == code


def test_delete_volume(ec2):
    v = ec2.create_volume(Size=1, AvailabilityZone=ZONE)
    ec2.delete_volume(VolumeId=v["VolumeId"])
    with pytest.raises(ClientError) as e:
        ec2.describe_volumes(VolumeIds=[v["VolumeId"]])
    assert error_code(e) == "InvalidVolume.NotFound"


def test_many_concurrent_requests(ec2, sim):
    """100+ concurrent clients: every request answered, nothing lost or duplicated."""
    from concurrent.futures import ThreadPoolExecutor

    client = sim.client()

    def create(i):
        return client.create_volume(Size=1, AvailabilityZone=ZONE, ClientToken=f"c-{i % 60}")["VolumeId"]

    def describe(_):
        return len(client.describe_volumes()["Volumes"])

    with ThreadPoolExecutor(max_workers=120) as pool:
        created = list(pool.map(create, range(120)))
        counts = list(pool.map(describe, range(120)))
    assert len(set(created)) == 60  # 60 distinct tokens, each used twice
    assert all(c >= 61 for c in counts)
    assert sim.counters()["calls"]["CreateVolume"] == 120


def test_none_profile_is_moto_timing(ec2, sim):
    sim.configure(delays="none")
    v = ec2.create_volume(Size=1, AvailabilityZone=ZONE)["VolumeId"]
    assert volume(ec2, v)["State"] == "available"
    r = ec2.attach_volume(VolumeId=v, InstanceId=sim.info["instance_id"], Device="/dev/xvdba")
    assert r["State"] == "attaching"
    assert volume(ec2, v)["Attachments"][0]["State"] == "attached"  # on the very next request
    ec2.detach_volume(VolumeId=v)
    assert volume(ec2, v)["State"] == "available"
