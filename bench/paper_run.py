"""A bounded paper-preset run on one Blender scene: teacher, pseudo-data and student, each for a fixed number of
steps (and at most a given number of seconds), printing test PSNR against wall time for each stage (issue 12, §4).

    python bench/paper_run.py --data runs/lego_400 --out runs/paper_run            # lego 400x400, on CUDA
    python bench/paper_run.py --tiny --device cpu --out /tmp/paper_run              # every step, toy sizes

Settings are the checkout's: config/config.yaml with config/paper.yaml over it (the NeRF teacher; ``--teacher
grid`` takes the grid teacher of config/lego_fast.yaml instead), then the counts given here. The stages call
r2l's own functions (:func:`~r2l.stages.teacher.train_teacher`, :func:`~r2l.stages.pseudo_data.generate_pseudo_data`,
:func:`~r2l.stages.student.train_student`), not Snakemake. What is timed, per stage:

- teacher: trained in ``--teacher-evals`` segments (each resumes the last one's checkpoint and writes the
  teacher file); after each, the test PSNR of the teacher file.
- pseudo-data: views rendered in shards of ``--shard`` views (a resumed store keeps the earlier ones); views/s.
- student: distilled from those views, the test PSNR measured every ``steps / --student-evals`` steps through
  the loop's validation hook (the loop's own validation on the real val views is replaced by it).

``seconds`` is the stage's wall time so far (loading its data and writing its files included), the test-PSNR
evaluations left out. A stage stops after the segment that passes its ``--stage-seconds`` budget. Test PSNR is the
mean per-image PSNR of ``--test-views`` test views spread over the split, rendered in float32. ``--tiny``
writes r2l's built-in scene at 16x16 and runs a few steps of every stage with toy networks (:data:`TINY`: a
check that everything runs; the PSNRs mean nothing). The check of the teacher against a mean-colour image is off
(short runs). Everything is written under ``--work`` (models, stores; an earlier run's are deleted first: see
:data:`OWN`) and ``--out`` (``paper_run.json``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # r2l from this checkout, installed or not

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from r2l.core.config import deep_merge  # noqa: E402
from r2l.core.metrics import mean_psnr  # noqa: E402
from r2l.core.runtime import chunked, pick_device  # noqa: E402
from r2l.data.registry import load_scene  # noqa: E402
from r2l.models.teacher import load_teacher, teacher_config_from_dict  # noqa: E402
from r2l.stages.pseudo_data import generate_pseudo_data  # noqa: E402
from r2l.stages.student import distill_config_from_dict, train_student  # noqa: E402
from r2l.stages.teacher import train_teacher  # noqa: E402

PRESET = {"nerf": "paper.yaml", "grid": "lego_fast.yaml"}
TINY = {  # --tiny: toy networks and sizes over the preset, so every step runs in seconds on a CPU
    "teacher": {"val_views": 1, "chunk": 4096, "precrop_steps": 0,
                "nerf": {"depth": 2, "width": 32, "skip": 0, "head_width": 16, "n_coarse": 8, "n_fine": 8},
                "grid": {"resolution": 16, "resolution_init": 16, "upsample_steps": [], "density_components": 4,
                         "app_components": 8, "app_dim": 8, "mlp_width": 16, "n_samples": 16,
                         "occupancy_resolution": 8}},
    "student": {"network": {"depth": 4, "width": 16, "n_freqs": 4}, "chunk": 4096},
}


OWN = ("teacher.pt", "resume_teacher", "pseudo", "student.pt", "resume_student")  # what a run writes in --work


class OutOfTime(Exception):
    """Raised from the student's validation hook when the stage has used its seconds."""


def preset(teacher: str) -> dict:
    """config/config.yaml with the preset of ``teacher`` merged over it (paper.yaml for nerf; the paper's student
    and pseudo-data in both, with lego_fast.yaml's grid teacher for grid)."""
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    config = deep_merge(config, yaml.safe_load((ROOT / "config" / "paper.yaml").read_text()))
    if teacher == "grid":
        grid = yaml.safe_load((ROOT / "config" / PRESET["grid"]).read_text())["teacher"]
        config["teacher"] = deep_merge(config["teacher"], grid)
    return config


def spread_test_views(scene, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` test images ``(n, H, W, 3)`` and poses ``(n, 4, 4)`` evenly spread over the test split."""
    images, poses = scene.split("test")
    idx = np.unique(np.linspace(0, len(poses) - 1, min(n, len(poses))).round().astype(int))
    return images[idx], poses[idx]


def psnr_of(render_view, scene, n: int) -> float:
    """Mean per-image test PSNR of ``render_view(pose) -> (H, W, 3)`` on ``n`` test views."""
    gts, poses = spread_test_views(scene, n)
    return mean_psnr([render_view(p).numpy() for p in poses], list(gts))


class Clock:
    """A stage's wall clock with the evaluations left out, and its PSNR-against-time points."""

    def __init__(self, stage: str, budget: float):
        self.stage, self.budget, self.start, self.paused, self.points = stage, budget, time.perf_counter(), 0.0, []

    def seconds(self) -> float:
        return time.perf_counter() - self.start - self.paused

    def record(self, step: int, evaluate) -> dict:
        """Time the stage so far, then run ``evaluate() -> PSNR`` off the clock; print and keep the point."""
        seconds, t0 = self.seconds(), time.perf_counter()
        psnr = float(evaluate())
        self.paused += time.perf_counter() - t0
        point = {"stage": self.stage, "step": step, "seconds": seconds, "test_psnr": psnr}
        self.points.append(point)
        print(f"{self.stage:<8} step {step:>7,}  {seconds:8.1f} s  test PSNR {psnr:6.2f} dB", flush=True)
        return point

    def out_of_time(self) -> bool:
        return self.seconds() >= self.budget


def run_teacher(scene, config: dict, args, work: Path) -> tuple[Path, list[dict]]:
    """Train the teacher in segments, scoring the teacher file after each; returns its path and the points."""
    clock, path = Clock("teacher", args.stage_seconds), work / "teacher.pt"
    seg = max(1, args.teacher_steps // args.teacher_evals)
    over = {"val_every": 0, "ckpt_every": seg, "device": args.device, "check_learned": False}
    if args.precision:
        over["precision"] = args.precision
    if args.teacher_batch:
        over["batch_rays"] = args.teacher_batch
    for end in range(seg, args.teacher_steps + 1, seg):
        cfg = teacher_config_from_dict({**config["teacher"], **over, "steps": end})
        train_teacher(scene, cfg, path, work / "resume_teacher")
        teacher = load_teacher(path, device=args.device, precision="fp32")
        clock.record(end, lambda t=teacher: psnr_of(lambda p: t.render_image(scene, p, scene.H, scene.W, scene.focal),
                                                    scene, args.test_views))
        if clock.out_of_time():
            break
    return path, clock.points


def run_pseudo(scene, teacher_path: Path, config: dict, args, work: Path) -> dict:
    """Render pseudo views shard by shard until ``--pseudo-views`` or the budget; returns the stage's numbers."""
    section = config["pseudo_data"]
    teacher = load_teacher(teacher_path, device=args.device, precision=args.precision or section.get("precision"))
    start, n = time.perf_counter(), 0
    while n < args.pseudo_views and time.perf_counter() - start < args.stage_seconds:
        n = min(n + args.shard, args.pseudo_views)
        generate_pseudo_data(teacher, scene, work / "pseudo", n_views=n, views_per_shard=args.shard,
                             focal_scale=section["focal_scale"], chunk=section["chunk"], teacher_path=teacher_path)
    seconds = time.perf_counter() - start
    result = {"stage": "pseudo", "views": n, "H": scene.H, "W": scene.W, "seconds": seconds, "views_per_s": n / seconds}
    print(f"pseudo   {n:>7,} views of {scene.W}x{scene.H} in {seconds:.1f} s: {n / seconds:.2f} views/s", flush=True)
    return result


def student_psnr(model, scene, near: float, far: float, n: int, chunk: int) -> float:
    """Test PSNR of a student network (eval, no grad, float32) on ``n`` test views."""

    def render(pose) -> torch.Tensor:
        rays_o, rays_d = scene.rays(pose)
        device = next(model.parameters()).device
        fn = lambda o, d: model(o.to(device), d.to(device), near, far, train=False).float().cpu()  # noqa: E731
        with torch.no_grad():
            return chunked(fn, rays_o, rays_d, chunk).clamp(0, 1).reshape(scene.H, scene.W, 3)

    return psnr_of(render, scene, n)


def run_student(scene, config: dict, args, work: Path) -> list[dict]:
    """Distil the pseudo views for ``--student-steps`` (or the budget), scoring the student on the test views."""
    clock, seg = Clock("student", args.stage_seconds), max(1, args.student_steps // args.student_evals)
    steps = seg * args.student_evals
    section = {**config["student"], "steps": steps, "val_every": seg, "ckpt_every": steps, "device": args.device}
    if args.precision:
        section["precision"] = args.precision
    if args.student_batch:
        section["batch_rays"] = args.student_batch
    cfg = distill_config_from_dict(section)

    def val_fn(model) -> float:
        was_training, step = model.training, len(clock.points) * seg
        point = clock.record(step, lambda: student_psnr(model, scene, scene.near, scene.far, args.test_views,
                                                        cfg.chunk))
        model.train(was_training)
        if clock.out_of_time() and step < steps:
            raise OutOfTime
        return point["test_psnr"]

    try:
        train_student([work / "pseudo"], cfg, work / "student.pt", work / "resume_student", val_fn=val_fn)
    except OutOfTime:
        print(f"student  stopped after {clock.points[-1]['step']:,} steps: --stage-seconds {args.stage_seconds:g} "
              "used", flush=True)
    return clock.points


def tiny_scene(work: Path):
    """r2l's built-in scene at 16x16 (8 train, 2 val, 2 test views), written into ``work``."""
    from r2l.data.builtin import write_blender

    path = work / "builtin16"
    if not path.is_dir():
        write_blender(path, seed=0, resolution=16, n_train=8, n_val=2, n_test=2)
    return load_scene("blender", path)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, help="a Blender scene folder (lego); not needed with --tiny")
    ap.add_argument("--resolution", type=int, default=400)
    ap.add_argument("--teacher", choices=sorted(PRESET), default="nerf")
    ap.add_argument("--teacher-steps", type=int, default=2000)
    ap.add_argument("--teacher-evals", type=int, default=4, help="teacher segments, each scored")
    ap.add_argument("--teacher-batch", type=int, help="rays per teacher step (default the preset's)")
    ap.add_argument("--pseudo-views", type=int, default=100)
    ap.add_argument("--shard", type=int, default=25, help="pseudo views per shard (the budget is checked per shard)")
    ap.add_argument("--student-steps", type=int, default=2000)
    ap.add_argument("--student-evals", type=int, default=4)
    ap.add_argument("--student-batch", type=int, help="fresh rays per student step (default the preset's 81,920)")
    ap.add_argument("--test-views", type=int, default=4)
    ap.add_argument("--stage-seconds", type=float, default=90.0, help="a stage stops after the segment past this")
    ap.add_argument("--precision", help="fp32, tf32 or bf16 for every stage (default each section's own)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--tiny", action="store_true", help="built-in 16x16 scene, a few steps of everything")
    ap.add_argument("--work", type=Path, default=Path("/tmp/r2l_paper_run"))
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    if args.tiny:
        args = argparse.Namespace(**{**vars(args), "teacher_steps": 4, "teacher_evals": 2, "teacher_batch": 64,
                                     "pseudo_views": 2, "shard": 1, "student_steps": 4, "student_evals": 2,
                                     "student_batch": 64, "test_views": 2})
    elif args.data is None:
        ap.error("--data is needed (or --tiny)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    args.device = str(pick_device(args.device))
    args.work.mkdir(parents=True, exist_ok=True)
    for name in OWN:  # a fresh run: an earlier run's checkpoints would be resumed and its views kept
        path = args.work / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    config = deep_merge(preset(args.teacher), TINY) if args.tiny else preset(args.teacher)
    scene = tiny_scene(args.work) if args.tiny else load_scene(
        "blender", args.data, name=args.data.name, resolution=args.resolution,
        resize_order=config["scene_defaults"].get("resize_order", "premultiplied"))
    print(f"paper-preset run ({args.teacher} teacher) on {scene.name} {scene.W}x{scene.H}, {args.device}"
          f"{', tiny' if args.tiny else ''}", flush=True)
    t0 = time.perf_counter()
    result = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "scene": {"name": scene.name, "H": scene.H, "W": scene.W}, "device": args.device,
              "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"}
    teacher_path, result["teacher"] = run_teacher(scene, config, args, args.work)
    save(result, args.out, t0)  # after each stage, so a run killed later keeps what it measured
    result["pseudo"] = run_pseudo(scene, teacher_path, config, args, args.work)
    save(result, args.out, t0)
    result["student"] = run_student(scene, config, args, args.work)
    save(result, args.out, t0)
    print(f"total {result['total_seconds']:.1f} s; wrote {args.out / 'paper_run.json'}", flush=True)
    return 0


def save(result: dict, out: Path, t0: float) -> None:
    """Write ``out/paper_run.json`` with the seconds since ``t0`` as ``total_seconds``."""
    result["total_seconds"] = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    (out / "paper_run.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
