"""CopyVolumes (moto has none): parameters, defaults, idempotency, errors, states, bytes, throttling.

EC2's rules come from the CopyVolumes API reference
(https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CopyVolumes.html, the same
text as botocore's model): the copy is in the source's zone, Size >= the source's
(default: the source's), VolumeType default gp2, gp3 IOPS default 3000, an encrypted
source always gives an encrypted copy; see ec2sim/volumes.py:copy_volumes.
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.parse

import pytest
from botocore.exceptions import ClientError
from conftest import attachment_state, error_code, needs_root, run_instance, volume, wait_for, wait_volume_state

ZONE = "us-east-1a"
GIB = 1024**3


def new_volume(ec2, size=1, zone=ZONE, **kw):
    kw.setdefault("VolumeType", "gp3")
    v = ec2.create_volume(Size=size, AvailabilityZone=zone, **kw)
    wait_volume_state(ec2, v["VolumeId"], "available")
    return v["VolumeId"]


def copy(ec2, source, **kw):
    r = ec2.copy_volumes(SourceVolumeId=source, **kw)
    assert len(r["Volumes"]) == 1
    return r["Volumes"][0]


def tags(v):
    return {t["Key"]: t["Value"] for t in v.get("Tags", [])}


def raw_call(sim, action, **params):
    body = urllib.parse.urlencode({"Action": action, "Version": "2016-11-15", **params}).encode()
    return sim.http("POST", "/", body, {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})


def test_defaults_follow_ec2_not_the_source(ec2):
    src = new_volume(ec2, size=3, Iops=4000, Throughput=200,
                     TagSpecifications=[{"ResourceType": "volume", "Tags": [{"Key": "origin", "Value": "src"}]}])
    c = copy(ec2, src)
    assert c["SourceVolumeId"] == src
    assert c["State"] == "creating"
    assert c["AvailabilityZone"] == ZONE
    assert c["Size"] == 3  # "If not specified, the size defaults to the size of the source volume"
    assert c["VolumeType"] == "gp2"  # "If not specified, the volume type defaults to gp2"
    assert c["Encrypted"] is False
    assert tags(c) == {}  # tags come from TagSpecification only, never from the source
    d = volume(ec2, c["VolumeId"])
    assert (d["SourceVolumeId"], d["Size"], d["VolumeType"]) == (src, 3, "gp2")
    assert "SnapshotId" not in d or not d["SnapshotId"]
    # gp3 without Iops/Throughput: gp3's defaults (3000, 125), not the source's 4000/200
    g = copy(ec2, src, VolumeType="gp3")
    assert (g["Iops"], g["Throughput"]) == (3000, 125)


def test_parameters_are_applied(ec2):
    src = new_volume(ec2, size=2)
    spec = [{"ResourceType": "volume", "Tags": [{"Key": "CSIVolumeName", "Value": "pvc-clone"},
                                                {"Key": "kubernetes.io/cluster/x", "Value": "owned"}]}]
    c = copy(ec2, src, Size=5, VolumeType="gp3", Iops=5000, Throughput=250, MultiAttachEnabled=False,
             TagSpecifications=spec)
    assert (c["Size"], c["VolumeType"], c["Iops"], c["Throughput"]) == (5, "gp3", 5000, 250)
    assert c["MultiAttachEnabled"] is False
    assert tags(c) == {"CSIVolumeName": "pvc-clone", "kubernetes.io/cluster/x": "owned"}
    found = ec2.describe_volumes(Filters=[{"Name": "tag:CSIVolumeName", "Values": ["pvc-clone"]}])["Volumes"]
    assert [v["VolumeId"] for v in found] == [c["VolumeId"]]
    io2 = copy(ec2, src, Size=4, VolumeType="io2", Iops=1000, MultiAttachEnabled=True)
    assert (io2["VolumeType"], io2["Iops"], io2["MultiAttachEnabled"]) == ("io2", 1000, True)
    # the copy is always in the source's zone
    other = new_volume(ec2, size=1, zone="us-east-1b")
    assert copy(ec2, other)["AvailabilityZone"] == "us-east-1b"


def test_encryption_follows_the_source(ec2):
    key = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"
    enc = new_volume(ec2, Encrypted=True, KmsKeyId=key)
    c = copy(ec2, enc)
    assert (c["Encrypted"], c["KmsKeyId"]) == (True, key)
    # "If the source volume is encrypted, the service always encrypts the copy regardless of this value"
    assert copy(ec2, enc, Encrypted=False)["Encrypted"] is True
    plain = new_volume(ec2)
    assert copy(ec2, plain)["Encrypted"] is False
    e = copy(ec2, plain, Encrypted=True)  # the account's default EBS key
    assert e["Encrypted"] is True and e["KmsKeyId"].startswith("arn:aws:kms:")
    other = key.replace("1111", "9999")
    assert copy(ec2, plain, Encrypted=True, KmsKeyId=other)["KmsKeyId"] == other
    with pytest.raises(ClientError) as ex:  # KmsKeyId needs Encrypted on a plain source
        ec2.copy_volumes(SourceVolumeId=plain, KmsKeyId=other)
    assert error_code(ex) == "InvalidParameterDependency"


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(Size=2),  # smaller than the 3 GiB source
        dict(Size=16385, VolumeType="gp2"),
        dict(Size=65537, VolumeType="gp3"),
        dict(Size=100, VolumeType="st1"),  # st1 starts at 125 GiB
        dict(VolumeType="gp9"),
    ],
)
def test_size_and_type_rules(ec2, kwargs):
    src = new_volume(ec2, size=3)
    with pytest.raises(ClientError) as e:
        ec2.copy_volumes(SourceVolumeId=src, **kwargs)
    assert error_code(e) == "InvalidParameterValue"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_errors(ec2, sim):
    with pytest.raises(ClientError) as e:
        ec2.copy_volumes(SourceVolumeId="vol-0123456789abcdef0")
    assert error_code(e) == "InvalidVolume.NotFound"
    assert "vol-0123456789abcdef0" in e.value.response["Error"]["Message"]
    status, _, body = raw_call(sim, "CopyVolumes")
    assert status == 400 and b"<Code>MissingParameter</Code>" in body
    sim.configure(delays={"create": 2.0})
    creating = ec2.create_volume(Size=1, AvailabilityZone=ZONE)["VolumeId"]
    with pytest.raises(ClientError) as e:
        ec2.copy_volumes(SourceVolumeId=creating)
    assert error_code(e) == "IncorrectState"
    sim.configure(delays={"create": 0.0})
    src = new_volume(ec2)
    before = {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]}
    with pytest.raises(ClientError) as e:
        ec2.copy_volumes(SourceVolumeId=src, DryRun=True)
    assert error_code(e) == "DryRunOperation"
    after = {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]}
    assert after == before  # DryRun made nothing


def test_in_use_source_can_be_copied(ec2):
    src = new_volume(ec2)
    inst = run_instance(ec2, ZONE)
    ec2.attach_volume(VolumeId=src, InstanceId=inst, Device="/dev/xvdba")
    wait_for(lambda: attachment_state(ec2, src) == "attached")
    c = copy(ec2, src)
    assert c["SourceVolumeId"] == src and c["Attachments"] == []


def test_client_token_idempotency(ec2, sim):
    src = new_volume(ec2, size=2)
    spec = [{"ResourceType": "volume", "Tags": [{"Key": "CSIVolumeName", "Value": "pvc-tok"}]}]
    args = dict(SourceVolumeId=src, Size=4, VolumeType="gp3", ClientToken="clone-tok-1", TagSpecifications=spec)
    first = ec2.copy_volumes(**args)["Volumes"][0]
    second = ec2.copy_volumes(**args)["Volumes"][0]
    assert first["VolumeId"] == second["VolumeId"]
    made = ec2.describe_volumes(Filters=[{"Name": "tag:CSIVolumeName", "Values": ["pvc-tok"]}])["Volumes"]
    assert [v["VolumeId"] for v in made] == [first["VolumeId"]]
    wait_volume_state(ec2, first["VolumeId"], "available")
    assert ec2.copy_volumes(**args)["Volumes"][0]["State"] == "available"  # the replay shows the volume now
    with pytest.raises(ClientError) as e:
        ec2.copy_volumes(**{**args, "Size": 5})
    assert error_code(e) == "IdempotentParameterMismatch"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    # a CreateVolume token is not a CopyVolumes token (each action has its own)
    ec2.create_volume(Size=1, AvailabilityZone=ZONE, ClientToken="shared-tok")
    assert copy(ec2, src, ClientToken="shared-tok")["SourceVolumeId"] == src


def test_retry_after_internal_error_returns_the_same_copy(ec2, sim):
    """The driver's case: EC2 made the copy but answered 500; the retry with the token finds it."""
    src = new_volume(ec2)
    sim.configure(faults="CopyVolumes:internal-after:1:1")
    args = dict(SourceVolumeId=src, ClientToken="retry-tok", VolumeType="gp3",
                TagSpecifications=[{"ResourceType": "volume", "Tags": [{"Key": "CSIVolumeName", "Value": "pvc-r"}]}])
    with pytest.raises(ClientError) as e:
        ec2.copy_volumes(**args)
    assert error_code(e) == "InternalError"
    again = ec2.copy_volumes(**args)["Volumes"][0]
    made = ec2.describe_volumes(Filters=[{"Name": "tag:CSIVolumeName", "Values": ["pvc-r"]}])["Volumes"]
    assert [v["VolumeId"] for v in made] == [again["VolumeId"]]
    c = sim.counters()
    assert c["calls"]["CopyVolumes"] == 2 and c["fault_kinds"]["CopyVolumes"] == {"internal-after": 1}


def test_state_machine_uses_the_create_delay(ec2, sim):
    src = new_volume(ec2)
    sim.configure(delays={"create": 1.0})
    t0 = time.monotonic()
    c = copy(ec2, src)
    assert c["State"] == "creating" and volume(ec2, c["VolumeId"])["State"] == "creating"
    with pytest.raises(ClientError) as e:  # not attachable before `available`
        ec2.attach_volume(VolumeId=c["VolumeId"], InstanceId=sim.info["instance_id"], Device="/dev/xvdba")
    assert error_code(e) == "IncorrectState"
    with pytest.raises(ClientError) as e:  # a creating copy is no source yet
        ec2.copy_volumes(SourceVolumeId=c["VolumeId"])
    assert error_code(e) == "IncorrectState"
    wait_volume_state(ec2, c["VolumeId"], "available", timeout=5)
    assert 0.9 <= time.monotonic() - t0 < 2.5
    assert copy(ec2, c["VolumeId"])["SourceVolumeId"] == c["VolumeId"]  # a copy of a copy


def test_throttled_as_mutating_and_faults_apply(start_sim):
    sim = start_sim("--throttle", "on", "--devices", "off", "--delays", "none")
    client = sim.client()
    src = client.create_volume(Size=1, AvailabilityZone=ZONE)["VolumeId"]
    sim.configure(throttle={"mutating": {"burst": 2, "rate": 0}})
    copy(client, src)
    copy(client, src)
    with pytest.raises(ClientError) as e:
        client.copy_volumes(SourceVolumeId=src)
    assert error_code(e) == "RequestLimitExceeded"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    client.describe_volumes()  # the describe bucket is another one
    c = sim.counters()
    assert c["throttled"] == {"CopyVolumes": 1} and c["calls"]["CopyVolumes"] == 3
    sim.configure(throttle={"enabled": False}, faults="CopyVolumes:unavailable:1:1")
    with pytest.raises(ClientError) as e:
        client.copy_volumes(SourceVolumeId=src)
    assert error_code(e) == "Unavailable"
    copy(client, src)
    assert sim.counters()["faults"]["CopyVolumes"] == 1
    assert len(client.describe_volumes(Filters=[{"Name": "volume-type", "Values": ["gp2"]}])["Volumes"]) >= 4


@needs_root
def test_copy_has_the_source_bytes_at_copy_time(ec2, sim):
    me = sim.info["instance_id"]
    link = lambda v: os.path.join(sim.info["device_dir"], "nvme-Amazon_Elastic_Block_Store_" + v.replace("-", ""))
    src = new_volume(ec2, size=1)
    ec2.attach_volume(VolumeId=src, InstanceId=me, Device="/dev/xvdba")
    wait_for(lambda: attachment_state(ec2, src) == "attached")
    first, last = os.urandom(4096), os.urandom(4096)

    def write(path, offset, data):
        with open(path, "r+b", buffering=0) as f:
            f.seek(offset)
            f.write(data)
            os.fsync(f.fileno())

    write(link(src), 0, first)
    write(link(src), GIB - 4096, last)  # the source's last block
    clone = copy(ec2, src, Size=2, VolumeType="gp3")["VolumeId"]  # from an in-use source
    write(link(src), 0, b"\0" * 4096)  # after the copy: must not show in the clone
    assert os.path.exists(os.path.join(sim.info["state_dir"], clone + ".img"))
    wait_volume_state(ec2, clone, "available")
    ec2.attach_volume(VolumeId=clone, InstanceId=me, Device="/dev/xvdbb")
    wait_for(lambda: attachment_state(ec2, clone) == "attached")
    assert int(subprocess.check_output(["blockdev", "--getsize64", link(clone)])) == 2 * GIB
    with open(link(clone), "rb") as f:
        assert f.read(4096) == first
        f.seek(GIB - 4096)
        assert f.read(4096) == last
        assert f.read(4096) == b"\0" * 4096  # the grown part is empty
    # a source that never had bytes gives a copy without any (zeros when attached)
    empty = copy(ec2, new_volume(ec2))["VolumeId"]
    assert not os.path.exists(os.path.join(sim.info["state_dir"], empty + ".img"))
    # deleting the clone removes its backing file
    ec2.detach_volume(VolumeId=clone)
    wait_for(lambda: attachment_state(ec2, clone) is None)
    ec2.delete_volume(VolumeId=clone)
    assert not os.path.exists(os.path.join(sim.info["state_dir"], clone + ".img"))
