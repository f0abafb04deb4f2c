"""``r2l bench``: each stage's speed, as a fraction of a limit measured in the same run where one exists.

Everything is measured in the same run, because absolute times on shared machines drift (issue 12, §1):

1. The dense matmul peak: the best rate of square ``n x n`` matmuls (``2 n^3`` FLOPs each), fp32 on CPU;
   on CUDA fp32 (TF32 off), TF32 and bf16, measured first and again last; the better of the two is the limit
   every FLOP rate below is divided by (other work on a shared machine lowers one or the other).
2. Student training: :func:`r2l.stages.student.train_step` (the real step: fresh rays plus rays from a
   full :class:`~r2l.stages.student.HardPool`, forward, backward, Adam) on random rays already on the
   device, for the default network (config/config.yaml: depth 12, width 128) and the paper's (88 x 256),
   16 points and 10 frequencies each, and the default grid student (``"grid default"``:
   :class:`~r2l.models.gridstudent.GridStudentConfig` defaults over a +-1.5 box, the Adam groups of the loop, the
   depth loss on with random teacher depths in [2, 6] and opacities in [0, 1]). Drawing fresh rays from view
   stores, validation and checkpoints are not timed. FLOPs per ray are R2L's count (2 x multiply-adds of the
   linear layers, one forward; the grid student's: its colour MLP's closed form plus its feature lookups counted
   in closed form, :func:`~r2l.models.gridstudent.grid_student_lookup_flops`, which no matmul peak bounds);
   a training step counts 3 x that (forward + backward). Precision: fp32 on CPU; on CUDA bf16 autocast
   (``precision: bf16``) and TF32 (``precision: tf32``); fp32 everywhere (``precision: fp32``).
   The whole loop ("student loop"): :func:`~r2l.stages.student.train_student` itself for a few hundred steps on
   a view store of 4 grey 400 x 400 views (ray drawing, the hard pool filling then in use, loss reads,
   checkpoints; validation off), from its own ``train_seconds`` (on CPU the default network only).
3. Student rendering: :class:`~r2l.models.students.Student` ``render_rays`` (the inference path: chunks of
   32,768 rays already on the device, as evaluation builds them from the pose there; colours copied back once)
   on the rays of a 400 x 400 view, in ms per frame, for the same networks (the grid student's with random
   grids: its cost does not depend on their values). Where fewer rays are timed (CPU), an even spread over the
   frame is timed and scaled to it. The same through ``torch.compile`` (``compile="on"``,
   :func:`~r2l.models.students.compile_for_inference`; the default network on CPU, both on CUDA): the seconds of
   its first call (compiling a graph for each chunk size, then rendering) apart, then ms per frame.
4. Teachers, RANDOM WEIGHTS (nothing is trained here), at the sizes of the checkout's config files: the
   grid and NeRF teachers of ``config/config.yaml`` (the default run), the NeRF of ``config/paper.yaml``
   and the grid of ``config/lego_fast.yaml``. The grid is built at its final resolution (after every
   upsampling) with its occupancy grid all set (nothing pruned), as at the start of training; a trained
   grid skips the empty space it has pruned but shades the samples it sees, so its cost differs from
   this in either direction. A NeRF's cost does not depend on its weights.
   Training: :func:`r2l.stages.teacher.take_step` (the loop's step; the loss is not read) on the
   rays of a synthetic 400 x 400 Blender-like scene (4 views on the radius-4 sphere, lego's focal), in
   rays per second. Rendering: :class:`~r2l.models.teacher.Teacher` ``render_rays`` on the same 400 x 400
   frame as the student, in ms per frame, and the student's speed-up over each teacher at the same
   precision (the default student against the config.yaml teachers, the paper student against the
   paper.yaml and lego_fast.yaml ones). FLOPs: the NeRF's closed form (coarse + fine linear layers);
   the grid's cost is mostly feature-grid interpolation, which no matmul peak bounds, so it has none.
5. Pseudo-data: :func:`r2l.stages.pseudo_data.generate_pseudo_data` (random poses, the teacher's render,
   uint8 colours, the shard written to disk) with each random-weight grid teacher, in 400 x 400 views a
   second (smaller views timed on CPU, scaled by their pixel count), and the share of that time the teacher's
   own render of a frame accounts for (the limit of the stage is the teacher).
6. The pipeline (``pipeline_dir``): the wall and CPU seconds of every rule from Snakemake's benchmark files
   ``{dir}/{scene}/{rule}.tsv``, and each rule's share of the scene's total.
7. Photo shrinking: :func:`r2l.core.imageio.area_resize` of a random float32 RGB image at each size of
   ``RESIZES`` (sizes that no whole factor relates, so the area-weighted path), in ms a photo.

Each rate is the best over short timed segments after one untimed warm-up call. ``quick`` keeps the whole
run near a minute on two CPU cores; ``smoke`` runs every measurement once at toy sizes (to check that the
bench works: its numbers mean nothing). The load average before and after is recorded: on a shared machine
other work slows some measurements and not others, so compare runs made on a quiet machine. Nothing here
asserts a time.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import logging
import math
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from r2l.core.config import deep_merge
from r2l.core.imageio import area_resize
from r2l.core.runtime import pick_device
from r2l.data.scene import Scene
from r2l.geometry.poses import sample_blender_poses
from r2l.geometry.rays import get_rays
from r2l.models.contracted import RaySpace
from r2l.models.flops import nerf_closed_form_flops, student_closed_form_flops
from r2l.models.gridstudent import GridStudentConfig
from r2l.models.r2lnet import R2LNetConfig
from r2l.models.students import Student, family_of_config
from r2l.models.teacher import Teacher, TeacherConfig, build_model, teacher_config_from_dict
from r2l.stages import teacher as teacher_stage
from r2l.stages.pseudo_data import convert_real_data, generate_pseudo_data
from r2l.stages.student import DistillConfig, HardPool, train_step, train_student

NETWORKS = {
    "default 12x128": R2LNetConfig(n_points=16, n_freqs=10, depth=12, width=128),
    "paper 88x256": R2LNetConfig(n_points=16, n_freqs=10, depth=88, width=256),
}
# The grid student family's networks, timed beside NETWORKS (training step and render; not the whole loop, not
# compiled), over the NeRF-synthetic box of +-1.5 (r2l.models.gridstudent.scene_box without points).
GRID_NETWORKS = {"grid default": GridStudentConfig()}
GRID_BOX = 1.5 * torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
STUDENTS = {**NETWORKS, **GRID_NETWORKS}  # every student network whose training step and render are timed
GRID_FLOPS_NOTE = ("grid student: FLOPs = its colour MLP's closed form + its feature lookups counted in closed form "
                   "(grid_student_lookup_flops: 2 per corner value read; not bounded by the matmul peak)")
# The teachers timed: (kind, the config file merged over config/config.yaml, or None for config.yaml alone).
TEACHERS = (("grid", None), ("nerf", None), ("nerf", "paper.yaml"), ("grid", "lego_fast.yaml"))
STUDENT_OF = {None: "default 12x128", "paper.yaml": "paper 88x256", "lego_fast.yaml": "paper 88x256"}
CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"  # the checkout's config files
FRAME_SIDE = 400  # the paper's evaluation resolution
LEGO_FOCAL = 0.5 * FRAME_SIDE / math.tan(0.5 * 0.6911112070083618)  # NeRF-synthetic's camera at 400 x 400
# (height, width) -> (height, width) of the photo shrinks timed: LLFF photos at factor 8 and at half that size,
# and a NeRF-synthetic view at `resolution: 300`
RESIZES = (((756, 1008), (94, 126)), ((378, 504), (47, 63)), ((800, 800), (300, 300)))
TRAIN_METHOD = "r2l.stages.student.train_step (fresh + hard-pool rays, forward, backward, Adam; ray sampling untimed)"


@dataclass
class Settings:
    """How long and how large each measurement is (see :func:`settings_for`). Dicts of teacher sizes are keyed
    by config file (``None``: config.yaml); a teacher batch of ``None`` is the config's own."""

    device: torch.device
    mode: str  # "full", "quick" or "smoke"
    seconds: float  # time budget of each timed measurement
    segment: float  # length of one timed segment
    matmul_n: int  # side of the square matmuls of the peak
    batch_rays: dict[str, int]  # student: fresh rays per training step, by network name
    render_rays: int  # student: rays timed per render call (the whole 400 x 400 frame, or a spread of it)
    teacher_batch: dict[str | None, int | None]  # teacher: rays per training step
    teacher_render_rays: dict[str | None, int]  # teacher: rays timed per render call
    pseudo_side: int  # side of the pseudo views timed
    pseudo_views: int  # pseudo views timed
    pseudo_configs: tuple[str | None, ...] = (None, "lego_fast.yaml")  # the grid teachers pseudo-data is timed with
    loop_steps: int = 300  # steps of the whole student loop timed
    loop_networks: tuple[str, ...] = tuple(NETWORKS)  # the networks whose whole loop is timed
    compile_networks: tuple[str, ...] = tuple(NETWORKS)  # the networks whose render is timed through torch.compile


def settings_for(device: torch.device, mode: str = "full") -> Settings:
    """Sizes that fit the device: the paper's student batch (81,920 rays) and whole frames on CUDA; on CPU the
    default config's student batch (2,048), the teachers' own batches for config.yaml and smaller ones for the
    paper-scale teachers, an even spread of a frame's rays, pseudo-data with the default grid only (the
    lego_fast grid's 65,536-ray chunks are sized for a GPU) and the whole student loop of the default network
    only. ``mode``: full, quick (1 s a measurement) or smoke.
    """
    frame = FRAME_SIDE * FRAME_SIDE
    files = [None, "paper.yaml", "lego_fast.yaml"]
    if mode == "smoke":
        return Settings(device, mode, 0.0, 0.0, 64, {n: 32 for n in STUDENTS}, 64, dict.fromkeys(files, 16),
                        dict.fromkeys(files, 64), 8, 1, loop_steps=3, compile_networks=())
    quick = mode == "quick"
    seconds = 1.0 if quick else (3.0 if device.type == "cuda" else 5.0)
    if device.type == "cuda":
        return Settings(device, mode, seconds, 0.25, 8192, {n: 81_920 for n in STUDENTS}, frame,
                        dict.fromkeys(files), dict.fromkeys(files, frame), FRAME_SIDE, 10 if quick else 20,
                        loop_steps=150 if quick else 300)
    batch = {"default 12x128": 2048, "paper 88x256": 1024 if quick else 2048, "grid default": 2048}
    teacher_batch = {None: None, "paper.yaml": 64 if quick else 256, "lego_fast.yaml": 256 if quick else 1024}
    teacher_rays = {None: 4000, "paper.yaml": 400, "lego_fast.yaml": 2000}
    if not quick:
        teacher_rays = {k: 4 * v for k, v in teacher_rays.items()}
    return Settings(device, mode, seconds, 0.25, 1024 if quick else 2048, batch, frame // 20 if quick else frame,
                    teacher_batch, teacher_rays, 100 if quick else FRAME_SIDE, 2, (None,),
                    loop_steps=120 if quick else 300, loop_networks=("default 12x128",),
                    compile_networks=("default 12x128",))


def bench_resize(s: Settings) -> list[dict]:
    """ms per photo of :func:`~r2l.core.imageio.area_resize` for each shrink of ``RESIZES`` (best segment)."""
    rng, rows = np.random.default_rng(0), []
    for (h, w), (oh, ow) in RESIZES:
        img = rng.random((h, w, 3), dtype=np.float32)
        rate = best_rate(lambda: area_resize(img, oh, ow), torch.device("cpu"), s.seconds, s.segment)
        rows.append({"from": [h, w], "to": [oh, ow], "ms": 1000.0 / rate})
    return rows


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_rate(fn: Callable[[], object], device: torch.device, seconds: float, segment: float = 0.25) -> float:
    """Calls per second of ``fn``: the best of timed segments (each >= ``segment`` s) within ``seconds``.

    One untimed warm-up call first; at least one segment of at least one call is always timed.
    """
    fn()
    _sync(device)
    best, start = 0.0, time.perf_counter()
    while True:
        t0, calls = time.perf_counter(), 0
        while True:
            fn()
            _sync(device)
            calls += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= segment:
                break
        best = max(best, calls / max(elapsed, 1e-9))
        if time.perf_counter() - start >= seconds:
            return best


def matmul_peaks(s: Settings) -> dict[str, float]:
    """Best dense matmul FLOP/s by precision: ``{"fp32"}`` on CPU, ``{"fp32", "tf32", "bf16"}`` on CUDA."""
    n = s.matmul_n
    if s.device.type != "cuda":
        a, b = torch.randn(n, n), torch.randn(n, n)
        return {"fp32": 2.0 * n**3 * best_rate(lambda: a @ b, s.device, s.seconds, s.segment)}
    peaks, saved = {}, torch.backends.cuda.matmul.allow_tf32
    try:
        for name, dtype, tf32 in (("fp32", torch.float32, False), ("tf32", torch.float32, True),
                                  ("bf16", torch.bfloat16, False)):
            torch.backends.cuda.matmul.allow_tf32 = tf32
            a = torch.randn(n, n, device=s.device, dtype=dtype)
            b = torch.randn(n, n, device=s.device, dtype=dtype)
            peaks[name] = 2.0 * n**3 * best_rate(lambda a=a, b=b: a @ b, s.device, s.seconds, s.segment)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved
    return peaks


def precisions(device: torch.device) -> list[str]:
    """The precisions measured: bf16, TF32 and fp32 on CUDA; fp32 on CPU."""
    return ["bf16", "tf32", "fp32"] if device.type == "cuda" else ["fp32"]


# ----------------------------------------------------------------------------- the student


def _random_rays(n: int, device: torch.device, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``rays_o, rays_d``: (n, 3) each, from near (0, 0, 4) looking down -z (the values do not change the cost)."""
    rays_o = torch.randn(n, 3, generator=gen).to(device) * 0.1 + torch.tensor([0.0, 0.0, 4.0], device=device)
    rays_d = torch.randn(n, 3, generator=gen).to(device) * 0.1 - torch.tensor([0.0, 0.0, 1.0], device=device)
    return rays_o, rays_d


def _random_geo(n: int, device: torch.device, gen: torch.Generator) -> torch.Tensor:
    """(n, 2) random teacher geometry: an expected depth in [2, 6] and an opacity in [0, 1] per ray."""
    u = torch.rand(n, 2, generator=gen)
    return torch.stack([2.0 + 4.0 * u[:, 0], u[:, 1]], dim=-1).to(device)


def _full_pool(cfg: DistillConfig, device: torch.device, gen: torch.Generator) -> HardPool:
    """A hard-example pool already full of random rays (and teacher geometry), as after the first
    ``hard_mul / hard_ratio`` steps."""
    pool = HardPool(cfg.hard_mul * cfg.batch_rays, cfg.n_hard, device, seed=0)
    pool.rays_o[:], pool.rays_d[:] = _random_rays(pool.capacity, device, gen)
    pool.rgb[:] = torch.rand(pool.capacity, 3, generator=gen).to(device)
    pool.geo[:] = _random_geo(pool.capacity, device, gen)
    pool.size = pool.capacity
    return pool


def is_grid(net) -> bool:
    """Whether ``net`` is a grid student's config (else an R2L MLP's)."""
    return family_of_config(net).name == "grid"


def network_flops(net: R2LNetConfig | GridStudentConfig) -> float:
    """FLOPs per ray of one forward pass of a student network, its family's closed form (for a grid student its
    MLP's plus its feature lookups, :func:`~r2l.models.gridstudent.grid_student_closed_form_flops`)."""
    return family_of_config(net).closed_form_flops(net)


def build_student_net(net: R2LNetConfig | GridStudentConfig) -> torch.nn.Module:
    """A student network with random weights: the R2L MLP, or a grid student over :data:`GRID_BOX`."""
    return family_of_config(net).build(net, GRID_BOX, RaySpace())


def _flops_note(net) -> dict:
    """The row's ``flops_note`` for a grid student (how its FLOPs are counted); nothing for the R2L MLP."""
    return {"flops_note": GRID_FLOPS_NOTE} if is_grid(net) else {}


def bench_training(name: str, net: R2LNetConfig | GridStudentConfig, precision: str, s: Settings,
                   peaks: dict[str, float]) -> dict:
    """Rays per second and achieved FLOP/s of student training steps (see the module docstring); a grid student's
    steps add the depth loss on random teacher geometry (as on pseudo-data)."""
    device, gen = s.device, torch.Generator().manual_seed(0)
    grid = is_grid(net)
    net_cfg = {"family": "grid", "grid": net} if grid else {"network": net}
    cfg = DistillConfig(**net_cfg, batch_rays=s.batch_rays[name], precision=precision, device=str(device))
    torch.manual_seed(0)
    model = build_student_net(net).to(device)
    optimizer = torch.optim.Adam(model.param_groups(), lr=cfg.lr, betas=(0.9, 0.999), fused=device.type == "cuda")
    pool = _full_pool(cfg, device, gen)
    geo = (_random_geo(cfg.batch_rays, device, gen) if grid  # the teacher depth the grid's depth loss reads
           else torch.full((cfg.batch_rays, 2), float("nan"), device=device))  # the R2L MLP has no use for it
    batch = (*_random_rays(cfg.batch_rays, device, gen), torch.rand(cfg.batch_rays, 3, generator=gen).to(device), geo)
    jitter = torch.Generator(device=device).manual_seed(1)
    geom = {"near": 2.0, "far": 6.0}
    step = lambda: train_step(model, optimizer, batch, pool, geom, cfg, device, jitter, use_depth=grid)  # noqa: E731
    steps = best_rate(step, device, s.seconds, s.segment)
    rays = steps * (cfg.batch_rays + cfg.n_hard)
    flops = 3.0 * network_flops(net) * rays
    return {"network": name, "precision": precision, "rays_per_step": cfg.batch_rays + cfg.n_hard,
            "steps_per_s": steps, "rays_per_s": rays, "flops_per_s": flops,
            "fraction_of_peak": flops / peaks[precision], **_flops_note(net)}


def bench_student_loop(name: str, precision: str, s: Settings, store: Path, peaks: dict[str, float]) -> dict:
    """Rays per second of the whole student loop, :func:`~r2l.stages.student.train_student` for ``s.loop_steps``
    steps on a view store: fresh rays drawn from it, the hard pool filling (no pool rays in the first
    ``hard_mul / hard_ratio`` steps, counted as such) then in use, the loss read every 50 steps; its own
    ``train_seconds`` (validation excluded). Writes its model and checkpoint beside ``store``."""
    net, steps = NETWORKS[name], s.loop_steps
    cfg = DistillConfig(network=net, batch_rays=s.batch_rays[name], precision=precision, device=str(s.device),
                        steps=steps, val_every=0, val_views=1, ckpt_every=steps, log_every=50)
    work = store.parent / f"loop_{name.split()[0]}_{precision}"
    with _quiet():
        metrics = train_student([store], cfg, work / "student.pt", work / "resume", val_fn=lambda model: 0.0)
    fill = math.ceil(cfg.hard_mul * cfg.batch_rays / max(cfg.n_hard, 1))
    rays_per_s = (steps * cfg.batch_rays + max(0, steps - fill) * cfg.n_hard) / metrics["train_seconds"]
    flops = 3.0 * student_closed_form_flops(net) * rays_per_s
    return {"network": name, "precision": precision, "steps": steps, "rays_per_s": rays_per_s, "flops_per_s": flops,
            "fraction_of_peak": flops / peaks[precision]}


def run_student_loops(s: Settings, peaks: dict[str, float]) -> list[dict]:
    """:func:`bench_student_loop` for ``s.loop_networks`` at each precision, on a store of 4 grey 400 x 400 views."""
    with tempfile.TemporaryDirectory() as tmp, _quiet():
        store = Path(tmp) / "store"
        convert_real_data(bench_scene(FRAME_SIDE if s.mode != "smoke" else 16), store)
        return [bench_student_loop(name, p, s, store, peaks) for name in s.loop_networks
                for p in precisions(s.device)]


def frame_rays(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` rays spread evenly over a 400 x 400 frame (every k-th pixel; all of them for ``n >= 160,000``) from
    (0, 0, 4) looking down -z at lego's focal: ``rays_o, rays_d`` (n, 3) each, on the CPU."""
    pose = torch.eye(4)
    pose[2, 3] = 4.0
    rays_o, rays_d = get_rays(pose, FRAME_SIDE, FRAME_SIDE, LEGO_FOCAL)
    stride = max(1, rays_o.shape[0] // n)
    return rays_o[::stride][:n], rays_d[::stride][:n]


def _frame_rate(render: Callable, n_rays: int, s: Settings) -> dict:
    """Rays per second and ms per 400 x 400 frame of ``render(rays_o, rays_d)`` on ``n_rays`` rays of the frame
    (on ``s.device``)."""
    rays_o, rays_d = (x.to(s.device) for x in frame_rays(n_rays))  # built on the device, as evaluation does
    calls = best_rate(lambda: render(rays_o, rays_d), s.device, s.seconds, s.segment)
    rays = calls * rays_o.shape[0]
    return {"rays_timed": rays_o.shape[0], "rays_per_s": rays, "ms_per_frame": 1000.0 * FRAME_SIDE**2 / rays}


def bench_render(name: str, net: R2LNetConfig | GridStudentConfig, precision: str, s: Settings,
                 peaks: dict[str, float]) -> dict:
    """ms per 400 x 400 frame and achieved FLOP/s of the student's inference path at ``precision``."""
    torch.manual_seed(0)
    student = Student(build_student_net(net).to(s.device), 2.0, 6.0, meta={}, precision=precision)
    row = {"network": name, "precision": precision, **_frame_rate(student.render_rays, s.render_rays, s)}
    flops = network_flops(net) * row["rays_per_s"]
    return {**row, "flops_per_s": flops, "fraction_of_peak": flops / peaks[precision], **_flops_note(net)}


def bench_render_compiled(name: str, net: R2LNetConfig, precision: str, s: Settings,
                          peaks: dict[str, float]) -> dict:
    """:func:`bench_render` through ``torch.compile``: ``first_call_s`` (compiling for each chunk size of the
    timed rays, then one render; an eager render of them takes ``ms_per_frame`` scaled) and ``compiled`` (False
    when compiling failed and the eager network was timed; the log says why)."""
    torch.manual_seed(0)
    student = Student(build_student_net(net).to(s.device), 2.0, 6.0, meta={}, precision=precision, compile="on")
    rays_o, rays_d = (x.to(s.device) for x in frame_rays(s.render_rays))
    t0 = time.perf_counter()
    student.render_rays(rays_o, rays_d)
    _sync(s.device)
    first = time.perf_counter() - t0
    row = {"network": name, "precision": precision, "first_call_s": first, "compiled": student.net.compiled,
           **_frame_rate(student.render_rays, s.render_rays, s)}
    flops = student_closed_form_flops(net) * row["rays_per_s"]
    return {**row, "flops_per_s": flops, "fraction_of_peak": flops / peaks[precision]}


# ----------------------------------------------------------------------------- the teachers


def teacher_name(kind: str, config: str | None) -> str:
    """How tables name a teacher: its kind and the config file its sizes come from."""
    return f"{kind} {config or 'config.yaml'}"


def _read_teacher_section(config: str | None) -> dict:
    """The teacher section of config/config.yaml, with ``config`` (a file in config/) merged over it."""
    section = yaml.safe_load((CONFIG_DIR / "config.yaml").read_text())["teacher"]
    if config is not None:
        section = deep_merge(section, yaml.safe_load((CONFIG_DIR / config).read_text()).get("teacher", {}))
    return section


def teacher_config(kind: str, config: str | None, device: torch.device, precision: str,
                   scene: Scene | None = None) -> TeacherConfig:
    """A teacher of ``kind`` at the sizes of ``config`` (over config.yaml), resolved for ``scene`` as the teacher
    stage does (default: :func:`bench_scene`'s Blender format), with its grid at its final resolution."""
    section = {**_read_teacher_section(config), "kind": kind, "device": str(device), "precision": precision}
    with _quiet():
        cfg = teacher_stage.resolve_for_scene(teacher_config_from_dict(section), scene or bench_scene(4, 1))
    grid = dataclasses.replace(cfg.grid, resolution_init=cfg.grid.resolution, upsample_steps=[])
    return dataclasses.replace(cfg, grid=grid)


def bench_scene(side: int = FRAME_SIDE, n_views: int = 4) -> Scene:
    """A synthetic Blender-like scene for timing: ``n_views`` grey ``side x side`` views on the radius-4 sphere
    at lego's focal, near 2, far 6, white background (every view in the train split)."""
    poses, _ = sample_blender_poses(n_views, np.random.default_rng(0), radius=4.0, focal_scale=None)
    images = np.full((n_views, side, side, 3), 0.5, dtype=np.float32)
    return Scene(name="bench", format="blender", images=images, poses=poses.astype(np.float32), H=side, W=side,
                 focal=LEGO_FOCAL * side / FRAME_SIDE, near=2.0, far=6.0, splits={"train": np.arange(n_views)})


def _teacher_flops(cfg: TeacherConfig) -> float | None:
    """FLOPs per ray of a teacher's forward pass: the NeRF's closed form; None for the grid (see the module doc)."""
    return nerf_closed_form_flops(cfg.nerf) if cfg.kind == "nerf" else None


def _ratios(flops_per_ray: float | None, rays_per_s: float, factor: float, peak: float) -> dict:
    """``flops_per_s`` and ``fraction_of_peak`` (None where the FLOPs are not known)."""
    if flops_per_ray is None:
        return {"flops_per_s": None, "fraction_of_peak": None}
    flops = factor * flops_per_ray * rays_per_s
    return {"flops_per_s": flops, "fraction_of_peak": flops / peak}


def bench_teacher_training(kind: str, config: str | None, precision: str, s: Settings, scene: Scene,
                           peaks: dict[str, float]) -> dict:
    """Rays per second of the teacher's real training step (random weights; see the module docstring)."""
    device = s.device
    cfg = teacher_config(kind, config, device, precision, scene)
    cfg = dataclasses.replace(cfg, batch_rays=s.teacher_batch[config] or cfg.batch_rays)
    info = teacher_stage.scene_info(scene)
    torch.manual_seed(0)
    model = build_model(cfg, info).to(device)
    optimizer = teacher_stage.make_optimizer(model, cfg, device)
    rays = teacher_stage.TrainRays(scene, device)
    rngs = (torch.Generator().manual_seed(0), torch.Generator(device=device).manual_seed(1))
    step = cfg.precrop_steps  # past the centre crop
    def call():
        return teacher_stage.take_step(model, optimizer, cfg, info, rays, rngs, step, False, device)

    rate = cfg.batch_rays * best_rate(call, device, s.seconds, s.segment)
    return {"teacher": teacher_name(kind, config), "precision": precision, "rays_per_step": cfg.batch_rays,
            "rays_per_s": rate, **_ratios(_teacher_flops(cfg), rate, 3.0, peaks[precision])}


def random_teacher(kind: str, config: str | None, precision: str, device: torch.device, scene: Scene) -> Teacher:
    """A teacher with random weights as a ray renderer (eval mode) for ``scene``'s camera."""
    cfg = teacher_config(kind, config, device, precision, scene)
    info = teacher_stage.scene_info(scene)
    torch.manual_seed(0)
    model = build_model(cfg, info).to(device).eval()
    return Teacher(model, cfg, info, {"kind": kind}, device, precision)


def bench_teacher_render(kind: str, config: str | None, precision: str, s: Settings, scene: Scene,
                         peaks: dict[str, float]) -> dict:
    """ms per 400 x 400 frame of a random-weight teacher's inference path (``render_rays``) at ``precision``."""
    teacher = random_teacher(kind, config, precision, s.device, scene)
    row = {"teacher": teacher_name(kind, config), "precision": precision,
           **_frame_rate(teacher.render_rays, s.teacher_render_rays[config], s)}
    return {**row, **_ratios(_teacher_flops(teacher.cfg), row["rays_per_s"], 1.0, peaks[precision])}


def speedups(student_rows: list[dict], teacher_rows: list[dict]) -> list[dict]:
    """The student's speed-up over each teacher: the teacher's ms per frame / the student's, same precision,
    the student of the teacher's size (:data:`STUDENT_OF`)."""
    out = []
    for t in teacher_rows:
        config = t["teacher"].split(" ", 1)[1]
        student = STUDENT_OF[None if config == "config.yaml" else config]
        for st in student_rows:
            if st["network"] == student and st["precision"] == t["precision"]:
                out.append({"student": student, "teacher": t["teacher"], "precision": t["precision"],
                            "speedup": t["ms_per_frame"] / st["ms_per_frame"]})
    return out


def bench_pseudo_data(config: str | None, precision: str, s: Settings, scene: Scene,
                      render_ms: float | None) -> dict:
    """400 x 400 pseudo views per second of :func:`generate_pseudo_data` with a random-weight grid teacher.

    Views of ``s.pseudo_side`` pixels (at most ``scene``'s) are timed and scaled by their pixel count.
    ``render_ms``: the same teacher's ms per 400 x 400 frame measured in this run (for the rendering share).
    """
    side, n = min(s.pseudo_side, scene.W), s.pseudo_views
    teacher = random_teacher("grid", config, precision, s.device, scene)
    section = yaml.safe_load((CONFIG_DIR / (config or "config.yaml")).read_text()).get("pseudo_data", {})
    chunk = section.get("chunk")
    with tempfile.TemporaryDirectory() as tmp, _quiet():
        generate_pseudo_data(teacher, scene, Path(tmp) / "warm", n_views=1, H=side, W=side, chunk=chunk)
        _sync(s.device)
        t0 = time.perf_counter()
        generate_pseudo_data(teacher, scene, Path(tmp) / "store", n_views=n, H=side, W=side, views_per_shard=n,
                             chunk=chunk, seed=1)
        seconds = time.perf_counter() - t0
    views_per_s = n / seconds * (side / FRAME_SIDE) ** 2
    share = None if render_ms is None else render_ms / 1000.0 * views_per_s
    return {"teacher": teacher_name("grid", config), "precision": precision, "side_timed": side, "views_timed": n,
            "chunk": chunk, "views_per_s": views_per_s, "teacher_render_share": share}


@contextlib.contextmanager
def _quiet():
    """No progress bars (stderr) and no INFO lines from the ``r2l`` logger inside the block."""
    logger = logging.getLogger("r2l")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


# ----------------------------------------------------------------------------- the pipeline


def _number(value: str | None) -> float | None:
    """A benchmark file's field as a float (None for missing or "NA")."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def read_benchmark(path: Path) -> dict:
    """One Snakemake benchmark file: mean wall seconds (``s``), CPU seconds (``cpu_time``) and mean load
    over its rows (one per repeat)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))

    def mean(key: str) -> float | None:
        values = [v for v in (_number(r.get(key)) for r in rows) if v is not None]
        return statistics.fmean(values) if values else None

    return {"rule": path.stem, "seconds": mean("s"), "cpu_seconds": mean("cpu_time"), "mean_load": mean("mean_load")}


def pipeline_times(folder: str | Path) -> dict:
    """Every rule's time from ``folder/{scene}/{rule}.tsv``: ``{"dir", "scenes": {scene: {"rules": [...],
    "total_seconds", "student_share"}}}``; each rule's ``share`` is its part of the scene's summed wall time
    (the sum, not the run's wall time: rules of different scenes, or independent rules, may overlap)."""
    folder = Path(folder)
    scenes: dict[str, dict] = {}
    for path in sorted(folder.glob("*/*.tsv")):
        row = read_benchmark(path)
        if row["seconds"] is not None:
            scenes.setdefault(path.parent.name, {"rules": []})["rules"].append(row)
    for scene in scenes.values():
        total = sum(r["seconds"] for r in scene["rules"])
        for r in scene["rules"]:
            r["share"] = r["seconds"] / total if total > 0 else None
        student = sum(r["seconds"] for r in scene["rules"] if r["rule"] in ("train_student", "finetune"))
        scene.update(total_seconds=total, student_share=student / total if total > 0 else None)
    return {"dir": str(folder), "scenes": scenes}


# ----------------------------------------------------------------------------- the run


def cpu_model() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else the machine's architecture."""
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else (platform.processor() or platform.machine())


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's with its core count and the thread count torch uses."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    n = torch.get_num_threads()
    return f"{cpu_model()} CPU ({os.cpu_count()} cores), {n} thread{'' if n == 1 else 's'}"


def run_teachers(s: Settings, peaks: dict[str, float]) -> dict:
    """Teacher training and rendering, and pseudo-data with the grid teachers (empty lists without config/)."""
    if not (CONFIG_DIR / "config.yaml").is_file():
        return {"teacher_training": [], "teacher_render": [], "pseudo_data": [],
                "notes": [f"teachers not timed: their sizes come from the checkout's {CONFIG_DIR}, not found"]}
    scene = bench_scene(FRAME_SIDE if s.mode != "smoke" else 16)
    train, render, pseudo = [], [], []
    for kind, config in TEACHERS:
        for p in precisions(s.device):
            train.append(bench_teacher_training(kind, config, p, s, scene, peaks))
            render.append(bench_teacher_render(kind, config, p, s, scene, peaks))
            if kind == "grid" and config in s.pseudo_configs:
                pseudo.append(bench_pseudo_data(config, p, s, scene, render[-1]["ms_per_frame"]))
    return {"teacher_training": train, "teacher_render": render, "pseudo_data": pseudo, "notes": []}


def run_bench(device: str | None = None, quick: bool = False, threads: int | None = None, smoke: bool = False,
              pipeline_dir: str | Path | None = None) -> dict:
    """Run every measurement; returns JSON-ready results (see :func:`format_table` for the printed form)."""
    if threads is not None:
        torch.set_num_threads(threads)
    dev = pick_device(device)
    s = settings_for(dev, "smoke" if smoke else ("quick" if quick else "full"))
    load_before = os.getloadavg()[0]
    first = matmul_peaks(s)
    peaks = dict(first)  # raised below to the best of before and after: the others' fractions are set at the end
    ps = precisions(dev)
    train = [bench_training(name, net, p, s, peaks) for name, net in STUDENTS.items() for p in ps]
    render = [bench_render(name, net, p, s, peaks) for name, net in STUDENTS.items() for p in ps]
    compiled = [bench_render_compiled(name, NETWORKS[name], p, s, peaks) for name in s.compile_networks for p in ps]
    loops = run_student_loops(s, peaks)
    teachers = run_teachers(s, peaks)
    resize = bench_resize(s)
    last = matmul_peaks(s)
    peaks.update({p: max(first[p], last[p]) for p in first})
    for row in train + loops + render + compiled + teachers["teacher_training"] + teachers["teacher_render"]:
        if row["flops_per_s"] is not None:
            row["fraction_of_peak"] = row["flops_per_s"] / peaks[row["precision"]]
    return {
        "device": str(dev), "device_name": device_name(dev), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "mode": s.mode, "quick": s.mode == "quick",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "matmul_n": s.matmul_n, "peak_flops_per_s": peaks,
        "peak_flops_per_s_first_last": {"first": first, "last": last},
        "train_method": TRAIN_METHOD, "grid_flops_note": GRID_FLOPS_NOTE,
        "student_training": train, "student_loop": loops, "student_render": render,
        "student_render_compiled": compiled,
        "teacher_training": teachers["teacher_training"], "teacher_render": teachers["teacher_render"],
        "student_speedup": speedups(render, teachers["teacher_render"]), "pseudo_data": teachers["pseudo_data"],
        "pipeline": None if pipeline_dir is None else pipeline_times(pipeline_dir), "notes": teachers["notes"],
        "resize": resize,
        "load_average": {"before": load_before, "after": os.getloadavg()[0]},  # 1-minute load of the machine
    }


# ----------------------------------------------------------------------------- the table


def _g(flops: float | None) -> str:
    return f"{flops / 1e9:,.1f}" if flops is not None and math.isfinite(flops) else "n/a"


def _share(x: float | None) -> str:
    return f"{x:.0%}" if x is not None and math.isfinite(x) else "n/a"


def _row(what: str, name: str, r: dict) -> str:
    ms = f"{r['ms_per_frame']:,.1f}" if "ms_per_frame" in r else ""
    return (f"{what:<15} {name:<20} {r['precision']:<5} {r['rays_per_s']:>12,.0f} {ms:>11} "
            f"{_g(r['flops_per_s']):>9} {_share(r['fraction_of_peak']):>8}")


def _header(r: dict) -> list[str]:
    peaks = ", ".join(f"{p} {_g(v)} GFLOP/s" for p, v in r["peak_flops_per_s"].items())
    load = r["load_average"]
    mode = "" if r["mode"] == "full" else f", {r['mode']}"
    return [f"r2l bench on {r['device']} ({r['device_name']}), torch {r['torch']}{mode}, {r['date']}",
            f"matmul peak ({r['matmul_n']}x{r['matmul_n']}, best segment, better of first and last): {peaks}",
            f"student training step: {r['train_method']}; FLOPs = 3 x forward",
            *([f"{r['grid_flops_note']}"] if r.get("grid_flops_note") else []),
            "teachers: RANDOM weights (grid: final resolution, occupancy all set); FLOPs: NeRF closed form, grid n/a",
            f"machine load (1 min): {load['before']:.2f} before, {load['after']:.2f} after; threads {r['threads']}"]


def _speed_lines(r: dict) -> list[str]:
    lines = []
    if r.get("student_render_compiled"):
        lines += ["", "torch.compile of the student's render (compile='on'; first call: compiling + one render):"]
        lines += [f"  {x['network']} ({x['precision']}): first call {x['first_call_s']:,.1f} s"
                  + ("" if x["compiled"] else "; compiling FAILED, the eager network was timed")
                  for x in r["student_render_compiled"]]
    if r["student_speedup"]:
        lines += ["", "student speed-up over each teacher (ms per 400x400 frame, same precision):"]
        lines += [f"  {x['student']} over {x['teacher']} ({x['precision']}): {x['speedup']:,.1f}x"
                  for x in r["student_speedup"]]
    if r["pseudo_data"]:
        lines += ["", "pseudo-data (generate_pseudo_data, random-weight grid teacher, shards written):"]
        lines += [f"  {x['teacher']} ({x['precision']}): {x['views_per_s']:,.3g} views/s at 400x400 "
                  f"({x['views_timed']} view(s) of {x['side_timed']}x{x['side_timed']} timed, scaled by pixels); "
                  f"teacher render {_share(x['teacher_render_share'])} of it" for x in r["pseudo_data"]]
    if r.get("resize"):
        lines += ["", "photo shrink (area_resize, float32 RGB, area-weighted: no whole factor):"]
        lines += [f"  {x['from'][1]}x{x['from'][0]} -> {x['to'][1]}x{x['to'][0]}: {x['ms']:,.1f} ms"
                  for x in r["resize"]]
    return lines


def format_pipeline(p: dict) -> str:
    """The rules' times of :func:`pipeline_times` as plain text."""
    return "\n".join(_pipeline_lines(p)[1:])


def _pipeline_lines(p: dict | None) -> list[str]:
    if p is None:
        return []
    lines = ["", f"pipeline, from Snakemake's benchmark files in {p['dir']}:"]
    if not p["scenes"]:
        lines.append("  (no benchmark files found)")
    for scene, d in p["scenes"].items():
        lines.append(f"  {scene}: {d['total_seconds']:,.0f} s summed over rules; student + finetune "
                     f"{_share(d['student_share'])}")
        for rule in d["rules"]:
            cpu = "n/a" if rule["cpu_seconds"] is None else f"{rule['cpu_seconds']:,.1f}"
            lines.append(f"    {rule['rule']:<20} {rule['seconds']:>9,.1f} s wall {cpu:>9} s CPU "
                         f"{_share(rule['share']):>5}")
    return lines


def format_table(r: dict) -> str:
    """The results as a plain-text table (what ``r2l bench`` prints)."""
    lines = [*_header(r), "",
             f"{'what':<15} {'network':<20} {'prec':<5} {'rays/s':>12} {'ms/frame':>11} {'GFLOP/s':>9} {'of peak':>8}"]
    lines += [_row("student train", x["network"], x) for x in r["student_training"]]
    lines += [_row("student loop", x["network"], x) for x in r["student_loop"]]
    lines += [_row("student render", x["network"], x) for x in r["student_render"]]
    lines += [_row("compiled render", x["network"], x) for x in r.get("student_render_compiled", [])]
    lines += [_row("teacher train", x["teacher"], x) for x in r["teacher_training"]]
    lines += [_row("teacher render", x["teacher"], x) for x in r["teacher_render"]]
    timed = [x["rays_timed"] for x in r["student_render"] + r["teacher_render"] if x["rays_timed"] < FRAME_SIDE**2]
    if timed:
        lines.append(f"(render: {min(timed):,} to {max(timed):,} rays spread over the frame timed, ms/frame scaled "
                     f"to {FRAME_SIDE}x{FRAME_SIDE})")
    lines += _speed_lines(r) + _pipeline_lines(r["pipeline"]) + [f"note: {n}" for n in r["notes"]]
    return "\n".join(lines)
