"""Student training in several processes (DistributedDataParallel, gloo on the CPU) against one process.

With the hard-example pool not yet full, two processes that each train on their share of the same global batch
(equal shares, or 64 + 63 rays) compute the one-process gradient, so the loss history and the weights match a
one-process run up to float rounding (the gradient is summed in another order): rtol 1e-5 on the losses, 1e-5 on
the weights. Once the pools are full they hand out other rays than one process's pool (each process picks the
hardest of its own share), so a run with hard mining matches one process only until the pools fill, at the same
step; after that it is checked to finish with finite losses.
"""

from __future__ import annotations

import datetime
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import analytic_stores

import r2l.stages.loop as loop
import r2l.stages.student as student
from r2l.core.checkpoint import load_checkpoint
from r2l.core.errors import R2LError
from r2l.models.r2lnet import R2LNetConfig
from r2l.stages.distributed import JOB_FILE, read_job, run_training, write_job
from r2l.stages.student import DistillConfig, check_shares, pool_share, share, train_student

RES = 16
STEPS = 20
RTOL = 1e-5  # losses and weights of two processes against one
TIMEOUT = 120  # seconds a multi-process run may take before the test fails instead of hanging
UNEVEN = dict(batch_rays=127)  # 64 + 63 fresh rays, 13 + 12 hard ones
HARD = dict(steps=10, batch_rays=127, hard_ratio=0.45, hard_mul=2)  # 57 hard rays (29 + 28): pools full after 5 steps


def _cfg(**kw) -> DistillConfig:
    """A tiny student (4 layers, width 32); the pool fills after hard_mul / hard_ratio = 100 steps (> STEPS)."""
    base = dict(steps=STEPS, batch_rays=128, warmup_steps=5, lr=2e-3, lr_decay_steps=1000, val_every=0, val_views=1,
                ckpt_every=7, log_every=1, device="cpu", chunk=4096, network=R2LNetConfig(depth=4, width=32, n_freqs=4))
    return DistillConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """Pseudo-data of the built-in scene: 6 views of 16 x 16."""
    return analytic_stores(tmp_path_factory.mktemp("ddp"), side=RES, n_train=6, pseudo=(6, 6))["pseudo"]


def _one_process(store: Path, root: Path, **kw) -> dict:
    """The reference: the run in this process; returns the student file's contents."""
    train_student([store], _cfg(**kw), root / "model.pt", root / "resume")
    return load_checkpoint(root / "model.pt")


@pytest.fixture(scope="module")
def one_process(store, tmp_path_factory) -> dict:
    """STEPS steps of 128 fresh rays in this process."""
    return _one_process(store, tmp_path_factory.mktemp("one"))


def _losses(student_file: dict) -> np.ndarray:
    return np.array([row[1] for row in student_file["metrics"]["loss_history"]])


def _compare(got: dict, want: dict) -> tuple[float, float]:
    """Assert two student files' loss histories and weights agree to RTOL; returns the largest differences."""
    losses, ref = _losses(got), _losses(want)
    assert losses.shape == ref.shape == (STEPS,)
    np.testing.assert_allclose(losses, ref, rtol=RTOL)
    for name, w in want["weights"].items():
        torch.testing.assert_close(got["weights"][name], w, rtol=RTOL, atol=RTOL)
    weight_diff = max(float((got["weights"][k] - w).abs().max()) for k, w in want["weights"].items())
    return float(np.abs(losses / ref - 1).max()), weight_diff


def test_torchrun_two_processes_match_one(store, one_process, tmp_path, capsys):
    """The rule's path: run_training with gpus=2 launches torchrun (two gloo processes)."""
    args = dict(store_dirs=[store], cfg=_cfg(), out_path=tmp_path / "model.pt", resume_dir=tmp_path / "resume",
                history_path=tmp_path / "history.csv")
    start = time.perf_counter()
    assert run_training("train_student", args, 2, tmp_path / "resume") is None
    seconds = time.perf_counter() - start
    got = load_checkpoint(tmp_path / "model.pt")
    assert got["metrics"]["processes"] == 2
    loss_rel, weight_diff = _compare(got, one_process)
    with capsys.disabled():
        print(f"\n2 processes (torchrun, {seconds:.1f} s) vs 1: losses {got['metrics']['loss_history'][-1][1]:.6g} vs "
              f"{one_process['metrics']['loss_history'][-1][1]:.6g} at step {STEPS - 1}, largest relative loss "
              f"difference {loss_rel:.2e}, largest weight difference {weight_diff:.2e}")
    names = sorted(p.name for p in (tmp_path / "resume").iterdir())
    assert names == ["ckpt_000000014.pt", "ckpt_000000020.pt", JOB_FILE]  # no temp files left by either process
    assert (tmp_path / "history.csv").is_file()


def test_a_failing_process_raises_with_its_error(tmp_path):
    args = dict(store_dirs=[tmp_path / "missing"], cfg=_cfg(), out_path=tmp_path / "model.pt",
                resume_dir=tmp_path / "resume")
    with pytest.raises(R2LError, match=r"training in 2 processes failed: process \d: .*missing.*output is in logs/train.log"):
        run_training("train_student", args, 2, tmp_path / "resume", log_path="logs/train.log")


def _refuse(*args, **kwargs):
    raise AssertionError("a process other than the first wrote a file")


def _worker(rank: int, port: int, store: Path, root: Path) -> None:
    """Process ``rank`` of 2: an uninterrupted run, a run stopped at step 10 and resumed, and a run with hard
    mining; process 1 fails if it writes anything."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=TIMEOUT))
    if rank == 1:
        student.save_model_file = loop.save_checkpoint = loop.write_history = _refuse
    train_student([store], _cfg(**UNEVEN), root / "full.pt", root / "resume_full")
    assert not train_student([store], _cfg(**UNEVEN), root / "resumed.pt", root / "resume", max_steps=10)["finished"]
    train_student([store], _cfg(**UNEVEN), root / "resumed.pt", root / "resume")
    train_student([store], _cfg(**HARD), root / "hard.pt", root / "resume_hard")
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_spawned_uneven_resume_hard_mining_and_writes(store, tmp_path, capsys):
    """Two spawned processes: uneven shares match one process; resuming reproduces the uninterrupted run exactly;
    hard mining runs and matches one process until the pools are full; only process 0 writes."""
    ctx = mp.start_processes(_worker, args=(_free_port(), store, tmp_path), nprocs=2, join=False, start_method="spawn")
    deadline = time.monotonic() + TIMEOUT
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"two spawned training processes still running after {TIMEOUT} s")
    full, resumed = load_checkpoint(tmp_path / "full.pt"), load_checkpoint(tmp_path / "resumed.pt")
    loss_rel, weight_diff = _compare(full, _one_process(store, tmp_path / "one", **UNEVEN))
    with capsys.disabled():
        print(f"\n2 processes (64 + 63 rays) vs 1: largest relative loss difference {loss_rel:.2e}, largest weight "
              f"difference {weight_diff:.2e}")
    for name, w in full["weights"].items():
        assert torch.equal(resumed["weights"][name], w), name
    assert [r[1] for r in resumed["metrics"]["loss_history"]] == [r[1] for r in full["metrics"]["loss_history"]]
    hard, hard_one = load_checkpoint(tmp_path / "hard.pt"), _one_process(store, tmp_path / "one_hard", **HARD)
    assert hard["metrics"]["final_step"] == 10 and np.isfinite(_losses(hard)).all()
    np.testing.assert_allclose(_losses(hard)[:5], _losses(hard_one)[:5], rtol=RTOL)  # the pools are not full yet
    assert not np.allclose(_losses(hard)[5:], _losses(hard_one)[5:], rtol=RTOL)  # other pool rays from step 5


def test_shares():
    assert [share(127, r, 2) for r in range(2)] == [slice(0, 64), slice(64, 127)]
    assert [share(10, r, 4) for r in range(4)] == [slice(0, 3), slice(3, 6), slice(6, 8), slice(8, 10)]
    cfg = _cfg(**HARD)  # hard_mul * batch_rays / n_hard = 254 / 57: one pool fills in 5 steps, and so do both
    assert pool_share(cfg, 0, 1) == (254, 57)
    assert pool_share(cfg, 0, 2) == (130, 29) and pool_share(cfg, 1, 2) == (125, 28)
    paper = DistillConfig()
    assert [pool_share(paper, r, 8) for r in range(8)] == [(204_800, 2048)] * 8  # hard_mul * batch_rays / 8
    check_shares(_cfg(), 2)
    with pytest.raises(R2LError, match=r"batch_rays 4 and its 1 hard rays .*too few to share among 3"):
        check_shares(_cfg(batch_rays=4, hard_ratio=0.25), 3)


def test_job_file_round_trip(tmp_path):
    cfg = _cfg(lr_decay_steps=None, precision="bf16")
    args = dict(store_dirs=[tmp_path / "a"], cfg=cfg, out_path=str(tmp_path / "m.pt"), resume_dir=tmp_path, steps=3)
    name, back = read_job(write_job(tmp_path / JOB_FILE, "finetune_student", args))
    assert name == "finetune_student" and back["cfg"] == cfg
    assert back["store_dirs"] == [str(tmp_path / "a")] and back["steps"] == 3
    with pytest.raises(R2LError, match="cannot be passed"):
        write_job(tmp_path / JOB_FILE, "train_student", {**args, "val_fn": len})
