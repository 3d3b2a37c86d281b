"""The transition log (/_sim/events): every state change, stamped with the instant it happened.

With the `fast` profile each transition's due time is known from the client side:
the request that started it (bracketed by wall-clock reads before and after) plus
the profile's delay. Every logged instant must fall within ~50 ms of that window,
also for transitions computed lazily (never observed through a Describe).
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from conftest import attachment_state, needs_root, run_instance, wait_for, wait_volume_state

ZONE = "us-east-1a"
SLACK = 0.05
FAST = {"create": 0.2, "attach": 0.15, "detach": 0.15, "snapshot": 0.3, "modify": 0.2, "optimize": 0.3}


def events(sim, since=None):
    path = "/_sim/events" if since is None else f"/_sim/events?since={since!r}"
    return sim.control("GET", path)


def timed(fn):
    t0 = time.time()
    out = fn()
    return out, t0, time.time()


def one(evs, kind, rid, frm, to):
    found = [e for e in evs if (e["kind"], e["id"], e["from"], e["to"]) == (kind, rid, frm, to)]
    assert len(found) == 1, (kind, rid, frm, to, evs)
    return found[0]


def near(event, t0, t1, delay=0.0):
    """event["t"] is within SLACK of the due window [t0 + delay, t1 + delay]."""
    assert t0 + delay - SLACK <= event["t"] <= t1 + delay + SLACK, (event, t0 + delay, t1 + delay)


def test_every_transition_kind_once_at_its_due_time(ec2, sim):
    assert sim.control("GET", "/_sim/config")["delays"]["profile"] == "fast"
    inst = run_instance(ec2, ZONE)  # not the local instance: no device work in the timings
    sim.control("POST", "/_sim/events/reset")
    assert events(sim)["events"] == []

    v, v0, v1 = timed(lambda: ec2.create_volume(Size=1, AvailabilityZone=ZONE, VolumeType="gp3"))
    vid = v["VolumeId"]
    wait_volume_state(ec2, vid, "available")
    _, a0, a1 = timed(lambda: ec2.attach_volume(VolumeId=vid, InstanceId=inst, Device="/dev/xvdba"))
    wait_for(lambda: attachment_state(ec2, vid) == "attached")
    _, m0, m1 = timed(lambda: ec2.modify_volume(VolumeId=vid, Size=2))
    s, s0, s1 = timed(lambda: ec2.create_snapshot(VolumeId=vid))
    sid = s["SnapshotId"]
    c, c0, c1 = timed(lambda: ec2.copy_volumes(SourceVolumeId=vid, VolumeType="gp3")["Volumes"][0])
    cid = c["VolumeId"]
    _, d0, d1 = timed(lambda: ec2.detach_volume(VolumeId=vid))
    time.sleep(0.8)  # everything is due by now; nothing polls the snapshot, copy or modification
    _, x0, x1 = timed(lambda: (ec2.delete_snapshot(SnapshotId=sid), ec2.delete_volume(VolumeId=vid)))
    answer = events(sim)
    evs = answer["events"]
    assert answer["dropped"] == 0 and answer["now"] >= x1 - SLACK

    e = one(evs, "volume", vid, None, "creating")
    near(e, v0, v1)
    assert e["action"] == "CreateVolume"
    near(one(evs, "volume", vid, "creating", "available"), v0, v1, FAST["create"])

    e = one(evs, "attachment", vid, None, "attaching")
    near(e, a0, a1)
    assert (e["instance"], e["device"]) == (inst, "/dev/xvdba")
    e = one(evs, "attachment", vid, "attaching", "attached")
    near(e, a0, a1, FAST["attach"])
    assert e["instance"] == inst

    near(one(evs, "modification", vid, None, "modifying"), m0, m1)
    near(one(evs, "modification", vid, "modifying", "optimizing"), m0, m1, FAST["modify"])
    near(one(evs, "modification", vid, "optimizing", "completed"), m0, m1, FAST["modify"] + FAST["optimize"])

    e = one(evs, "snapshot", sid, None, "pending")
    near(e, s0, s1)
    assert e["volume"] == vid
    near(one(evs, "snapshot", sid, "pending", "completed"), s0, s1, FAST["snapshot"])

    e = one(evs, "volume", cid, None, "creating")
    near(e, c0, c1)
    assert (e["action"], e["source"]) == ("CopyVolumes", vid)
    near(one(evs, "volume", cid, "creating", "available"), c0, c1, FAST["create"])

    near(one(evs, "attachment", vid, "attached", "detaching"), d0, d1)
    e = one(evs, "attachment", vid, "detaching", "detached")
    near(e, d0, d1, FAST["detach"])
    assert e["instance"] == inst

    near(one(evs, "snapshot", sid, "completed", "deleted"), x0, x1)
    near(one(evs, "volume", vid, "available", "deleted"), x0, x1)

    assert len(evs) == 15  # nothing else: one event per transition
    assert sorted(e["seq"] for e in evs) == list(range(1, 16))
    # t and mono describe the same instants: one offset between the clocks
    offsets = [e["t"] - e["mono"] for e in evs]
    assert max(offsets) - min(offsets) < 0.005
    assert [e["mono"] for e in evs] == sorted(e["mono"] for e in evs)  # answered in time order


def test_lazy_transition_stamped_when_due_not_when_seen(ec2, sim):
    sim.configure(delays={"create": 0.3, "snapshot": 0.2})
    v, t0, t1 = timed(lambda: ec2.create_volume(Size=1, AvailabilityZone=ZONE))
    time.sleep(1.0)  # nobody looks at the volume while it becomes available
    evs = events(sim)["events"]
    ready = one(evs, "volume", v["VolumeId"], "creating", "available")
    near(ready, t0, t1, 0.3)
    start = one(evs, "volume", v["VolumeId"], None, "creating")
    assert abs(ready["mono"] - start["mono"] - 0.3) < 1e-6  # exactly the delay captured at the start
    # a volume deleted while creating never becomes available
    sim.configure(delays={"create": 5.0})
    w = ec2.create_volume(Size=1, AvailabilityZone=ZONE)["VolumeId"]
    ec2.delete_volume(VolumeId=w)
    evs = events(sim)["events"]
    one(evs, "volume", w, "creating", "deleted")
    assert not [e for e in evs if e["id"] == w and e["to"] == "available"]


def test_since_reset_and_bad_queries(ec2, sim):
    first = events(sim)
    assert first["events"] == []
    vid = ec2.create_volume(Size=1, AvailabilityZone=ZONE)["VolumeId"]
    newer = events(sim, since=first["now"])
    assert [(e["id"], e["to"]) for e in newer["events"]] == [(vid, "creating")]
    assert events(sim, since=newer["now"])["events"] == []
    wait_volume_state(ec2, vid, "available")
    later = events(sim, since=newer["now"])["events"]
    assert [(e["id"], e["from"], e["to"]) for e in later] == [(vid, "creating", "available")]
    assert all(e["t"] > newer["now"] for e in later)
    # polling with the previous `now` misses nothing and repeats nothing
    seen, since = [], first["now"]
    for _ in range(3):
        a = events(sim, since=since)
        seen += a["events"]
        since = a["now"]
    assert [e["seq"] for e in seen] == [1, 2]

    assert sim.control("POST", "/_sim/events/reset") == {"ok": True}
    assert events(sim)["events"] == []
    ec2.delete_volume(VolumeId=vid)
    assert [e["seq"] for e in events(sim)["events"]] == [1]  # seq restarts
    sim.reset()
    assert events(sim)["events"] == []

    for query in ("since=abc", "since=nan", "until=1"):
        status, _, body = sim.http("GET", "/_sim/events?" + query)
        assert status == 400 and b"error" in body, (query, body)


def test_log_is_bounded():
    from ec2sim.events import EventLog

    log = EventLog(max_events=3)
    for i in range(5):
        log.record("volume", f"vol-{i}", None, "creating")
    kept = log.since()
    assert [e["id"] for e in kept] == ["vol-2", "vol-3", "vol-4"]
    assert [e["seq"] for e in kept] == [3, 4, 5] and log.dropped == 2
    assert [e["id"] for e in log.since(kept[0]["t"])] == ["vol-3", "vol-4"]
    log.clear()
    assert log.since() == [] and log.dropped == 0


@needs_root
def test_busy_detach_logged(ec2, sim, tmp_path):
    """Detaching a mounted volume: detaching -> busy at the detach's due time, busy -> detached at unmount."""
    me = sim.info["instance_id"]
    vid = ec2.create_volume(Size=1, AvailabilityZone=ZONE, VolumeType="gp3")["VolumeId"]
    wait_volume_state(ec2, vid, "available")
    link = os.path.join(sim.info["device_dir"], "nvme-Amazon_Elastic_Block_Store_" + vid.replace("-", ""))
    ec2.attach_volume(VolumeId=vid, InstanceId=me, Device="/dev/xvdba")
    wait_for(lambda: attachment_state(ec2, vid) == "attached")
    subprocess.run(["mkfs.ext4", "-q", "-F", link], check=True)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", link, str(mnt)], check=True)
    try:
        _, d0, d1 = timed(lambda: ec2.detach_volume(VolumeId=vid))
        wait_for(lambda: attachment_state(ec2, vid) == "busy")
        time.sleep(0.3)
    finally:
        u0 = time.time()
        subprocess.run(["umount", str(mnt)], check=True)
        u1 = time.time()
    wait_for(lambda: attachment_state(ec2, vid) is None)
    evs = events(sim)["events"]
    near(one(evs, "attachment", vid, "detaching", "busy"), d0, d1, FAST["detach"])
    gone = one(evs, "attachment", vid, "busy", "detached")
    assert u0 - SLACK <= gone["t"] <= u1 + 0.1 + SLACK  # the next busy re-check (every 0.1 s)
