"""IMDSv2 for the local instance, and the /_sim/ control endpoints."""

from __future__ import annotations

import json
import time

from conftest import wait_for

TTL = {"X-aws-ec2-metadata-token-ttl-seconds": "60"}


def token(sim, ttl="60"):
    status, headers, body = sim.http("PUT", "/latest/api/token", b"", {"X-aws-ec2-metadata-token-ttl-seconds": ttl})
    assert status == 200
    assert headers.get("X-aws-ec2-metadata-token-ttl-seconds") == ttl
    return body.decode()


def md(sim, path, tok):
    status, _, body = sim.http("GET", path, None, {"X-aws-ec2-metadata-token": tok})
    assert status == 200, (path, status)
    return body.decode()


def test_imds_requires_token(sim):
    assert sim.http("GET", "/latest/meta-data/instance-id")[0] == 401
    assert sim.http("GET", "/latest/meta-data/instance-id", None, {"X-aws-ec2-metadata-token": "nope"})[0] == 401
    assert sim.http("PUT", "/latest/api/token", b"")[0] == 400  # TTL header is mandatory
    assert sim.http("PUT", "/latest/api/token", b"", {"X-aws-ec2-metadata-token-ttl-seconds": "0"})[0] == 400
    assert sim.http("PUT", "/latest/api/token", b"", {"X-aws-ec2-metadata-token-ttl-seconds": "21601"})[0] == 400
    assert sim.http("PUT", "/latest/api/token", b"", {**TTL, "X-Forwarded-For": "1.2.3.4"})[0] == 403


def test_token_expires(sim):
    tok = token(sim, "1")
    md(sim, "/latest/meta-data/instance-id", tok)
    time.sleep(1.1)
    assert sim.http("GET", "/latest/meta-data/instance-id", None, {"X-aws-ec2-metadata-token": tok})[0] == 401


def test_imds_describes_the_local_instance(sim):
    tok = token(sim)
    info = sim.info
    assert md(sim, "/latest/meta-data/instance-id", tok) == info["instance_id"]
    assert md(sim, "/latest/meta-data/instance-type", tok) == "m5.large"
    assert md(sim, "/latest/meta-data/placement/availability-zone", tok) == info["availability_zone"]
    assert md(sim, "/latest/meta-data/placement/region", tok) == info["region"]
    assert md(sim, "/latest/meta-data/placement/availability-zone-id", tok).startswith("use1-az")
    assert set(md(sim, "/latest/meta-data/block-device-mapping/", tok).split("\n")) == {"ami", "root"}
    assert md(sim, "/latest/meta-data/block-device-mapping/root", tok) == "/dev/xvda"
    assert "placement/" in md(sim, "/latest/meta-data/", tok).split("\n")
    doc = json.loads(md(sim, "/latest/dynamic/instance-identity/document", tok))
    assert doc["instanceId"] == info["instance_id"]
    assert doc["region"] == info["region"] and doc["availabilityZone"] == info["availability_zone"]
    assert doc["instanceType"] == "m5.large" and doc["accountId"] == "123456789012"
    assert sim.http("GET", "/latest/meta-data/outpost-arn", None, {"X-aws-ec2-metadata-token": tok})[0] == 404


def test_zone_type_and_region_flags(start_sim):
    s = start_sim("--region", "eu-west-1", "--zone", "eu-west-1b", "--instance-type", "c5.xlarge", "--devices", "off")
    assert (s.info["region"], s.info["availability_zone"]) == ("eu-west-1", "eu-west-1b")
    tok = token(s)
    assert md(s, "/latest/meta-data/placement/availability-zone", tok) == "eu-west-1b"
    assert md(s, "/latest/meta-data/instance-type", tok) == "c5.xlarge"
    inst = s.client().describe_instances(InstanceIds=[s.info["instance_id"]])["Reservations"][0]["Instances"][0]
    assert inst["Placement"]["AvailabilityZone"] == "eu-west-1b" and inst["InstanceType"] == "c5.xlarge"


def test_default_zone_is_regions_first(start_sim):
    s = start_sim("--region", "us-west-2", "--devices", "off")
    assert s.info["availability_zone"] == "us-west-2a"


def test_reset_keeps_local_instance_id_and_drops_everything_else(ec2, sim):
    v = ec2.create_volume(Size=1, AvailabilityZone="us-east-1a")["VolumeId"]
    ec2.describe_volumes()
    out = sim.control("POST", "/_sim/reset")
    assert out["instance_id"] == sim.info["instance_id"]
    vols = ec2.describe_volumes()["Volumes"]
    assert [x["Attachments"][0]["Device"] for x in vols] == ["/dev/xvda"] and v not in str(vols)
    assert sim.counters()["calls"] == {"DescribeVolumes": 1}


def test_config_roundtrip_and_errors(sim):
    cfg = sim.configure(delays="realistic", throttle={"enabled": True, "describe": {"burst": 7, "rate": 3}},
                        faults="DescribeVolumes:slow=5:0.5")
    assert cfg["delays"]["profile"] == "realistic" and cfg["delays"]["create"] >= 1
    assert cfg["throttle"]["enabled"] is True and cfg["throttle"]["describe"]["burst"] == 7
    assert cfg["faults"] == "DescribeVolumes:slow=5:0.5"
    for bad in (b'{"delays": "glacial"}', b'{"nope": 1}', b'{"throttle": {"describe": {"burst": 0}}}', b"[1]", b"{"):
        assert sim.http("POST", "/_sim/config", bad, {"Content-Type": "application/json"})[0] == 400
    sim.configure(delays="fast", throttle={"enabled": False, "describe": {"burst": 100, "rate": 20}}, faults="")
    assert sim.http("GET", "/_sim/nothing-here")[0] == 404


def test_realistic_profile_takes_seconds(ec2, sim):
    sim.configure(delays="realistic")
    v = ec2.create_volume(Size=1, AvailabilityZone="us-east-1a")["VolumeId"]
    time.sleep(1.0)
    assert ec2.describe_volumes(VolumeIds=[v])["Volumes"][0]["State"] == "creating"
    t0 = time.monotonic()
    wait_for(lambda: ec2.describe_volumes(VolumeIds=[v])["Volumes"][0]["State"] == "available", timeout=10)
    total = 1.0 + time.monotonic() - t0
    assert 2.0 <= total <= 5.0


def test_jitter_spreads_delays_repeatably_and_is_validated(ec2, sim):
    from ec2sim.states import Delays

    d = Delays({"profile": "realistic", "jitter": 0.2, "seed": 7})
    draws = [d["attach"] for _ in range(200)]
    assert all(4.0 <= x <= 6.0 for x in draws), (min(draws), max(draws))
    assert max(draws) - min(draws) > 1.0, "jitter spreads the delays"
    again = Delays({"profile": "realistic", "jitter": 0.2, "seed": 7})
    assert [again["attach"] for _ in range(200)] == draws, "the same seed repeats"
    assert Delays("realistic")["attach"] == 5.0, "no jitter unless asked"
    cfg = sim.configure(delays={"profile": "fast", "jitter": 0.5, "seed": 1})
    assert cfg["delays"]["jitter"] == 0.5 and cfg["delays"]["seed"] == 1
    for bad in (b'{"delays": {"jitter": 1.5}}', b'{"delays": {"jitter": -0.1}}'):
        assert sim.http("POST", "/_sim/config", bad, {"Content-Type": "application/json"})[0] == 400
    # A profile resets the jitter with the rest of the table.
    assert sim.configure(delays="fast")["delays"]["jitter"] == 0.0


def test_state_endpoint(ec2, sim):
    sim.configure(delays={"create": 2.0})
    v = ec2.create_volume(Size=1, AvailabilityZone="us-east-1a")["VolumeId"]
    st = sim.control("GET", "/_sim/state")
    assert st["local_instance_id"] == sim.info["instance_id"]
    assert {x["id"]: x["state"] for x in st["volumes"]}[v] == "creating"
