"""``r2l bench``: the student's training and rendering speed as a fraction of the device's matmul peak.

Everything is measured in the same run, because absolute times on shared machines drift (issue 12, §1):

1. The dense matmul peak: the best rate of square ``n x n`` matmuls (``2 n^3`` FLOPs each), fp32 on CPU;
   on CUDA fp32 (TF32 off), TF32 and bf16.
2. Student training: :func:`r2l.stages.student.train_step` (the real step: fresh rays plus rays from a
   full :class:`~r2l.stages.student.HardPool`, forward, backward, Adam) on random rays already on the
   device, for the default network (config/config.yaml: depth 12, width 128) and the paper's (88 x 256),
   16 points and 10 frequencies each. Drawing fresh rays from view stores, validation and checkpoints are
   not timed. FLOPs per ray are R2L's count (2 x multiply-adds of the linear layers, one forward);
   a training step counts 3 x that (forward + backward). Precision: fp32 on CPU; on CUDA bf16 autocast
   (the config's ``amp: true``) and TF32 (``amp: false``; the pipeline turns TF32 on).
3. Student rendering: :class:`~r2l.models.r2lnet.Student` ``render_rays`` (the inference path: chunks of
   32,768 rays, float32, rays copied to the device and colours back) on the rays of a 400 x 400 view, in
   ms per frame. ``--quick`` on CPU times a twentieth of the frame and scales to the whole frame.

Each rate is the best over short timed segments after one untimed warm-up call; ``--quick`` keeps the whole
run under a minute on two CPU cores. The load average before and after is recorded: on a shared machine other
work slows some measurements and not others, so compare runs made on a quiet machine. Nothing here asserts a time.
"""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from r2l.core.runtime import pick_device, setup_fast_math
from r2l.geometry.rays import get_rays
from r2l.models.flops import student_closed_form_flops
from r2l.models.r2lnet import R2LNet, R2LNetConfig, Student
from r2l.stages.student import DistillConfig, HardPool, train_step

NETWORKS = {
    "default 12x128": R2LNetConfig(n_points=16, n_freqs=10, depth=12, width=128),
    "paper 88x256": R2LNetConfig(n_points=16, n_freqs=10, depth=88, width=256),
}
FRAME_SIDE = 400  # the paper's evaluation resolution
TRAIN_METHOD = "r2l.stages.student.train_step (fresh + hard-pool rays, forward, backward, Adam; ray sampling untimed)"


@dataclass
class Settings:
    """How long and how large each measurement is (see :func:`settings_for`)."""

    device: torch.device
    quick: bool
    seconds: float  # time budget of each timed measurement
    matmul_n: int  # side of the square matmuls of the peak
    batch_rays: dict[str, int]  # fresh rays per training step, by network name
    render_rays: int  # rays timed per render call (the whole 400 x 400 frame, or a tenth of it)


def settings_for(device: torch.device, quick: bool) -> Settings:
    """Sizes that fit the device: the paper's batch (81,920 rays) on CUDA, the default config's (2,048) on CPU.

    ``quick`` on CPU: 1 s per measurement, 1,024-ray steps for the paper network, a twentieth of the frame.
    """
    frame = FRAME_SIDE * FRAME_SIDE
    if device.type == "cuda":
        return Settings(device, quick, 1.0 if quick else 3.0, 8192, {name: 81_920 for name in NETWORKS}, frame)
    batch = {"default 12x128": 2048, "paper 88x256": 1024 if quick else 2048}
    return Settings(device, quick, 1.0 if quick else 5.0, 1024 if quick else 2048, batch,
                    frame // 20 if quick else frame)


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
        best = max(best, calls / elapsed)
        if time.perf_counter() - start >= seconds:
            return best


def matmul_peaks(s: Settings) -> dict[str, float]:
    """Best dense matmul FLOP/s by precision: ``{"fp32"}`` on CPU, ``{"fp32", "tf32", "bf16"}`` on CUDA."""
    n = s.matmul_n
    if s.device.type != "cuda":
        a, b = torch.randn(n, n), torch.randn(n, n)
        return {"fp32": 2.0 * n**3 * best_rate(lambda: a @ b, s.device, s.seconds)}
    peaks, saved = {}, torch.backends.cuda.matmul.allow_tf32
    try:
        for name, dtype, tf32 in (("fp32", torch.float32, False), ("tf32", torch.float32, True),
                                  ("bf16", torch.bfloat16, False)):
            torch.backends.cuda.matmul.allow_tf32 = tf32
            a = torch.randn(n, n, device=s.device, dtype=dtype)
            b = torch.randn(n, n, device=s.device, dtype=dtype)
            peaks[name] = 2.0 * n**3 * best_rate(lambda a=a, b=b: a @ b, s.device, s.seconds)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved
    return peaks


def precisions(device: torch.device) -> list[str]:
    """The training precisions measured: the pipeline's own (bf16 autocast and TF32) on CUDA, fp32 on CPU."""
    return ["bf16", "tf32"] if device.type == "cuda" else ["fp32"]


def _random_rays(n: int, device: torch.device, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``rays_o, rays_d``: (n, 3) each, from near (0, 0, 4) looking down -z (the values do not change the cost)."""
    rays_o = torch.randn(n, 3, generator=gen).to(device) * 0.1 + torch.tensor([0.0, 0.0, 4.0], device=device)
    rays_d = torch.randn(n, 3, generator=gen).to(device) * 0.1 - torch.tensor([0.0, 0.0, 1.0], device=device)
    return rays_o, rays_d


def _full_pool(cfg: DistillConfig, device: torch.device, gen: torch.Generator) -> HardPool:
    """A hard-example pool already full of random rays, as after the first ``hard_mul / hard_ratio`` steps."""
    pool = HardPool(cfg.hard_mul * cfg.batch_rays, cfg.n_hard, device, seed=0)
    pool.rays_o[:], pool.rays_d[:] = _random_rays(pool.capacity, device, gen)
    pool.rgb[:] = torch.rand(pool.capacity, 3, generator=gen).to(device)
    pool.size = pool.capacity
    return pool


def bench_training(name: str, net: R2LNetConfig, precision: str, s: Settings, peaks: dict[str, float]) -> dict:
    """Rays per second and achieved FLOP/s of student training steps (see the module docstring)."""
    device, gen = s.device, torch.Generator().manual_seed(0)
    cfg = DistillConfig(network=net, batch_rays=s.batch_rays[name], amp=precision == "bf16", device=str(device))
    torch.manual_seed(0)
    model = R2LNet(net).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999), fused=device.type == "cuda")
    pool = _full_pool(cfg, device, gen)
    batch = (*_random_rays(cfg.batch_rays, device, gen), torch.rand(cfg.batch_rays, 3, generator=gen).to(device))
    jitter = torch.Generator(device=device).manual_seed(1)
    geom = {"near": 2.0, "far": 6.0}
    steps = best_rate(lambda: train_step(model, optimizer, batch, pool, geom, cfg, device, jitter), device, s.seconds)
    rays = steps * (cfg.batch_rays + cfg.n_hard)
    flops = 3.0 * student_closed_form_flops(net) * rays
    return {"network": name, "precision": precision, "rays_per_step": cfg.batch_rays + cfg.n_hard,
            "steps_per_s": steps, "rays_per_s": rays, "flops_per_s": flops,
            "fraction_of_peak": flops / peaks[precision]}


def bench_render(name: str, net: R2LNetConfig, s: Settings, peaks: dict[str, float]) -> dict:
    """ms per 400 x 400 frame and achieved FLOP/s of the student's inference path (float32; TF32 on CUDA)."""
    torch.manual_seed(0)
    student = Student(R2LNet(net).to(s.device), 2.0, 6.0, meta={})
    pose = torch.eye(4)
    pose[2, 3] = 4.0
    rays_o, rays_d = get_rays(pose, FRAME_SIDE, FRAME_SIDE, 1.2 * FRAME_SIDE)
    rays_o, rays_d = rays_o[: s.render_rays], rays_d[: s.render_rays]
    calls = best_rate(lambda: student.render_rays(rays_o, rays_d), s.device, s.seconds)
    rays = calls * s.render_rays
    flops = student_closed_form_flops(net) * rays
    precision = "tf32" if s.device.type == "cuda" else "fp32"
    return {"network": name, "precision": precision, "rays_timed": s.render_rays, "rays_per_s": rays,
            "ms_per_frame": 1000.0 * FRAME_SIDE * FRAME_SIDE / rays, "flops_per_s": flops,
            "fraction_of_peak": flops / peaks[precision]}


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's (with the thread count torch uses)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    n = torch.get_num_threads()
    return f"{platform.processor() or platform.machine()} CPU, {n} thread{'' if n == 1 else 's'}"


def run_bench(device: str | None = None, quick: bool = False, threads: int | None = None) -> dict:
    """Run every measurement; returns JSON-ready results (see :func:`format_table` for the printed form)."""
    if threads is not None:
        torch.set_num_threads(threads)
    dev = pick_device(device)
    setup_fast_math(dev)  # as the pipeline: TF32 matmuls on CUDA
    s = settings_for(dev, quick)
    load_before = os.getloadavg()[0]
    peaks = matmul_peaks(s)
    train = [bench_training(name, net, p, s, peaks) for name, net in NETWORKS.items() for p in precisions(dev)]
    render = [bench_render(name, net, s, peaks) for name, net in NETWORKS.items()]
    return {
        "device": str(dev), "device_name": device_name(dev), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "quick": quick, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "matmul_n": s.matmul_n, "peak_flops_per_s": peaks, "train_method": TRAIN_METHOD,
        "student_training": train, "student_render": render,
        "load_average": {"before": load_before, "after": os.getloadavg()[0]},  # 1-minute load of the machine
    }


def _g(flops: float) -> str:
    return f"{flops / 1e9:,.1f}" if math.isfinite(flops) else "n/a"


def format_table(r: dict) -> str:
    """The results as a plain-text table (what ``r2l bench`` prints)."""
    peaks = ", ".join(f"{p} {_g(v)} GFLOP/s" for p, v in r["peak_flops_per_s"].items())
    load = r["load_average"]
    machine = f"machine load (1 min): {load['before']:.2f} before, {load['after']:.2f} after; threads {r['threads']}"
    lines = [f"r2l bench on {r['device']} ({r['device_name']}), torch {r['torch']}{', quick' if r['quick'] else ''}",
             f"matmul peak ({r['matmul_n']}x{r['matmul_n']}, best segment): {peaks}",
             f"training step: {r['train_method']}; FLOPs = 3 x forward",
             machine,
             "",
             f"{'what':<16} {'network':<15} {'prec':<5} {'rays/s':>12} {'ms/frame':>9} {'GFLOP/s':>9} {'of peak':>8}"]
    for row in r["student_training"]:
        lines.append(f"{'student train':<16} {row['network']:<15} {row['precision']:<5} {row['rays_per_s']:>12,.0f} "
                     f"{'':>9} {_g(row['flops_per_s']):>9} {row['fraction_of_peak']:>8.0%}")
    for row in r["student_render"]:
        lines.append(f"{'student render':<16} {row['network']:<15} {row['precision']:<5} {row['rays_per_s']:>12,.0f} "
                     f"{row['ms_per_frame']:>9,.1f} {_g(row['flops_per_s']):>9} {row['fraction_of_peak']:>8.0%}")
    if r["student_render"] and r["student_render"][0]["rays_timed"] < FRAME_SIDE * FRAME_SIDE:
        lines.append(f"(render: {r['student_render'][0]['rays_timed']:,} rays timed, ms/frame scaled to "
                     f"{FRAME_SIDE}x{FRAME_SIDE})")
    return "\n".join(lines)
