"""AttachVolume refuses past the instance type's EBS limit, like EC2 Nitro.

Facts from src/contract/attach_limits.tsv: m5.large is not listed (27 shared),
m7i.large 32 dedicated, d3.8xlarge 3 shared, c8gb.48xlarge 128 dedicated on
2 EBS cards. Most tests use extra instances from RunInstances (no devices, so
filling 27..64 slots is cheap) with the `none` delay profile.
"""

from __future__ import annotations

import string

import pytest
from botocore.exceptions import ClientError
from conftest import volume, wait_for

ZONE = "us-east-1a"

# Every Linux device name EC2 accepts apart from the root's /dev/xvda and /dev/sda1
# (127 names: /dev/xvd[b-z], /dev/xvd[a-c][a-z], /dev/xvdd[a-x]).
DEVICES = ([f"/dev/xvd{c}" for c in string.ascii_lowercase[1:]]
           + [f"/dev/xvd{a}{b}" for a in "abc" for b in string.ascii_lowercase]
           + [f"/dev/xvdd{b}" for b in string.ascii_lowercase[:24]])


@pytest.fixture
def ec2n(ec2, sim):
    """The shared simulator with moto's timing (every transition immediate)."""
    sim.configure(delays="none")
    return ec2


def start(ec2, instance_type: str) -> str:
    r = ec2.run_instances(ImageId="ami-760aaa0f", MinCount=1, MaxCount=1, InstanceType=instance_type,
                          Placement={"AvailabilityZone": ZONE})
    return r["Instances"][0]["InstanceId"]


def volumes(ec2, n: int) -> list[str]:
    return [ec2.create_volume(Size=1, AvailabilityZone=ZONE, VolumeType="gp3")["VolumeId"] for _ in range(n)]


def add_enis(ec2, instance_id: str, n: int) -> None:
    subnet = ec2.describe_subnets(Filters=[{"Name": "availability-zone", "Values": [ZONE]}])["Subnets"][0]
    for i in range(n):
        eni = ec2.create_network_interface(SubnetId=subnet["SubnetId"])["NetworkInterface"]
        ec2.attach_network_interface(NetworkInterfaceId=eni["NetworkInterfaceId"], InstanceId=instance_id,
                                     DeviceIndex=i + 1)
    inst = describe_instance(ec2, instance_id)
    assert len(inst["NetworkInterfaces"]) == n + 1


def describe_instance(ec2, instance_id: str) -> dict:
    return ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]


def attach_all(ec2, instance_id: str, vols: list[str], devices: list[str] | None = None, **kw) -> list[dict]:
    devices = devices or DEVICES
    return [ec2.attach_volume(VolumeId=v, InstanceId=instance_id, Device=d, **kw) for v, d in zip(vols, devices)]


def refused(ec2, vid: str, instance_id: str, device: str, **kw) -> ClientError:
    with pytest.raises(ClientError) as e:
        ec2.attach_volume(VolumeId=vid, InstanceId=instance_id, Device=device, **kw)
    return e.value


def test_shared_type_counts_root_and_every_further_eni(ec2n):
    inst = start(ec2n, "m5.large")  # not in the table: 27 shared, root at /dev/sda1 counts
    assert [m["DeviceName"] for m in describe_instance(ec2n, inst)["BlockDeviceMappings"]] == ["/dev/sda1"]
    vols = volumes(ec2n, 27)
    attach_all(ec2n, inst, vols[:26])
    err = refused(ec2n, vols[26], inst, DEVICES[26])
    assert err.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert err.response["Error"]["Code"] == "AttachmentLimitExceeded"
    msg = err.response["Error"]["Message"]
    assert msg.startswith("You may attach up to 27 devices for this instance type."), msg
    assert volume(ec2n, vols[26])["State"] == "available" and volume(ec2n, vols[26])["Attachments"] == []

    # a second network interface takes one slot: root + 25 data volumes
    other = start(ec2n, "m5.large")
    add_enis(ec2n, other, 1)
    vols = volumes(ec2n, 26)
    attach_all(ec2n, other, vols[:25])
    assert refused(ec2n, vols[25], other, DEVICES[25]).response["Error"]["Code"] == "AttachmentLimitExceeded"


def test_local_instance_type_comes_from_the_flag(start_sim):
    s = start_sim("--instance-type", "d3.8xlarge", "--delays", "none", "--throttle", "off", "--devices", "off")
    ec2 = s.client()
    local = s.info["instance_id"]
    inst = describe_instance(ec2, local)
    assert inst["InstanceType"] == "d3.8xlarge"
    assert [m["DeviceName"] for m in inst["BlockDeviceMappings"]] == ["/dev/xvda"]
    vols = volumes(ec2, 3)  # d3.8xlarge: 3 shared, the root at /dev/xvda is one of them
    attach_all(ec2, local, vols[:2])
    err = refused(ec2, vols[2], local, DEVICES[2])
    assert err.response["Error"]["Code"] == "AttachmentLimitExceeded"
    assert "up to 3 devices" in err.response["Error"]["Message"]


def test_dedicated_type_ignores_enis(ec2n):
    inst = start(ec2n, "m7i.large")  # 32 dedicated
    add_enis(ec2n, inst, 2)
    vols = volumes(ec2n, 32)
    answers = attach_all(ec2n, inst, vols[:31])
    assert all("EbsCardIndex" not in a for a in answers)  # single card, no index asked: not reported
    err = refused(ec2n, vols[31], inst, DEVICES[31])
    assert err.response["Error"]["Code"] == "AttachmentLimitExceeded"
    assert "up to 32 devices" in err.response["Error"]["Message"]


def test_slot_held_while_detaching_and_freed_when_gone(ec2, sim):
    sim.configure(delays={"profile": "none", "detach": 0.4})
    inst = start(ec2, "d3.8xlarge")  # 3 shared: root + 2
    a, b, c = volumes(ec2, 3)
    attach_all(ec2, inst, [a, b])
    assert refused(ec2, c, inst, "/dev/xvdp").response["Error"]["Code"] == "AttachmentLimitExceeded"
    ec2.detach_volume(VolumeId=a)
    assert volume(ec2, a)["Attachments"][0]["State"] == "detaching"
    assert refused(ec2, c, inst, "/dev/xvdp").response["Error"]["Code"] == "AttachmentLimitExceeded"
    wait_for(lambda: volume(ec2, a)["State"] == "available", what="detached")
    assert ec2.attach_volume(VolumeId=c, InstanceId=inst, Device="/dev/xvdp")["State"] == "attaching"


def test_multi_card_type_honours_and_reports_the_card(ec2n):
    inst = start(ec2n, "c8gb.48xlarge")  # 128 dedicated over 2 cards: 64 per card, root on card 0
    vols = volumes(ec2n, 66)
    on0 = attach_all(ec2n, inst, vols[:62])  # no index: card 0
    assert {a["EbsCardIndex"] for a in on0} == {0}  # multi-card type: reported even when defaulted
    last0 = ec2n.attach_volume(VolumeId=vols[62], InstanceId=inst, Device=DEVICES[62], EbsCardIndex=0)
    assert last0["EbsCardIndex"] == 0
    # card 0 holds root + 63: full, although card 1 is empty
    err = refused(ec2n, vols[63], inst, DEVICES[63])
    assert err.response["Error"]["Code"] == "AttachmentLimitExceeded"
    assert "EBS card 0" in err.response["Error"]["Message"]
    assert refused(ec2n, vols[63], inst, DEVICES[63], EbsCardIndex=0).response["Error"]["Code"] == \
        "AttachmentLimitExceeded"
    on1 = ec2n.attach_volume(VolumeId=vols[63], InstanceId=inst, Device=DEVICES[63], EbsCardIndex=1)
    assert on1["EbsCardIndex"] == 1
    for bad in (2, -1):
        err = refused(ec2n, vols[64], inst, DEVICES[64], EbsCardIndex=bad)
        assert err.response["Error"]["Code"] == "InvalidParameterValue", bad
        assert "ebsCardIndex" in err.response["Error"]["Message"]

    # reported where EC2 reports it
    v = volume(ec2n, vols[63])
    assert v["Attachments"][0]["EbsCardIndex"] == 1
    assert volume(ec2n, vols[0])["Attachments"][0]["EbsCardIndex"] == 0
    bdm = {m["DeviceName"]: m["Ebs"] for m in describe_instance(ec2n, inst)["BlockDeviceMappings"]}
    assert bdm[DEVICES[63]]["EbsCardIndex"] == 1
    assert bdm[DEVICES[0]]["EbsCardIndex"] == 0
    assert bdm["/dev/sda1"]["EbsCardIndex"] == 0  # the root is on card 0

    # detaching from card 0 frees a card-0 slot
    ec2n.detach_volume(VolumeId=vols[0])
    again = ec2n.attach_volume(VolumeId=vols[64], InstanceId=inst, Device=DEVICES[64])
    assert again["EbsCardIndex"] == 0


def test_single_card_type_index(ec2n):
    inst = start(ec2n, "m5.large")
    a, b, c = volumes(ec2n, 3)
    assert "EbsCardIndex" not in ec2n.attach_volume(VolumeId=a, InstanceId=inst, Device="/dev/xvdf")
    assert "EbsCardIndex" not in volume(ec2n, a)["Attachments"][0]
    r = ec2n.attach_volume(VolumeId=b, InstanceId=inst, Device="/dev/xvdg", EbsCardIndex=0)
    assert r["EbsCardIndex"] == 0  # asked for: reported
    assert volume(ec2n, b)["Attachments"][0]["EbsCardIndex"] == 0
    bdm = {m["DeviceName"]: m["Ebs"] for m in describe_instance(ec2n, inst)["BlockDeviceMappings"]}
    assert bdm["/dev/xvdg"]["EbsCardIndex"] == 0 and "EbsCardIndex" not in bdm["/dev/xvdf"]
    err = refused(ec2n, c, inst, "/dev/xvdh", EbsCardIndex=1)
    assert err.response["Error"]["Code"] == "InvalidParameterValue"


@pytest.mark.parametrize("instance_type", ["p5.48xlarge", "c8gb.48xlarge", "g5.48xlarge", "m4.large", "u7i-12tb.224xlarge", "g4ad.xlarge"])
def test_run_instances_accepts_table_types(ec2n, instance_type):
    inst = start(ec2n, instance_type)
    assert describe_instance(ec2n, inst)["InstanceType"] == instance_type


def test_non_nitro_type_is_39_dedicated(ec2n):
    inst = start(ec2n, "m4.large")
    add_enis(ec2n, inst, 1)
    vols = volumes(ec2n, 39)
    attach_all(ec2n, inst, vols[:38])
    assert refused(ec2n, vols[38], inst, DEVICES[38]).response["Error"]["Code"] == "AttachmentLimitExceeded"
