"""Benchmark: the grid teacher against the NeRF teacher on one scene, in one run on one machine.

Both teachers train in stages (resuming their own checkpoints, so each is one continuous run); after each
stage the test PSNR is measured on every ``--eval-every``-th test view (training time excludes it).
The result is the time the grid needs to reach the NeRF's final PSNR, as a ratio of the NeRF's time.

    python bench/teachers.py --format blender --path ../shared/data/nerf_synthetic/lego_100 \\
        --resolution 100 --out bench/results/teachers_lego100.json

Settings come from config/config.yaml's teacher section (the laptop teachers), with --nerf-steps and
--grid-steps as the stage ends. Threads: --threads (default 1, so two runs can share a 2-core machine).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from r2l.core.atomic import atomic_write_json
from r2l.core.metrics import mean_psnr
from r2l.data.registry import load_scene
from r2l.models.teacher import load_teacher, teacher_config_from_dict
from r2l.stages.teacher import train_teacher

ROOT = Path(__file__).resolve().parents[1]


def score_test_views(model_path: Path, scene, every: int) -> float:
    """Mean per-image PSNR of a teacher file on every ``every``-th test view."""
    teacher = load_teacher(model_path, device="cpu")
    gts, poses = scene.split("test")
    preds = [teacher.render_rays(*scene.rays(p)).reshape(scene.H, scene.W, 3).numpy() for p in poses[::every]]
    return mean_psnr(preds, list(gts[::every]))


def run_kind(kind: str, stages: list[int], scene, base: dict, work: Path, every: int) -> list[dict]:
    """Train one teacher to each stage end in turn; return [{step, train_seconds, test_psnr}]."""
    curve = []
    for steps in stages:
        cfg = teacher_config_from_dict({**base, "kind": kind, "steps": steps, "val_every": 0,
                                        "ckpt_every": min(stages), "device": "cpu"})
        out = work / f"{kind}.pt"
        metrics = train_teacher(scene, cfg, out, work / f"resume_{kind}")
        curve.append({"step": steps, "train_seconds": metrics["train_seconds"],
                      "test_psnr": score_test_views(out, scene, every)})
        print(kind, curve[-1], flush=True)
    return curve


def time_to_reach(curve: list[dict], target: float) -> float | None:
    """Training seconds at the first stage whose test PSNR reaches ``target`` (None if never)."""
    return next((c["train_seconds"] for c in curve if c["test_psnr"] >= target), None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--format", default="blender")
    ap.add_argument("--path", required=True)
    ap.add_argument("--resolution", type=int, default=100)
    ap.add_argument("--nerf-steps", default="1000,2000,4000,6000")
    ap.add_argument("--grid-steps", default="250,500,1000,1500,3000")
    ap.add_argument("--eval-every", type=int, default=8, help="score every n-th test view")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", default="bench/work")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    scene = load_scene(args.format, args.path, resolution=args.resolution)
    base = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["teacher"]
    work = Path(args.work)
    curves = {kind: run_kind(kind, [int(s) for s in steps.split(",")], scene, base, work / kind, args.eval_every)
              for kind, steps in (("nerf", args.nerf_steps), ("grid", args.grid_steps))}
    nerf_final = curves["nerf"][-1]
    grid_time = time_to_reach(curves["grid"], nerf_final["test_psnr"])
    result = {"scene": args.path, "resolution": args.resolution, "threads": args.threads,
              "device": "cpu", "torch": torch.__version__, "test_views_scored": int(np.ceil(len(scene.splits["test"]) / args.eval_every)),
              "curves": curves, "nerf_final_psnr": nerf_final["test_psnr"], "nerf_seconds": nerf_final["train_seconds"],
              "grid_seconds_to_reach_nerf": grid_time,
              "time_ratio": None if grid_time is None else grid_time / nerf_final["train_seconds"],
              "date": time.strftime("%Y-%m-%d %H:%M")}
    atomic_write_json(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "curves"}, indent=1))


if __name__ == "__main__":
    main()
