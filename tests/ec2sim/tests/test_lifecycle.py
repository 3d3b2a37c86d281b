"""The process contract: one JSON line, loopback only, and nothing left behind, ever."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from conftest import RUN, SimProcess, attachment_state, loop_devices_backed_by, needs_root, wait_for

KEYS = {"endpoint", "imds_endpoint", "region", "availability_zone", "instance_id", "device_dir", "devices",
        "state_dir", "pid"}


def attach_local(sim, size=1, device="/dev/xvdba"):
    ec2 = sim.client()
    v = ec2.create_volume(Size=size, AvailabilityZone=sim.info["availability_zone"], VolumeType="gp3")["VolumeId"]
    wait_for(lambda: ec2.describe_volumes(VolumeIds=[v])["Volumes"][0]["State"] == "available")
    ec2.attach_volume(VolumeId=v, InstanceId=sim.info["instance_id"], Device=device)
    wait_for(lambda: attachment_state(ec2, v) == "attached")
    return v


def test_ready_line_and_loopback(start_sim):
    s = start_sim()
    assert set(s.info) == KEYS
    assert s.info["endpoint"] == s.info["imds_endpoint"]
    assert s.info["endpoint"].startswith("http://127.0.0.1:") and int(s.info["endpoint"].rsplit(":", 1)[1]) > 0
    assert s.info["devices"] is (os.geteuid() == 0)
    assert os.path.isdir(s.info["device_dir"]) and os.path.isdir(s.info["state_dir"])
    print(f"startup to ready line: {s.startup_s:.2f}s")
    assert s.startup_s < 6.0  # ~2 s measured; generous for a loaded 2-core machine
    port = s.info["endpoint"].rsplit(":", 1)[1]
    listening = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True).stdout
    if listening:
        assert all("127.0.0.1:" in line for line in listening.strip().splitlines())


def test_stdout_has_only_the_json_line(tmp_path):
    p = subprocess.Popen([str(RUN), "--devices", "off"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         stdin=subprocess.DEVNULL)
    line = p.stdout.readline()
    json.loads(line)
    p.send_signal(signal.SIGTERM)
    rest = p.stdout.read()
    assert p.wait(10) == 0
    assert rest == b""


def test_bad_flags_exit_2():
    r = subprocess.run([str(RUN), "--delays", "glacial"], capture_output=True, timeout=30)
    assert r.returncode == 2 and r.stdout == b""
    r = subprocess.run([str(RUN), "--zone", "us-east-1z", "--devices", "off"], capture_output=True, timeout=30)
    assert r.returncode == 2 and b"us-east-1z" in r.stderr and r.stdout == b""


@needs_root
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_leaves_no_loop_device_and_no_file(sig, tmp_path):
    s = SimProcess(stderr_path=tmp_path / "err")
    try:
        a = attach_local(s, size=2)
        attach_local(s, device="/dev/xvdbb")
        ec2 = s.client()
        ec2.create_snapshot(VolumeId=a)
        assert len(loop_devices_backed_by(s.info["state_dir"])) == 2
        assert len(os.listdir(s.info["device_dir"])) == 2
        files = [f for f in os.listdir(s.info["state_dir"]) if not f.startswith(".")]
        assert len(files) == 3  # 2 volumes + 1 snapshot
    finally:
        assert s.stop(sig) == 0
    s.assert_no_leftovers()


@needs_root
def test_sigterm_with_mounted_device_still_cleans(tmp_path):
    s = SimProcess(stderr_path=tmp_path / "err")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        v = attach_local(s)
        link = os.path.join(s.info["device_dir"], "nvme-Amazon_Elastic_Block_Store_" + v.replace("-", ""))
        subprocess.run(["mkfs.ext4", "-q", "-F", link], check=True)
        subprocess.run(["mount", link, str(mnt)], check=True)
    finally:
        s.stop()
    assert not os.path.ismount(mnt)
    wait_for(lambda: loop_devices_backed_by(s.info["state_dir"]) == [], timeout=5, what="autoclear")
    s.assert_no_leftovers()


@needs_root
def test_exits_and_cleans_when_parent_dies(tmp_path):
    """A Rust test that panics drops its child: the simulator must notice and clean up."""
    out = tmp_path / "ready.json"
    parent = subprocess.Popen(
        [sys.executable, "-c",
         "import subprocess,sys,time\n"
         f"p=subprocess.Popen([{str(RUN)!r}], stdout=open({str(out)!r},'w'), stderr=subprocess.DEVNULL)\n"
         "time.sleep(600)\n"],
    )
    try:
        info = wait_for(lambda: out.exists() and out.read_text().strip() and json.loads(out.read_text()),
                        timeout=30, what="ready line")
        s = SimProcess.__new__(SimProcess)
        s.info, s.endpoint = info, info["endpoint"]
        attach_local(s)
        assert loop_devices_backed_by(info["state_dir"])
    finally:
        parent.kill()
        parent.wait()
    wait_for(lambda: not os.path.exists(f"/proc/{info['pid']}"), timeout=10, what="simulator exit")
    s.assert_no_leftovers()


@needs_root
def test_stale_devices_of_a_killed_simulator_are_swept(tmp_path):
    a = SimProcess(stderr_path=tmp_path / "a")
    attach_local(a)
    assert a.stop(signal.SIGKILL) == -9  # no chance to clean up
    assert loop_devices_backed_by(a.info["state_dir"])
    b = SimProcess(stderr_path=tmp_path / "b")
    try:
        assert loop_devices_backed_by(a.info["state_dir"]) == []
        assert not os.path.exists(a.info["state_dir"]) and not os.path.exists(a.info["device_dir"])
    finally:
        b.stop()
    b.assert_no_leftovers()


def test_devices_off_flag(start_sim):
    s = start_sim("--devices", "off")
    assert s.info["devices"] is False
    v = attach_local(s)
    assert os.listdir(s.info["device_dir"]) == [] and v


def test_given_dirs_are_kept_but_emptied(tmp_path):
    dev, state = tmp_path / "dev", tmp_path / "state"
    s = SimProcess("--device-dir", str(dev), "--state-dir", str(state), stderr_path=tmp_path / "err")
    try:
        assert s.info["device_dir"] == str(dev) and s.info["state_dir"] == str(state)
        if s.info["devices"]:
            attach_local(s)
            assert os.listdir(dev)
    finally:
        s.stop()
    assert os.listdir(dev) == [] and os.listdir(state) == []
    assert loop_devices_backed_by(str(state)) == []


@needs_root
def test_sweep_spares_a_state_dir_whose_lock_is_held(tmp_path):
    """A live simulator in another PID namespace (pid unknown here) keeps its devices."""
    import fcntl
    import tempfile

    fake_pid = 4194000  # above any pid in use here
    state = tempfile.mkdtemp(prefix=f"ec2sim-state-{fake_pid}-")
    img = os.path.join(state, "vol-0123456789abcdef0.img")
    lock_fd = os.open(os.path.join(state, ".ec2sim.lock"), os.O_CREAT | os.O_RDWR)
    fcntl.flock(lock_fd, fcntl.LOCK_EX)
    os.truncate(os.open(img, os.O_CREAT | os.O_WRONLY), 1 << 20)
    dev = subprocess.check_output(["losetup", "--find", "--show", img], text=True).strip()
    try:
        s = SimProcess("--devices", "on", stderr_path=tmp_path / "a")
        s.stop()
        s.assert_no_leftovers()
        assert loop_devices_backed_by(state) and os.path.exists(img)  # spared: its lock is held
        os.close(lock_fd)
        lock_fd = None
        s = SimProcess("--devices", "on", stderr_path=tmp_path / "b")
        s.stop()
        s.assert_no_leftovers()
        assert loop_devices_backed_by(state) == [] and not os.path.exists(state)  # now swept
    finally:
        if lock_fd is not None:
            os.close(lock_fd)
        subprocess.run(["losetup", "-d", dev], capture_output=True)
        subprocess.run(["rm", "-rf", state])
