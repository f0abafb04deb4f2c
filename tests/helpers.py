"""Helpers the tests share: the configs (shipped and tiny), tiny scenes and view stores of the built-in scene, tiny
student files, Snakemake and the ``r2l`` command in a subprocess, killing a stage at a step, PSNR.

Import them by name (``from helpers import tiny_teacher``): pytest puts tests/ on the path. Fixtures (the real data
beside the checkout, the tiny orbit scene and view stores that several modules train on, quiet logging) are in
conftest.py.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from r2l.data.builtin import BuiltinScene, blender_split_poses, write_blender, write_llff
from r2l.data.registry import load_scene
from r2l.data.scene import Scene
from r2l.models.gridstudent import GridStudentConfig, GridStudentNet
from r2l.models.r2lnet import R2LNet, R2LNetConfig
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
# smaller grid teachers, for files and counts rather than learning: 16^3 (a teacher file in a second) and 8^3
GRID_16 = {
    "resolution": 16, "resolution_init": 12, "upsample_steps": [], "density_components": 4, "app_components": 8,
    "app_dim": 8, "mlp_width": 16, "n_samples": 24, "occupancy_resolution": 8,
}
GRID_8 = {
    "resolution": 8, "resolution_init": 8, "upsample_steps": [], "density_components": 2, "app_components": 3,
    "app_dim": 4, "mlp_width": 8, "n_samples": 32, "occupancy_resolution": 4,
}
# tiny student networks of either family (a student file of them is a few kB)
TINY_NET = R2LNetConfig(n_points=8, n_freqs=4, depth=4, width=16)
TINY_GRID_NET = GridStudentConfig(n_points=8, geometry_resolution=16, n_fine=2, resolutions=(8, 16), channels=3,
                                  mlp_width=16)
BUILTIN_ANGLE = 0.6911112070083618  # camera_angle_x of the built-in scene's Blender cameras (write_blender's default)
# a test that compiles with torch.compile on the CPU: skipped without a C++ compiler
NEEDS_CXX = pytest.mark.skipif(not any(shutil.which(c) for c in ("g++", "c++", "clang++")),
                               reason="torch.compile's Inductor backend needs a C++ compiler on CPU "
                                      "(none of g++, c++, clang++ on PATH)")


def default_config() -> dict:
    """config/config.yaml as read (a fresh copy each call)."""
    return yaml.safe_load(DEFAULT_CONFIG.read_text())


def tiny_teacher(kind: str, over: dict | None = None) -> TeacherConfig:
    """A teacher of ``kind`` that trains in seconds on a 16x16 scene (40 steps, tiny networks), with ``over``."""
    return teacher_config_from_dict({**TINY_TEACHER, "kind": kind, **(over or {})})


def quick_grid_teacher(over: dict | None = None) -> TeacherConfig:
    """A :data:`GRID_16` teacher of 2 steps of 64 rays on the CPU, without the learning check: a real teacher file
    in a second, with ``over``."""
    return teacher_config_from_dict({"kind": "grid", "steps": 2, "batch_rays": 64, "val_views": 1, "device": "cpu",
                                     "check_learned": False, "chunk": 256, "grid": GRID_16, **(over or {})})


def tiny_student(over: dict | None = None) -> DistillConfig:
    """An r2l student that trains in a second (8 steps, a 4x16 network), with ``over`` (dataclass values)."""
    return DistillConfig(**{**TINY_STUDENT, **(over or {})})


def builtin_focal(side: int) -> float:
    """The focal length in pixels of the built-in scene's Blender cameras at ``side`` x ``side``."""
    return 0.5 * side / math.tan(0.5 * BUILTIN_ANGLE)


def written_poses(folder: Path) -> dict[str, np.ndarray]:
    """A Blender-format scene's camera-to-world matrices (4, 4) of its train and test frames, by image file name."""
    poses = {}
    for split in ("train", "test"):
        for frame in json.loads((folder / f"transforms_{split}.json").read_text())["frames"]:
            poses[Path(frame["file_path"]).name] = np.array(frame["transform_matrix"])
    return poses


def builtin_orbit(path: Path, n_train: int = 8, n_val: int = 2, n_test: int = 1, resolution: int = 16, **kw) -> Scene:
    """The built-in orbit scene (seed 0) with these views, written to ``path`` (Blender format; ``kw``: more
    write_blender options) and loaded."""
    return load_scene("builtin", write_blender(path, seed=0, resolution=resolution, n_train=n_train, n_val=n_val,
                                               n_test=n_test, **kw))


def builtin_cameras(n_views: int, side: int, images: np.ndarray | None = None, name: str = "builtin0") -> Scene:
    """A Blender-format Scene of the built-in scene's first ``n_views`` training cameras at ``side`` x ``side``, all
    training views; ``images`` (n_views, side, side, 3) float32, zeros unless given (pseudo-data needs none)."""
    poses = blender_split_poses(0, n_views, 0, 0)["train"].astype(np.float32)
    if images is None:
        images = np.zeros((n_views, side, side, 3), np.float32)
    return Scene(name=name, format="blender", images=images, poses=poses, H=side, W=side, focal=builtin_focal(side),
                 near=2.0, far=6.0, splits={"train": np.arange(n_views)})


def analytic_stores(root: Path, side: int, n_train: int, pseudo: tuple[int, int],
                    val: tuple[int, int] | None = None) -> dict[str, Path]:
    """View stores of the built-in scene's analytic ground truth around the cameras of
    ``builtin_cameras(n_train, side)``: ``root / "pseudo"`` of ``pseudo = (n_views, views_per_shard)`` at seed 0
    and, with ``val``, ``root / "val"`` likewise at seed 1 (other cameras). Returns {"pseudo": path, "val": path}."""
    from r2l.stages.pseudo_data import generate_pseudo_data

    teacher, cams = BuiltinScene(0).as_teacher(), builtin_cameras(n_train, side)
    out = {"pseudo": root / "pseudo"}
    generate_pseudo_data(teacher, cams, out["pseudo"], n_views=pseudo[0], seed=0, views_per_shard=pseudo[1])
    if val is not None:
        out["val"] = root / "val"
        generate_pseudo_data(teacher, cams, out["val"], n_views=val[0], seed=1, views_per_shard=val[1])
    return out


def snakemake_command(workdir: Path, *args: str, configfiles: tuple[Path, ...] = (TEST_CONFIG,),
                      cores: int | None = 1, gpus: int | None = 1) -> list[str]:
    """Snakemake with ``args`` (targets, options) on the repository's Snakefile in ``workdir``: the ``configfiles``
    (the tiny test config unless given), ``cores`` cores and ``gpus`` GPU slots (None: not given, e.g. for a
    profile that sets them)."""
    cmd = [sys.executable, "-m", "snakemake", *args, "-s", str(ROOT / "Snakefile"), "--directory", str(workdir),
           "--configfile", *map(str, configfiles)]
    if cores is not None:
        cmd += ["--cores", str(cores)]
    if gpus is not None:
        cmd += ["--resources", f"gpu={gpus}"]
    return cmd


def run_snakemake(workdir: Path, *args: str, timeout: float = 300, env: dict | None = None,
                  **options) -> subprocess.CompletedProcess:
    """:func:`snakemake_command` (``options``: its keywords) run to the end, its output captured as text."""
    return subprocess.run(snakemake_command(workdir, *args, **options), capture_output=True, text=True,
                          timeout=timeout, env=env)


def job_counts(out: str) -> dict[str, int]:
    """The 'Job stats' table of a Snakemake run's output: rule -> count (without the total)."""
    table = out[out.index("Job stats:"):].splitlines()[3:]
    counts = {}
    for line in table:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit() or parts[0] == "total":
            break
        counts[parts[0]] = int(parts[1])
    return counts


def run_r2l(*args: str, cwd: Path = ROOT, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m r2l ARGS`` in ``cwd`` (the checkout unless given) run to the end, its output captured as text."""
    return subprocess.run([sys.executable, "-m", "r2l", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, check=False)


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


def psnr_db(a, b) -> float:
    """PSNR in dB of ``a`` against ``b`` (values in [0, 1]; inf where equal): tensors in float32, arrays in float64."""
    if isinstance(a, torch.Tensor):
        mse = float((a.float() - b.float()).square().mean())
    else:
        mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return math.inf if mse == 0 else -10.0 * math.log10(mse)


def object_and_forward_scenes(root: Path, width: int) -> dict:
    """Two tiny built-in scenes in ``root``: ``orbit`` (Blender format, ``width`` square, one test view) and ``ff``
    (LLFF format, NDC, ``width`` x 3/4 of it, 8 views)."""
    orbit = write_blender(root / "orbit", seed=0, resolution=width, n_train=2, n_val=1, n_test=1, spp=1)
    ff = write_llff(root / "ff", seed=1, width=width, height=width * 3 // 4, n_views=8, spp=1)
    return {"orbit": load_scene("builtin", orbit), "ff": load_scene("llff", ff)}


def student_net(family: str = "r2l", box: torch.Tensor | None = None, grid: GridStudentConfig = TINY_GRID_NET,
                network: R2LNetConfig = TINY_NET) -> tuple[torch.nn.Module, dict]:
    """A freshly initialised student network of ``family`` (``r2l``: ``network``; ``grid``: ``grid`` over ``box``,
    the +-1.5 cube unless given) and its DistillConfig as a dict, as a student file holds it."""
    if family == "grid":
        box = 1.5 * torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]) if box is None else box
        return GridStudentNet(grid, box), dataclasses.asdict(DistillConfig(family="grid", grid=grid))
    return R2LNet(network), dataclasses.asdict(DistillConfig(network=network))


def save_student_file(path: Path, net, config: dict, scene, step: int = 7, kind: str = "finetuned",
                      metrics: dict | None = None) -> Path:
    """A student model file of ``kind`` (finetuned unless given) of ``net`` (its DistillConfig as a dict: ``config``)
    for ``scene``, with the keys r2l.stages.student writes (scene camera included; ``scene`` None: a file of r2l 0.1,
    no camera) and ``metrics`` (made-up ones unless given)."""
    from r2l.core.checkpoint import atomic_torch_save

    cam = scene.camera() if scene is not None else {"near": 2.0, "far": 6.0, "ndc": False, "ndc_near": 1.0}
    if metrics is None:
        metrics = {"val_psnr": 11.5, "train_seconds": 1.0, "device": "cpu", "device_name": "cpu"}
    atomic_torch_save({
        "weights": net.state_dict(), "config": config, "kind": kind, "near": cam["near"], "far": cam["far"],
        "ndc": cam["ndc"], "ndc_near": cam["ndc_near"],
        "scene": None if scene is None else {"name": scene.name, "format": scene.format, **cam},
        "step": step, "metrics": metrics,
    }, path)
    return path
