"""GPU checks (issue 12, §4), marked ``cuda`` and skipped where CUDA is absent:

- the same losses on the CPU and on the GPU for the first steps of the teacher loop (grid and NeRF) and of the
  student loop, from the same weights, rays and jitter (the random draws come from CPU generators on both);
- bf16 renders of trained teachers and of a student within a stated distance of their fp32 renders;
- kill and resume on the GPU: a teacher killed mid-run and a student stopped by ``max_steps`` continue to the
  same end as an uninterrupted run.

``R2L_CUDA_TEST_DEVICE`` (default ``cuda``) names the device compared with the CPU: ``bench/gpu_check.py
--dry-run`` sets it to ``cpu``, so every test here also runs (the CPU against itself) on a machine without a GPU.
Tolerances allow for what differs between the devices: the order of floating-point sums, fused Adam on CUDA,
and CUDA's non-deterministic atomic adds in ``grid_sample``'s backward pass.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import (
    TINY_GRID,
    Killed,
    analytic_stores,
    builtin_cameras,
    builtin_orbit,
    kill_at,
    psnr_db,
    tiny_student,
    tiny_teacher,
)

from r2l.core.checkpoint import load_checkpoint
from r2l.data.scene import Scene
from r2l.models.r2lnet import R2LNet, R2LNetConfig
from r2l.models.students import load_student
from r2l.models.teacher import build_model, load_teacher
from r2l.stages import teacher as teacher_stage
from r2l.stages.student import DistillConfig, HardPool, train_student
from r2l.stages.student import train_step as student_step

DEVICE = os.environ.get("R2L_CUDA_TEST_DEVICE", "cuda")
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(DEVICE.startswith("cuda") and not torch.cuda.is_available(),
                       reason="needs CUDA (R2L_CUDA_TEST_DEVICE=cpu runs these tests on the CPU)"),
]

STEPS = 5  # loop steps compared between the CPU and the device
FIRST_RTOL = 1e-4  # the first loss: same weights and rays, only the order of the sums differs
LATER_RTOL = 2e-2  # later losses: Adam divides by the gradients' RMS, which amplifies rounding in tiny gradients
BF16_MIN_PSNR = 40.0  # a bf16 render against the fp32 render of the same model, in dB (RMS difference 1%)
STUDENT_NET = R2LNetConfig(n_points=8, n_freqs=4, depth=6, width=32)


def teacher_cfg(kind: str, device: str):
    """The tiny teacher on ``device`` in fp32, no centre crop, no learning check, a grid of fixed resolution."""
    return tiny_teacher(kind, {"precrop_steps": 0, "val_views": 1, "device": device, "chunk": 1024,
                               "precision": "fp32", "check_learned": False,
                               "grid": {**TINY_GRID, "resolution_init": 24, "upsample_steps": []}})


def random_scene(n_views: int = 4, side: int = 16) -> Scene:
    """A Blender-like Scene of the built-in scene's cameras with random images (n_views, side, side, 3)."""
    images = np.random.default_rng(0).random((n_views, side, side, 3), dtype=np.float32)
    return builtin_cameras(n_views, side, images, name="random")


def teacher_losses(kind: str, device: str, scene: Scene, tmp: Path) -> list[float]:
    """The losses of the first :data:`STEPS` teacher steps on ``device`` from CPU-seeded weights and CPU draws."""
    cfg = teacher_stage.resolve_for_scene(teacher_cfg(kind, device), scene)
    dev = torch.device(device)
    info = teacher_stage.scene_info(scene)
    torch.manual_seed(0)
    model = build_model(cfg, info).to(dev)  # initialised on the CPU, then moved: the same weights everywhere
    optimizer = teacher_stage.make_optimizer(model, cfg, dev)
    rays = teacher_stage.TrainRays(scene, dev)
    rngs = (torch.Generator().manual_seed(0), torch.Generator().manual_seed(1))  # CPU draws on both devices
    return [teacher_stage.train_step(model, optimizer, cfg, info, rays, rngs, step, False, dev, tmp)[0]
            for step in range(STEPS)]


def assert_same_losses(device_losses: list[float], cpu_losses: list[float]) -> None:
    np.testing.assert_allclose(device_losses[0], cpu_losses[0], rtol=FIRST_RTOL)
    np.testing.assert_allclose(device_losses, cpu_losses, rtol=LATER_RTOL)


@pytest.mark.parametrize("kind", ["grid", "nerf"])
def test_teacher_losses_match_the_cpu(kind, tmp_path):
    scene = random_scene()
    assert_same_losses(teacher_losses(kind, DEVICE, scene, tmp_path), teacher_losses(kind, "cpu", scene, tmp_path))


def student_losses(device: str) -> list[float]:
    """The losses of the first :data:`STEPS` student steps on ``device`` (the hard pool is still filling)."""
    dev = torch.device(device)
    cfg = DistillConfig(network=STUDENT_NET, batch_rays=256, precision="fp32", device=device)
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = R2LNet(STUDENT_NET).to(dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999), fused=dev.type == "cuda")
    pool = HardPool(cfg.hard_mul * cfg.batch_rays, cfg.n_hard, dev, seed=0)
    jitter = torch.Generator().manual_seed(1)  # a CPU generator: the same point jitter on both devices
    losses = []
    for _ in range(STEPS):
        rays_o = torch.randn(cfg.batch_rays, 3, generator=gen) * 0.1 + torch.tensor([0.0, 0.0, 4.0])
        rays_d = torch.randn(cfg.batch_rays, 3, generator=gen) * 0.1 - torch.tensor([0.0, 0.0, 1.0])
        rgb = torch.rand(cfg.batch_rays, 3, generator=gen)
        geo = torch.full((cfg.batch_rays, 2), float("nan"))  # no teacher depth (the R2L MLP does not use it)
        batch = tuple(x.to(dev) for x in (rays_o, rays_d, rgb, geo))
        losses.append(float(student_step(model, optimizer, batch, pool, {"near": 2.0, "far": 6.0}, cfg, dev, jitter)))
    assert pool.size < pool.capacity  # no pool draws yet: the pool's own generator lives on the device
    return losses


def test_student_losses_match_the_cpu():
    assert_same_losses(student_losses(DEVICE), student_losses("cpu"))


# ----------------------------------------------------------------------------- trained models on the device


@pytest.fixture(scope="module")
def builtin(tmp_path_factory):
    return builtin_orbit(tmp_path_factory.mktemp("scene") / "builtin", n_val=1)


@pytest.fixture(scope="module")
def teachers(builtin, tmp_path_factory) -> dict[str, Path]:
    """Tiny teachers trained 40 steps on the device without interruption: kind -> model file."""
    out = {}
    for kind in ("grid", "nerf"):
        d = tmp_path_factory.mktemp(f"teacher_{kind}")
        teacher_stage.train_teacher(builtin, teacher_cfg(kind, DEVICE), d / "model.pt", d / "resume")
        out[kind] = d / "model.pt"
    return out


@pytest.mark.parametrize("kind", ["grid", "nerf"])
def test_teacher_kill_and_resume_on_the_device(kind, builtin, teachers, tmp_path):
    cfg = teacher_cfg(kind, DEVICE)
    with pytest.raises(Killed):
        teacher_stage.train_teacher(builtin, cfg, tmp_path / "model.pt", tmp_path / "resume", on_step=kill_at(25))
    assert load_checkpoint(tmp_path / "resume" / "ckpt_000000020.pt")["step"] == 20
    metrics = teacher_stage.train_teacher(builtin, cfg, tmp_path / "model.pt", tmp_path / "resume")
    assert metrics["final_step"] == 40
    resumed, ref = (torch.load(p, weights_only=True) for p in (tmp_path / "model.pt", teachers[kind]))
    np.testing.assert_allclose(np.array(resumed["metrics"]["loss_history"]),
                               np.array(ref["metrics"]["loss_history"]), rtol=LATER_RTOL)
    for k, w in ref["weights"].items():
        torch.testing.assert_close(resumed["weights"][k], w, atol=1e-3, rtol=1e-3, msg=k)


@pytest.mark.parametrize("kind", ["grid", "nerf"])
def test_bf16_teacher_render_within_tolerance_of_fp32(kind, builtin, teachers):
    pose = builtin.split("test")[1][0]
    fp32, bf16 = (load_teacher(teachers[kind], DEVICE, precision=p).render_image(builtin, pose, 16, 16, builtin.focal)
                  for p in ("fp32", "bf16"))
    assert torch.isfinite(bf16).all()
    assert psnr_db(bf16, fp32) >= BF16_MIN_PSNR


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> Path:
    """Pseudo views (16 at 24x24) of the built-in scene's analytic ground truth."""
    return analytic_stores(tmp_path_factory.mktemp("stores"), side=24, n_train=6, pseudo=(16, 8))["pseudo"]


def student_cfg() -> DistillConfig:
    """The tiny student on the device in fp32 with :data:`STUDENT_NET`, validating 2 views, a checkpoint every 4
    steps."""
    return tiny_student({"val_views": 2, "ckpt_every": 4, "device": DEVICE, "precision": "fp32",
                         "network": STUDENT_NET})


def test_student_stop_and_resume_on_the_device(stores, tmp_path):
    full = train_student([stores], student_cfg(), tmp_path / "a.pt", tmp_path / "ra")
    part = train_student([stores], student_cfg(), tmp_path / "b.pt", tmp_path / "rb", max_steps=4)
    assert part["finished"] is False and part["step"] == 4
    resumed = train_student([stores], student_cfg(), tmp_path / "b.pt", tmp_path / "rb")
    assert resumed["final_step"] == full["final_step"] == 8 and resumed["device"] == torch.device(DEVICE).type
    a, b = np.array(full["loss_history"]), np.array(resumed["loss_history"])
    assert a[:, 0].tolist() == b[:, 0].tolist()
    np.testing.assert_allclose(b[:, 1], a[:, 1], rtol=LATER_RTOL)
    fp32, bf16 = (load_student(tmp_path / "b.pt", DEVICE, precision=p) for p in ("fp32", "bf16"))
    rays_o = torch.tensor([[0.0, 0.0, 4.0]]).repeat(512, 1)
    rays_d = torch.nn.functional.normalize(torch.randn(512, 3, generator=torch.Generator().manual_seed(0)) * 0.2
                                           - torch.tensor([0.0, 0.0, 1.0]), dim=-1)
    assert psnr_db(bf16.render_rays(rays_o, rays_d), fp32.render_rays(rays_o, rays_d)) >= BF16_MIN_PSNR
