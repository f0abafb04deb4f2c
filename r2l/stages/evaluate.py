"""Evaluate a ray renderer (teacher, student or finetuned student) on a scene's held-out views.

:func:`evaluate_model` renders every view of a split at the evaluation resolution and returns one
``metrics.csv`` row (the columns of :data:`r2l.report.tables.COLUMNS`):

- ``family``: the student family of a student or finetuned renderer (``meta["family"]``: ``r2l`` or ``grid``;
  None when its meta has none), None for the teacher.
- ``psnr``: mean of per-image PSNRs; ``ssim``: mean SSIM; ``lpips``: mean LPIPS (AlexNet) or None when
  it cannot run offline (see :mod:`r2l.core.metrics`). Scores use the float renders, not the 8-bit PNGs.
- ``mflops_per_ray``: traced on real rays of the first view (see :mod:`r2l.models.flops`; a grid teacher's
  count covers only its MLPs, logged as a note).
- ``ms_per_frame``: median wall time of ``renderer.render_rays`` on the full frame's rays (built from the
  pose on the renderer's device beforehand, :func:`r2l.models.render.pose_rays`; the copy of the colours back
  to the host included, as it is part of the renderer's contract) over ``n_speed_frames`` frames after
  ``warmup`` frames, synchronised on CUDA; ``fps = 1000 / ms``. Every view scored is rendered from rays
  built on the device the same way (no host-built rays copied).
- ``params``: parameters of ``renderer.model``; ``size_mb``: bytes of its weights (every state-dict
  tensor, as stored) / 1e6 -- the paper's "model size" (5,917,187 float32 parameters = 23.7 MB). Not
  the file size: a distilled student's file also carries its Adam state so that finetuning can go
  on (about 3x); the file size is logged when ``model_path`` is given.
- ``train_minutes``: the stage's own training time, ``meta["metrics"]["train_seconds"]`` when the
  renderer has it (a finetuned student's ``meta["train_seconds"]`` includes its pseudo-data stage),
  else ``meta["train_seconds"]``, / 60. ``device``: GPU name, or the CPU model and thread count.
- ``precision``: the arithmetic ``ms_per_frame`` was timed at, the model's own (``renderer.precision``: its
  training precision). Quality columns always come from float32 renders.

Renders go to ``renders_dir/{i:03d}.png`` (i = position in the split) with ``per_view.csv`` beside them.
"""

from __future__ import annotations

import gc
import logging
import math
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from r2l.core.atomic import atomic_write_text
from r2l.core.errors import R2LError
from r2l.core.imageio import area_resize, save_png
from r2l.core.log import progress
from r2l.core.metrics import LpipsScorer, psnr, ssim
from r2l.core.runtime import pick_device
from r2l.data.scene import Scene
from r2l.models.flops import flops_note, flops_per_ray
from r2l.models.load import load_model, model_scene
from r2l.models.students import Student
from r2l.models.render import pose_rays
from r2l.report.tables import COLUMNS, MODELS, model_label, write_metrics_csv

log = logging.getLogger("r2l")


FLOPS_RAYS = 1024  # rays of the first view traced for FLOPs (evenly spread over the image)



def renderer_device(renderer) -> torch.device:
    """The device a renderer computes on: its ``device`` attribute, else its model's parameters'."""
    dev = getattr(renderer, "device", None)
    if dev is not None:
        return torch.device(dev)
    param = next(iter(renderer.model.parameters()), None)
    return param.device if param is not None else torch.device("cpu")


def device_name(device: torch.device) -> str:
    """A readable device name: the GPU's, or the CPU model with the torch thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:  # not Linux: keep platform's answer
        pass
    return f"{cpu} ({torch.get_num_threads()} threads)"


def _sync(device: torch.device) -> None:
    """Wait for queued GPU work (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_frames(renderer, rays_o: torch.Tensor, rays_d: torch.Tensor, n_frames: int, warmup: int) -> float:
    """Median milliseconds of ``renderer.render_rays(rays_o, rays_d)`` over ``n_frames`` after ``warmup`` calls.

    rays_o, rays_d: (H*W, 3) the rays of one full frame.
    """
    device = renderer_device(renderer)
    for _ in range(warmup):
        renderer.render_rays(rays_o, rays_d)
    times = []
    for _ in range(max(1, n_frames)):
        _sync(device)
        start = time.perf_counter()
        renderer.render_rays(rays_o, rays_d)
        _sync(device)
        times.append((time.perf_counter() - start) * 1000.0)
    return float(statistics.median(times))


def weights_bytes(model: torch.nn.Module) -> int:
    """Bytes of every tensor in ``model``'s state dict (parameters and buffers) at their stored dtype."""
    return int(sum(t.numel() * t.element_size() for t in model.state_dict().values()))


def stage_seconds(meta: dict) -> float:
    """A model's own training-stage seconds: ``meta["metrics"]["train_seconds"]`` if present, else
    ``meta["train_seconds"]`` (NaN when neither is known)."""
    stage = meta.get("metrics", {}).get("train_seconds") if isinstance(meta.get("metrics"), dict) else None
    return float(stage if stage is not None else meta.get("train_seconds", math.nan))


def _model_name(renderer, model: str | None) -> str:
    """The metrics row's model: ``model`` if given, else from ``meta["kind"]`` (nerf/grid -> teacher)."""
    name = model or str(renderer.meta.get("kind", ""))
    name = "teacher" if name in ("nerf", "grid") else name
    if name not in MODELS:
        raise R2LError(f"cannot tell which model this is (kind {name!r}); pass model= one of {list(MODELS)}")
    return name


def _family(renderer, name: str) -> str | None:
    """The metrics row's student family: ``meta["family"]`` for a student or finetuned student, None else."""
    family = renderer.meta.get("family") if name != "teacher" else None
    return str(family) if family else None


def _views(scene: Scene, split: str, H: int, W: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Ground truths (n, H, W, 3) (area-resized if needed), poses (n, 4, 4) and the focal at H x W."""
    gts, poses = scene.split(split)
    if len(gts) == 0:
        raise R2LError(f"scene {scene.name!r}: split {split!r} has no views to evaluate")
    if (H, W) == (scene.H, scene.W):
        return gts, poses, scene.focal
    gts = np.stack([area_resize(g, H, W) for g in gts])
    return gts, poses, scene.focal * W / scene.W


def view_rays(renderer, scene: Scene, pose, H: int, W: int, focal: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The render-space rays of the H x W view at ``pose`` (4, 4), built on the renderer's device:
    ``rays_o, rays_d`` (H * W, 3) each (on the CPU exactly ``scene.rays(pose, H, W, focal)``)."""
    return pose_rays(pose, H, W, focal, scene.ndc, scene.ndc_near, renderer_device(renderer))


def _score_views(renderer, scene, gts, poses, H, W, focal, renders_dir, lpips) -> list[dict]:
    """Render each view, score it, save its PNG; returns per-view {view, psnr, ssim, lpips}."""
    rows = []
    with progress(len(poses), desc=f"evaluate {scene.name}") as bar:
        for i in range(len(poses)):
            pred = renderer.render_rays(*view_rays(renderer, scene, poses[i], H, W, focal)).reshape(H, W, 3).numpy()
            score = lpips(pred, gts[i]) if lpips is not None else None
            rows.append({"view": i, "psnr": psnr(pred, gts[i]), "ssim": ssim(pred, gts[i]), "lpips": score})
            if renders_dir is not None:
                save_png(pred, Path(renders_dir) / f"{i:03d}.png")
            bar.update(1)
    return rows


def _per_view_csv(rows: list[dict], path: Path) -> None:
    """Write per-view scores as CSV, atomically (missing LPIPS = empty cell)."""
    lines = ["view,psnr,ssim,lpips"]
    lines += [f"{r['view']},{r['psnr']:.6f},{r['ssim']:.6f},{'' if r['lpips'] is None else format(r['lpips'], '.6f')}"
              for r in rows]
    atomic_write_text(path, "\n".join(lines) + "\n")


def _flops(renderer, scene: Scene, pose, H: int, W: int, focal: float) -> float:
    """MFLOPs per ray traced on up to FLOPS_RAYS rays spread evenly over the frame at ``pose``."""
    rays_o, rays_d = scene.rays(pose, H, W, focal)
    idx = torch.linspace(0, H * W - 1, min(FLOPS_RAYS, H * W)).round().long()
    mflops = flops_per_ray(renderer, rays_o[idx], rays_d[idx]) / 1e6
    log.info("FLOPs: %.2f M per ray (%s)", mflops, flops_note(renderer))
    return mflops


def evaluate_model(
    renderer, scene: Scene, split: str = "test", H: int | None = None, W: int | None = None,
    n_speed_frames: int = 5, warmup: int = 2, renders_dir: str | Path | None = None,
    lpips: LpipsScorer | None = None, model_path: str | Path | None = None,
    model: str | None = None, scene_name: str | None = None,
) -> dict:
    """One metrics row (keys exactly :data:`r2l.report.tables.COLUMNS`) for ``renderer`` on ``scene``'s ``split``.

    H, W: evaluation resolution (default the scene's; the focal is scaled and the ground truth
    area-resized). lpips: a scorer, or None (column left empty). model_path: the model file (its size is logged).
    model: ``teacher`` | ``student`` | ``finetuned`` (default from ``renderer.meta["kind"]``).
    scene_name: the row's scene (default ``scene.name``).
    """
    H, W = H or scene.H, W or scene.W
    name = _model_name(renderer, model)
    gts, poses, focal = _views(scene, split, H, W)
    scorer = lpips if (lpips is not None and lpips.available) else None
    precision = getattr(renderer, "precision", "fp32")  # what the model is used at: its speed is timed at it
    renderer.precision = "fp32"  # quality is always scored from a float32 render
    try:
        per_view = _score_views(renderer, scene, gts, poses, H, W, focal, renders_dir, scorer)
    finally:
        renderer.precision = precision
    if renders_dir is not None:
        _per_view_csv(per_view, Path(renders_dir) / "per_view.csv")
    rays_o, rays_d = view_rays(renderer, scene, poses[0], H, W, focal)
    ms = time_frames(renderer, rays_o, rays_d, n_speed_frames, warmup)
    if model_path is not None:
        log.info("model file %s: %.2f MB on disk", model_path, Path(model_path).stat().st_size / 1e6)
    row = {
        "scene": scene_name or scene.name, "model": name, "family": _family(renderer, name),
        "psnr": float(np.mean([r["psnr"] for r in per_view])),
        "ssim": float(np.mean([r["ssim"] for r in per_view])),
        "lpips": float(np.mean([r["lpips"] for r in per_view])) if scorer is not None else None,
        "mflops_per_ray": _flops(renderer, scene, poses[0], H, W, focal),
        "ms_per_frame": ms, "fps": 1000.0 / ms if ms > 0 else math.nan,
        "params": int(sum(p.numel() for p in renderer.model.parameters())),
        "size_mb": weights_bytes(renderer.model) / 1e6, "train_minutes": stage_seconds(renderer.meta) / 60.0,
        "device": device_name(renderer_device(renderer)), "precision": precision,
    }
    assert list(row) == COLUMNS
    log.info("%s/%s: PSNR %.2f dB, SSIM %.4f, %.1f ms/frame", row["scene"], model_label(name, row["family"]),
             row["psnr"], row["ssim"], ms)
    return row


def evaluation_order(model_paths: dict[str, str | Path]) -> list[tuple[str, str]]:
    """``(name, model)`` of each entry of ``model_paths`` in metrics order: teacher, student, finetuned, then
    each further family's ``student_NAME`` and ``finetuned_NAME`` (model ``student`` / ``finetuned``), in the
    order their students come; R2LError for any other name."""
    extras = [name for name in model_paths if name not in MODELS]
    bad = [name for name in extras if name.split("_", 1)[0] not in ("student", "finetuned") or "_" not in name]
    if bad:
        raise R2LError(f"cannot tell which model {bad} are: expected {list(MODELS)}, student_NAME or finetuned_NAME")
    families = list(dict.fromkeys(name.split("_", 1)[1] for name in extras))
    order = [(m, m) for m in MODELS if m in model_paths]
    for fam in families:
        order += [(f"{m}_{fam}", m) for m in ("student", "finetuned") if f"{m}_{fam}" in model_paths]
    return order


def evaluate_scene(
    scene: Scene, model_paths: dict[str, str | Path], out_csv: str | Path, renders_root: str | Path | None = None,
    device: str | None = None, H: int | None = None, W: int | None = None, use_lpips: bool = True,
    scene_name: str | None = None, n_speed_frames: int = 5, warmup: int = 2, compile: str = "auto",
) -> list[dict]:
    """Evaluate each model file and write ``out_csv`` (one row per model, atomically).

    model_paths: ``{"teacher": path, "student": path, "finetuned": path}`` (any subset; each file loads with
    :func:`r2l.models.load.load_model`, which reads the file's kind), and ``student_NAME``, ``finetuned_NAME``
    for the students of further families (rows of model ``student`` / ``finetuned``, after the others).
    renders_root: renders go to ``renders_root/{model}/``. device: None/"auto" = CUDA when present.
    compile: whether students render through ``torch.compile`` ("off" | "on" | "auto": on CUDA only; see
    :func:`r2l.models.students.compile_for_inference`); the first frames of a compiled student (quality renders)
    pay its compile time, the timed frames (after ``warmup``) do not.
    """
    device = str(pick_device(device))
    scorer = LpipsScorer(device) if use_lpips else None
    rows = []
    for name, model in evaluation_order(model_paths):
        path = Path(model_paths[name])
        renderer = load_model(path, device)
        if isinstance(renderer, Student) and renderer.set_compile(compile):
            log.info("%s: rendering through torch.compile (compile=%s)", name, compile)
        scene.check_identity(model_scene(renderer), path)
        out_dir = Path(renders_root) / name if renders_root is not None else None
        rows.append(evaluate_model(renderer, scene, "test", H, W, n_speed_frames, warmup, out_dir, scorer,
                                   path, model, scene_name))
        del renderer
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    write_metrics_csv(rows, out_csv)
    return rows
