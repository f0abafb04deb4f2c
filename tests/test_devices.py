"""One GPU per job (issue 10 §6), without a GPU: processes claiming a device from a pretend device count get
distinct indices, a killed holder's index is claimed again, and pick_device("auto") claims one when torch reports
several GPUs."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from r2l.core import devices, runtime

ROOT = Path(__file__).resolve().parents[1]

# Claims a device out of argv[1] pretend devices, prints its index, holds it until stdin closes.
WORKER = """
import sys
from r2l.core.devices import claim_gpu
print(claim_gpu(int(sys.argv[1]), poll=0.05), flush=True)
sys.stdin.read()
"""


def worker(count: int, lock_dir: Path, visible: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), devices.LOCK_DIR_VARIABLE: str(lock_dir)}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    if visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = visible
    return subprocess.Popen([sys.executable, "-c", WORKER, str(count)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def index_of(proc: subprocess.Popen, timeout: float = 30) -> int:
    """The index a worker printed (it waits for a free device until then)."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, f"no device claimed in {timeout} s"
    line = proc.stdout.readline()
    assert line, proc.stderr.read()
    return int(line)


def stop(*procs: subprocess.Popen) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.stdin.close()
            proc.wait(timeout=30)


@pytest.fixture(autouse=True)
def fresh_claim(tmp_path, monkeypatch):
    """Each test starts with no device held by this process and its own lock folder."""
    monkeypatch.setenv(devices.LOCK_DIR_VARIABLE, str(tmp_path / "locks"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    devices.release_gpu()
    yield
    devices.release_gpu()


def test_concurrent_jobs_get_distinct_devices(tmp_path):
    procs = [worker(3, tmp_path / "locks") for _ in range(3)]
    try:
        assert sorted(index_of(p) for p in procs) == [0, 1, 2]
        held = sorted(p.name for p in (tmp_path / "locks").iterdir())
        assert held == ["gpu-0.lock", "gpu-1.lock", "gpu-2.lock"]
        assert devices.claim_gpu(3, wait=False) is None  # all three are held
    finally:
        stop(*procs)


def test_a_killed_holders_device_is_claimed_again(tmp_path):
    first, second = worker(2, tmp_path / "locks"), worker(2, tmp_path / "locks")
    waiting = None
    try:
        by_index = {index_of(first): first}
        by_index[index_of(second)] = second
        assert sorted(by_index) == [0, 1]
        waiting = worker(2, tmp_path / "locks")  # waits: both devices are held
        time.sleep(1.0)
        assert waiting.poll() is None
        by_index[1].send_signal(signal.SIGKILL)  # no clean-up: the kernel drops its lock
        by_index[1].wait(timeout=30)
        assert index_of(waiting) == 1
        assert "pid" in (tmp_path / "locks" / "gpu-1.lock").read_text()
    finally:
        stop(*(p for p in (first, second, waiting) if p is not None))


def test_a_process_keeps_its_device_and_can_give_it_back(tmp_path):
    assert devices.claim_gpu(2) == 0
    assert devices.claim_gpu(2) == 0  # asked again: the same device, not a second one
    other = worker(2, tmp_path / "locks")
    try:
        assert index_of(other) == 1
    finally:
        stop(other)
    devices.release_gpu()
    assert devices.claim_gpu(2, wait=False) == 0


def test_locks_are_named_after_the_physical_devices(tmp_path):
    """With CUDA_VISIBLE_DEVICES=2,3 a job's cuda:0 is device 2: its lock is gpu-2, whatever subset a job sees."""
    narrow, wide = worker(2, tmp_path / "locks", visible="2,3"), worker(3, tmp_path / "locks", visible="1,2,3")
    try:
        first = index_of(narrow)
        assert first == 0 and index_of(wide) == 0  # physical 2 for the first, physical 1 for the second
        names = sorted(p.name for p in (tmp_path / "locks").iterdir())
        assert names == ["gpu-1.lock", "gpu-2.lock"]  # not gpu-0: no job here sees physical device 0
    finally:
        stop(narrow, wide)


def test_pick_device_auto_claims_a_gpu_when_there_are_several(tmp_path, monkeypatch, caplog):
    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    holder = worker(2, tmp_path / "locks")
    try:
        assert index_of(holder) == 0
        with caplog.at_level("INFO", logger="r2l"):
            assert runtime.pick_device("auto") == torch.device("cuda", 1)
        assert chosen == [1] and devices.held_gpu() == 1
        assert "using GPU 1 of 2" in caplog.text  # the job's log says which device it got
        assert runtime.pick_device(None) == torch.device("cuda", 1)  # later calls: the same device
        assert runtime.pick_device("cuda:0") == torch.device("cuda:0")  # an explicit device is used as given
    finally:
        stop(holder)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    devices.release_gpu()
    assert runtime.pick_device("auto") == torch.device("cuda") and devices.held_gpu() is None  # one GPU: no lock
