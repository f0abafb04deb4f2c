"""Helpers the tests share: the configs (shipped and tiny), Snakemake on the tiny config, killing a stage at a step.

Import them by name (``from helpers import tiny_teacher``): pytest puts tests/ on the path.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from r2l.data.builtin import write_blender, write_llff
from r2l.data.registry import load_scene
from r2l.models.r2lnet import R2LNetConfig
from r2l.models.teacher import TeacherConfig, teacher_config_from_dict
from r2l.stages.student import DistillConfig

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "config" / "config.yaml"  # the shipped defaults
TEST_CONFIG = ROOT / ".test" / "config" / "config.yaml"  # the tiny config CI runs end to end

TINY_NERF = {
    "depth": 2, "width": 32, "skip": 0, "pos_freqs": 4, "dir_freqs": 2, "head_width": 16, "n_coarse": 16, "n_fine": 16,
}
TINY_GRID = {
    "resolution": 24, "resolution_init": 12, "upsample_steps": [15, 30], "density_components": 4, "app_components": 8,
    "app_dim": 8, "mlp_width": 32, "n_samples": 48, "occupancy_resolution": 16, "occupancy_warmup": 10,
    "occupancy_every": 5,
}
TINY_TEACHER = {
    "steps": 40, "batch_rays": 128, "lr": 1e-2, "lr_decay_steps": 1000, "precrop_steps": 10, "val_every": 0,
    "val_views": 2, "ckpt_every": 10, "log_every": 5, "device": "cpu", "chunk": 100, "nerf": TINY_NERF,
    "grid": TINY_GRID,
}
TINY_STUDENT = {
    "steps": 8, "batch_rays": 256, "warmup_steps": 2, "lr_decay_steps": 1000, "val_every": 0, "val_views": 0,
    "ckpt_every": 3, "log_every": 1, "device": "cpu", "chunk": 1024,
    "network": R2LNetConfig(depth=4, width=16, n_freqs=4),
}


def default_config() -> dict:
    """config/config.yaml as read (a fresh copy each call)."""
    return yaml.safe_load(DEFAULT_CONFIG.read_text())


def tiny_teacher(kind: str, over: dict | None = None) -> TeacherConfig:
    """A teacher of ``kind`` that trains in seconds on a 16x16 scene (40 steps, tiny networks), with ``over``."""
    return teacher_config_from_dict({**TINY_TEACHER, "kind": kind, **(over or {})})


def tiny_student(over: dict | None = None) -> DistillConfig:
    """An r2l student that trains in a second (8 steps, a 4x16 network), with ``over`` (dataclass values)."""
    return DistillConfig(**{**TINY_STUDENT, **(over or {})})


def snakemake_command(workdir: Path, *args: str, configfiles: tuple[Path, ...] = (TEST_CONFIG,)) -> list[str]:
    """Snakemake with ``args`` (targets, options) on the repository's Snakefile in ``workdir``: the ``configfiles``
    (the tiny test config unless given), one core, one GPU slot."""
    return [sys.executable, "-m", "snakemake", *args, "-s", str(ROOT / "Snakefile"), "--directory", str(workdir),
            "--configfile", *map(str, configfiles), "--cores", "1", "--resources", "gpu=1"]


class Killed(Exception):
    """Raised by a test's callback to stop a stage the way a kill would: mid-run, checkpoints left behind."""


def kill_at(step: int, seen: list | None = None):
    """An ``on_step(step, loss)`` callback that notes each step in ``seen`` and raises :class:`Killed` at ``step``
    (-1: never)."""

    def on_step(current: int, loss) -> None:
        if seen is not None:
            seen.append(current)
        if current == step:
            raise Killed()

    return on_step


def kill_on_call(n: int, value):
    """A callback (any arguments) that returns ``value`` n - 1 times and raises :class:`Killed` on call ``n``, e.g.
    a ``val_fn`` that dies during a validation."""
    calls = []

    def callback(*_args):
        calls.append(None)
        if len(calls) == n:
            raise Killed()
        return value

    return callback


def object_and_forward_scenes(root: Path, width: int) -> dict:
    """Two tiny built-in scenes in ``root``: ``orbit`` (Blender format, ``width`` square, one test view) and ``ff``
    (LLFF format, NDC, ``width`` x 3/4 of it, 8 views)."""
    orbit = write_blender(root / "orbit", seed=0, resolution=width, n_train=2, n_val=1, n_test=1, spp=1)
    ff = write_llff(root / "ff", seed=1, width=width, height=width * 3 // 4, n_views=8, spp=1)
    return {"orbit": load_scene("builtin", orbit), "ff": load_scene("llff", ff)}


def save_student_file(path: Path, net, config: dict, scene, step: int = 7) -> Path:
    """A finetuned-student model file of ``net`` (its DistillConfig as a dict: ``config``) for ``scene``, with the
    keys r2l.stages.student writes (scene camera included) and made-up metrics."""
    from r2l.core.checkpoint import atomic_torch_save

    cam = scene.camera()
    atomic_torch_save({
        "weights": net.state_dict(), "config": config, "kind": "finetuned", "near": cam["near"], "far": cam["far"],
        "ndc": cam["ndc"], "ndc_near": cam["ndc_near"], "scene": {"name": scene.name, "format": scene.format, **cam},
        "step": step, "metrics": {"val_psnr": 11.5, "train_seconds": 1.0, "device": "cpu", "device_name": "cpu"},
    }, path)
    return path
