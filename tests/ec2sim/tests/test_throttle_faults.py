"""Token-bucket throttling, fault injection, counters and EC2's error document."""

from __future__ import annotations

import re
import time
import urllib.parse

import pytest
from botocore.exceptions import ClientError
from conftest import error_code

ERROR_DOC = re.compile(
    rb'^<\?xml version="1.0" encoding="UTF-8"\?><Response><Errors><Error><Code>([^<]+)</Code>'
    rb"<Message>([^<]*)</Message></Error></Errors><RequestID>[0-9a-f-]{36}</RequestID></Response>$"
)


def raw_call(sim, action, **params):
    body = urllib.parse.urlencode({"Action": action, "Version": "2016-11-15", **params}).encode()
    return sim.http("POST", "/", body, {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})


def drain(client, limit=1000):
    """Call DescribeAvailabilityZones until throttled; returns the number that succeeded."""
    ok = 0
    for _ in range(limit):
        try:
            client.describe_availability_zones()
            ok += 1
        except ClientError as e:
            assert error_code_of(e) == "RequestLimitExceeded"
            assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 503
            return ok
    raise AssertionError("never throttled")


def error_code_of(e):
    return e.response["Error"]["Code"]


def test_default_describe_bucket_empties_and_refills_at_rate(start_sim):
    sim = start_sim("--throttle", "on", "--devices", "off")
    client = sim.client()
    t0 = time.monotonic()
    ok = drain(client)
    elapsed = time.monotonic() - t0
    # burst 100 plus what refilled (20/s) while we were draining
    assert 100 <= ok <= 100 + 20 * elapsed + 2
    time.sleep(1.0)  # ~20 tokens come back
    t1 = time.monotonic()
    recovered = drain(client)
    assert 15 <= recovered <= 20 * (1.0 + time.monotonic() - t1) + 3
    c = sim.counters()
    assert c["throttled"]["DescribeAvailabilityZones"] == 2
    assert c["calls"]["DescribeAvailabilityZones"] == ok + recovered + 2
    # mutating calls have their own bucket: still full
    client.create_volume(Size=1, AvailabilityZone="us-east-1a")


def test_mutating_bucket_is_separate_and_configurable(start_sim):
    sim = start_sim("--throttle", "on", "--devices", "off")
    cfg = sim.configure(throttle={"mutating": {"burst": 5, "rate": 2}})
    assert cfg["throttle"]["mutating"]["burst"] == 5
    client = sim.client()
    made = []
    with pytest.raises(ClientError) as e:
        for _ in range(20):
            made.append(client.create_volume(Size=1, AvailabilityZone="us-east-1a")["VolumeId"])
    assert error_code(e) == "RequestLimitExceeded" and len(made) == 5
    client.describe_volumes()  # describe bucket unaffected
    time.sleep(1.1)  # 2/s -> 2 tokens
    client.delete_volume(VolumeId=made[0])
    client.delete_volume(VolumeId=made[1])
    with pytest.raises(ClientError):
        client.delete_volume(VolumeId=made[2])
    sim.configure(throttle={"enabled": False})
    for v in made[2:]:
        client.delete_volume(VolumeId=v)


def test_throttle_error_document_is_ec2s(start_sim):
    sim = start_sim("--throttle", "on", "--devices", "off")
    sim.configure(throttle={"describe": {"burst": 1, "rate": 0.01}})
    assert raw_call(sim, "DescribeVolumes")[0] == 200
    status, headers, body = raw_call(sim, "DescribeVolumes")
    assert status == 503
    m = ERROR_DOC.match(body)
    assert m and m.group(1) == b"RequestLimitExceeded" and m.group(2) == b"Request limit exceeded."


def test_client_errors_use_ec2_document(ec2, sim):
    status, _, body = raw_call(sim, "DeleteVolume", VolumeId="vol-0123456789abcdef0")
    assert status == 400
    m = ERROR_DOC.match(body)
    assert m and m.group(1) == b"InvalidVolume.NotFound"
    # success answers carry a real, unique request id
    a = raw_call(sim, "DescribeVolumes")[2]
    b = raw_call(sim, "DescribeVolumes")[2]
    ids = [re.search(rb"<requestId>([^<]+)</requestId>", x).group(1) for x in (a, b)]
    assert ids[0] != ids[1] and len(ids[0]) == 36


@pytest.mark.parametrize(
    "kind, status, code",
    [("internal", 500, b"InternalError"), ("unavailable", 503, b"Unavailable"), ("throttle", 503, b"RequestLimitExceeded")],
)
def test_injected_faults(ec2, sim, kind, status, code):
    sim.configure(faults=f"CreateVolume:{kind}")
    got_status, _, body = raw_call(sim, "CreateVolume", Size="1", AvailabilityZone="us-east-1a")
    assert got_status == status and ERROR_DOC.match(body).group(1) == code
    assert len(ec2.describe_volumes()["Volumes"]) == 1  # only the root: nothing was created
    c = sim.counters()
    assert c["faults"] == {"CreateVolume": 1} and c["fault_kinds"]["CreateVolume"] == {kind: 1}
    assert c["calls"]["CreateVolume"] == 1 and c["throttled"] == {}


def test_internal_after_executes_then_fails(ec2, sim):
    """The nastiest EC2 failure: the change happened, the answer is a 500. ClientToken saves the day."""
    sim.configure(faults="CreateVolume:internal-after:1:1")
    with pytest.raises(ClientError) as e:
        ec2.create_volume(Size=1, AvailabilityZone="us-east-1a", ClientToken="retry-me")
    assert error_code(e) == "InternalError"
    v = ec2.create_volume(Size=1, AvailabilityZone="us-east-1a", ClientToken="retry-me")
    vols = [x["VolumeId"] for x in ec2.describe_volumes()["Volumes"] if x["Size"] == 1]
    assert vols == [v["VolumeId"]]


def test_slow_fault_and_wildcard(ec2, sim):
    sim.configure(faults="*:slow=300")
    t0 = time.monotonic()
    ec2.describe_volumes()
    assert time.monotonic() - t0 >= 0.3


def test_fault_rate_is_reproducible_with_seed(start_sim):
    sim = start_sim("--devices", "off", "--throttle", "off", "--seed", "42", "--faults", "DescribeVolumes:internal:0.5")
    client = sim.client()

    def pattern():
        out = []
        for _ in range(40):
            try:
                client.describe_volumes()
                out.append(0)
            except ClientError:
                out.append(1)
        return out

    first = pattern()
    assert 8 <= sum(first) <= 32
    sim.configure(faults="DescribeVolumes:internal:0.5")  # re-seeds
    assert pattern() == first


def test_bad_fault_spec_is_refused(start_sim, sim):
    status, _, body = sim.http("POST", "/_sim/config", b'{"faults": "CreateVolume:explode"}',
                               {"Content-Type": "application/json"})
    assert status == 400 and b"kind" in body
    with pytest.raises(RuntimeError):
        start_sim("--faults", "CreateVolume:internal:2")


def test_counters_reset(ec2, sim):
    ec2.describe_volumes()
    assert sim.counters()["calls"]["DescribeVolumes"] == 1
    sim.control("POST", "/_sim/counters/reset")
    assert sim.counters() == {"calls": {}, "throttled": {}, "faults": {}, "fault_kinds": {}, "total_calls": 0}


def test_unknown_and_unimplemented_actions_answer_ec2_errors(ec2, sim):
    status, _, body = raw_call(sim, "FooBar")
    assert status == 400 and ERROR_DOC.match(body).group(1) == b"InvalidAction"
    status, _, body = raw_call(sim, "DescribeVolumeStatus")  # moto has no implementation
    assert status == 500 and ERROR_DOC.match(body).group(1) == b"InternalError"
