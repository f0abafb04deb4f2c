"""The teacher stage: train a coarse + fine NeRF (the paper's) or a fast grid field (r2l.models.grid).

:func:`train_teacher` runs the shared loop (:func:`r2l.stages.loop.run_loop`: resume, checkpoints, history,
validation, NaN guard, finish) on a :class:`TeacherTask`. All training rays are built once; each step draws
``batch_rays`` random rays across every training view (the centre crop only for the first ``precrop_steps`` on
Blender scenes), renders them, and takes an Adam step on the colour MSE (coarse + fine for NeRF; MSE + the field's
regulariser for the grid) with the NeRF schedule ``lr * 0.1 ** (step / lr_decay_steps)``. What differs between
the kinds (Adam groups, loss, the grid's occupancy refresh and upsampling after a step) is a kind object of
:data:`TEACHER_KINDS`. A validation below a mean-colour image stops training (:func:`check_learned`); where the
validation views are training views, held-out views are scored at the end and a weak score warned about
(:func:`check_held_out`). The trained teacher is loaded for inference with
:func:`r2l.models.teacher.load_teacher`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from r2l.core.checkpoint import check_state_dict, read_checkpoint_v3, save_model_file
from r2l.core.errors import R2LError
from r2l.core.log import log
from r2l.core.metrics import psnr_from_mse
from r2l.core.runtime import (
    PAPER_LR_DECAY_STEPS,
    check_finite,
    computing_in,
    pick_device,
    rng_state,
    seed_everything,
    set_group_lr,
    set_rng_state,
)
from r2l.data.scene import Scene
from r2l.models.teacher import TeacherConfig, build_model, render, render_eval_outputs
from r2l.stages.loop import LoopState, StepOut, common_metrics, resumed_state, run_loop


def resolve_for_scene(cfg: TeacherConfig, scene: Scene) -> TeacherConfig:
    """Fill in the settings that depend on the scene's format (``None`` in the config) and log them."""
    kind_cfg = getattr(cfg, cfg.kind)
    resolved = kind_cfg.resolved(scene.ndc, scene.unbounded)
    unset = [f.name for f in dataclasses.fields(kind_cfg) if getattr(kind_cfg, f.name) is None]
    filled = {name: getattr(resolved, name) for name in unset}
    space = "NDC (forward-facing)" if scene.ndc else "world (object-centric)"
    space = "contracted (unbounded)" if scene.unbounded else space
    log.info("teacher %s settings for a %s %s scene: %s", cfg.kind, scene.format, space,
             ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(resolved).items()))
    decay = cfg.lr_decay_steps
    if decay is None:
        decay = filled["lr_decay_steps"] = PAPER_LR_DECAY_STEPS[bool(scene.ndc)]
    if filled:
        log.info("resolved from the scene format: %s", ", ".join(f"{k}={v}" for k, v in filled.items()))
    return dataclasses.replace(cfg, nerf=cfg.nerf.resolved(scene.ndc, scene.unbounded),
                               grid=cfg.grid.resolved(scene.ndc, scene.unbounded),
                               lr_decay_steps=decay)


def scene_info(scene: Scene) -> dict:
    """What the teacher file records of its scene: its identity (name, format, size, data digest) and camera."""
    return {**scene.identity(), **scene.camera()}



# ----------------------------------------------------------------------------- training pieces


class TrainRays:
    """Every training ray of a scene (render space) and its colour, kept on ``device``.

    rays_o, rays_d, rgb: (n_views, H * W, 3); mean_rgb: (3,) the mean training colour.
    """

    def __init__(self, scene: Scene, device: torch.device):
        images, poses = scene.split("train")
        rays = [scene.rays(c2w) for c2w in poses]
        self.rays_o = torch.stack([r[0] for r in rays]).to(device)
        self.rays_d = torch.stack([r[1] for r in rays]).to(device)
        self.rgb = torch.as_tensor(np.asarray(images, dtype=np.float32)).reshape(len(poses), -1, 3).to(device)
        self.mean_rgb = self.rgb.reshape(-1, 3).mean(dim=0)
        self.H, self.W, self.device = scene.H, scene.W, device

    def sample_indices(self, n: int, generator: torch.Generator, crop_frac: float = 1.0):
        """``n`` random (view, flat pixel ``v * W + u``) pairs, each ``(n,)`` int64 on the CPU.

        With ``crop_frac < 1`` only the centre rows/columns ``[H//2 - dh, H//2 + dh)``,
        ``dh = int(H//2 * crop_frac)`` (nerf-pytorch's precrop) are drawn.
        """
        H, W = self.H, self.W
        dh, dw = (int(H // 2 * crop_frac), int(W // 2 * crop_frac)) if crop_frac < 1 else (H - H // 2, W - W // 2)
        dh, dw = max(dh, 1), max(dw, 1)
        view = torch.randint(0, self.rgb.shape[0], (n,), generator=generator)
        v = torch.randint(max(H // 2 - dh, 0), min(H // 2 + dh, H), (n,), generator=generator)
        u = torch.randint(max(W // 2 - dw, 0), min(W // 2 + dw, W), (n,), generator=generator)
        return view, v * W + u

    def sample(self, n: int, generator: torch.Generator, crop_frac: float = 1.0):
        """``n`` random rays across all views (see :meth:`sample_indices`).

        Returns ``rays_o, rays_d, rgb``: (n, 3) on the device.
        """
        view, pix = (x.to(self.device) for x in self.sample_indices(n, generator, crop_frac))
        return self.rays_o[view, pix], self.rays_d[view, pix], self.rgb[view, pix]


def decay_lr(optimizer: torch.optim.Optimizer, cfg: TeacherConfig, step: int) -> float:
    """Exponential decay of every group's base lr: ``base * 0.1 ** (step / lr_decay_steps)``; returns the factor."""
    factor = 0.1 ** (step / cfg.lr_decay_steps)
    set_group_lr(optimizer, lambda group: group["base_lr"] * factor)
    return factor


class NeRFKind:
    """The paper's coarse + fine NeRF: one Adam group at ``cfg.lr``, fixed shapes, coarse + fine colour loss."""

    fixed_shapes = True

    def param_groups(self, model: nn.ModuleDict, cfg: TeacherConfig) -> list[dict]:
        return [{"params": list(model.parameters()), "lr": cfg.lr}]

    def loss(self, model: nn.ModuleDict, out: dict, target: torch.Tensor, mse: torch.Tensor) -> torch.Tensor:
        """MSE(fine) + MSE(coarse); out["rgb_coarse"], target: (n, 3)."""
        return mse + torch.mean((out["rgb_coarse"].float() - target) ** 2)

    def after_step(self, model: nn.ModuleDict, step: int) -> bool:
        """Nothing changes between steps: False (the optimizer stays)."""
        return False

    def stats(self, model: nn.ModuleDict, seed: int) -> str:
        return ""

    def samples_per_ray(self, cfg: TeacherConfig) -> int:
        return cfg.nerf.n_coarse


class GridKind:
    """The grid field: its own Adam groups and rates, its regulariser in the loss, and, after a step, its
    occupancy refresh and upsampling (a resample changes the parameters' shapes: a new optimizer)."""

    fixed_shapes = False

    def param_groups(self, model: nn.ModuleDict, cfg: TeacherConfig) -> list[dict]:
        return model["field"].param_groups(1.0)

    def loss(self, model: nn.ModuleDict, out: dict, target: torch.Tensor, mse: torch.Tensor) -> torch.Tensor:
        """MSE + the field's regulariser (if it has one)."""
        regularizer = getattr(model["field"], "regularizer", None)
        return mse + regularizer().float() if regularizer is not None else mse

    def after_step(self, model: nn.ModuleDict, step: int) -> bool:
        """Refresh the occupancy grid / upsample when due; True when the grids were resampled to a new shape."""
        return bool(model["field"].update_occupancy(step))

    def stats(self, model: nn.ModuleDict, seed: int) -> str:
        """One log line: occupied cells, grid box, density percentiles in the box."""
        f = model["field"]
        gen = torch.Generator(device=f.aabb.device).manual_seed(seed)
        pts = f.aabb[0] + torch.rand(8192, 3, generator=gen, device=f.aabb.device) * (f.aabb[1] - f.aabb[0])
        with torch.no_grad():
            sigma = f.density(pts).float()
        q = torch.quantile(sigma, torch.tensor([0.5, 0.9, 0.99], device=sigma.device)).tolist()
        box = [[round(v, 3) for v in corner] for corner in f.grid_aabb.tolist()]
        return (f"occupancy {100 * f.occupied_fraction():.1f}% of cells, grid side {f.resolution} over box {box}, "
                f"density p50/p90/p99 {q[0]:.3g}/{q[1]:.3g}/{q[2]:.3g} (max {float(sigma.max()):.3g})")

    def samples_per_ray(self, cfg: TeacherConfig) -> int:
        return cfg.grid.n_samples


TEACHER_KINDS = {"nerf": NeRFKind(), "grid": GridKind()}  # what differs between the teacher kinds in training


def make_optimizer(model: nn.ModuleDict, cfg: TeacherConfig, device: torch.device) -> torch.optim.Adam:
    """Adam (betas 0.9/0.999, no weight decay) over the kind's parameter groups and rates."""
    groups = TEACHER_KINDS[cfg.kind].param_groups(model, cfg)
    for group in groups:
        group["base_lr"] = group.get("lr", cfg.lr)
    return torch.optim.Adam(groups, lr=cfg.lr, betas=(0.9, 0.999), fused=device.type == "cuda")


def teacher_loss(model: nn.ModuleDict, cfg: TeacherConfig, out: dict, target: torch.Tensor):
    """Training loss and the colour MSE of the final image (float32); target: (n, 3).

    NeRF: MSE(coarse) + MSE(fine); grid: MSE + the field's regulariser (if it has one).
    """
    mse = torch.mean((out["rgb"].float() - target) ** 2)
    return TEACHER_KINDS[cfg.kind].loss(model, out, target, mse), mse


HELD_OUT_MARGIN_DB = 5.0  # a teacher less than this above the mean-colour image on held-out views is warned about


def validate(model, cfg: TeacherConfig, info: dict, scene: Scene, device, mean_rgb: torch.Tensor,
             split: str = "val") -> dict | None:
    """Score ``cfg.val_views`` evenly spread views of ``split`` (None without one).

    mean_rgb: (3,) the training images' mean colour. Returns ``psnr`` (mean per-image PSNR),
    ``baseline_psnr`` (the same for a constant image of ``mean_rgb``) and ``miss`` (fraction of rays whose
    accumulated opacity stays below 0.5, i.e. that hit nothing and show the background).
    """
    if split not in scene.splits or len(scene.splits[split]) == 0 or cfg.val_views <= 0:
        return None
    images, poses = scene.split(split)
    picks = np.unique(np.linspace(0, len(poses) - 1, min(cfg.val_views, len(poses))).round().astype(int))
    psnrs, baselines, misses = [], [], []
    for i in picks:
        out = render_eval_outputs(model, cfg, info, *scene.rays(poses[i]), device)
        target = torch.as_tensor(np.asarray(images[i], dtype=np.float32)).reshape(-1, 3)
        psnrs.append(psnr_from_mse(float(torch.mean((out["rgb"].cpu() - target) ** 2))))
        baselines.append(psnr_from_mse(float(torch.mean((mean_rgb.cpu() - target) ** 2))))
        misses.append(float((out["acc"] < 0.5).float().mean()))
    return {"psnr": float(np.mean(psnrs)), "baseline_psnr": float(np.mean(baselines)), "miss": float(np.mean(misses))}


def check_learned(cfg: TeacherConfig, val: dict | None, step: int, scene_name: str) -> None:
    """Stop with an R2LError when the teacher scores below a constant mean-colour image on the val views."""
    if not cfg.check_learned or val is None or val["psnr"] >= val["baseline_psnr"]:
        return
    raise R2LError(
        f"teacher of scene {scene_name!r} has not learned the scene: validation PSNR {val['psnr']:.2f} dB at step "
        f"{step} is below the {val['baseline_psnr']:.2f} dB of an image painted in the mean training colour. "
        "Stopping before later stages distil it; check the scene's poses and format, and the log's density and "
        "occupancy lines, then rerun (the last checkpoints are kept)."
    )


def check_held_out(model, cfg: TeacherConfig, info: dict, scene: Scene, device, mean_rgb: torch.Tensor) -> None:
    """When the validation views are training views (:meth:`Scene.views_in_train`), score ``cfg.val_views``
    held-out test views too (nothing is chosen by them) and warn when the teacher is less than
    :data:`HELD_OUT_MARGIN_DB` above an image painted in the mean training colour there."""
    if not scene.views_in_train("val"):
        return
    held = validate(model, cfg, info, scene, device, mean_rgb, split="test")
    if held is None:
        return
    log.info("held-out test views: PSNR %.2f dB (mean-colour image %.2f dB)", held["psnr"], held["baseline_psnr"])
    if held["psnr"] < held["baseline_psnr"] + HELD_OUT_MARGIN_DB:
        log.warning(
            "teacher of scene %r: on held-out views it is only %.1f dB above an image painted in the mean training "
            "colour (%.2f against %.2f dB; its validation views are training views). It reproduces the photos it "
            "trained on but not the scene: check the poses (COLMAP can misplace photos of repeated patterns), "
            "or take more photos; the later stages distil what it learned.", scene.name,
            held["psnr"] - held["baseline_psnr"], held["psnr"], held["baseline_psnr"])


def field_stats(model: nn.ModuleDict, cfg: TeacherConfig, seed: int) -> str:
    """One log line of statistics on the teacher's field ('' for NeRF; :meth:`GridKind.stats`)."""
    return TEACHER_KINDS[cfg.kind].stats(model, seed)


def log_validation(step: int, val: dict | None, stats: str) -> None:
    """The validation line of the log: PSNR against the mean-colour baseline, missed rays, field statistics."""
    if val is not None:
        log.info("step %d: val PSNR %.2f dB (mean-colour image %.2f dB), %.1f%% of rays hit nothing",
                 step, val["psnr"], val["baseline_psnr"], 100 * val["miss"])
    if stats:
        log.info("step %d: %s", step, stats)


def validate_and_check(model, cfg: TeacherConfig, info: dict, scene: Scene, rays: TrainRays, device, step: int):
    """:func:`validate`, log it with :func:`field_stats`, then :func:`check_learned`; returns the scores."""
    val = validate(model, cfg, info, scene, device, rays.mean_rgb)
    log_validation(step, val, field_stats(model, cfg, step))
    check_learned(cfg, val, step, scene.name)
    return val


# ----------------------------------------------------------------------------- checkpoints and the task


def _generators(rngs) -> dict[str, torch.Generator]:
    """The loop's generators by name: batch sampling and render jitter."""
    return {"batch": rngs[0], "render": rngs[1]}


def _arch(config: dict) -> dict:
    """The parts of a config dict that must match to resume (kind and network)."""
    return {"kind": config["kind"], "net": config[config["kind"]]}


def _read_checkpoint_v2(ckpt: dict, path: Path) -> dict:
    """A checkpoint of format 2 (model, optimizer, config, rng, step, train_seconds and the histories at the top
    level; loss rows ``[step index, loss, train PSNR]``) in today's layout
    (:data:`r2l.core.checkpoint.CHECKPOINT_KEYS`)."""
    return {
        "stage": "teacher", "kind": ckpt["config"]["kind"], "config": ckpt["config"], "step": ckpt["step"],
        "weights": ckpt["model"], "optimizer": ckpt["optimizer"], "rng": ckpt["rng"],
        "history": [[index + 1, loss, psnr] for index, loss, psnr in ckpt["history"]],
        "loop": {"base_step": 0, "train_seconds": ckpt["train_seconds"], "init_seconds": 0.0,
                 "val_history": ckpt["val_history"], "curve": ckpt["curve"], "best": {}},
        "extra": {},
    }


def _read_checkpoint_v1(ckpt: dict, path: Path) -> dict:
    """A checkpoint of format 1 (no ``format_version``): format 2's layout; the first ones have no ``curve``."""
    return _read_checkpoint_v2({"curve": [], **ckpt}, path)


CHECKPOINT_READERS = {1: _read_checkpoint_v1, 2: _read_checkpoint_v2, 3: read_checkpoint_v3}


class TeacherTask:
    """The teacher's part of :func:`r2l.stages.loop.run_loop`: its networks, step, validation, checkpoint and file.

    The kind's differences (parameter groups, loss, the grid's occupancy refresh and upsampling, statistics) are
    those of :data:`TEACHER_KINDS`. Its checkpoints have the layout of every stage
    (:data:`r2l.core.checkpoint.CHECKPOINT_KEYS`: stage ``"teacher"``, kind ``nerf`` or ``grid``, ``rng`` the batch
    and render generators) with an empty ``extra``.
    """

    validate_first, select_on_val, rank, world, stage = False, False, 0, 1, "teacher"
    readers = CHECKPOINT_READERS

    def __init__(self, scene: Scene, cfg: TeacherConfig, out_path, resume_dir, history_path=None):
        self.cfg = cfg = resolve_for_scene(cfg, scene)
        self.scene, self.kind, self.device = scene, cfg.kind, pick_device(cfg.device)
        self.kind_ops = TEACHER_KINDS[cfg.kind]  # what differs between the kinds in training
        self.out_path, self.resume_dir, self.history_path = out_path, Path(resume_dir), history_path
        batch_gen = seed_everything(cfg.seed)
        self.rngs = (batch_gen, torch.Generator(device=self.device).manual_seed(cfg.seed + 1))
        self.info = scene_info(scene)
        self.model = build_model(cfg, self.info).to(self.device)
        self.optimizer = make_optimizer(self.model, cfg, self.device)
        self.end_step = self.stop_step = cfg.steps
        self.name = f"teacher {cfg.kind} {scene.name}"

    def check(self, ckpt: dict) -> None:
        """Raise when ``ckpt`` cannot be resumed: another kind or network (R2LError), missing keys, other weights."""
        if _arch(ckpt["config"]) != _arch(dataclasses.asdict(self.cfg)):
            raise R2LError(
                f"{self.resume_dir}: its checkpoint was trained with another teacher kind/network "
                f"({_arch(ckpt['config'])}); delete the folder to start over or restore the old config"
            )
        check_state_dict(ckpt["weights"], self.model, shapes=self.kind_ops.fixed_shapes)
        _ = ckpt["optimizer"]["state"], ckpt["rng"]["batch"]

    def restore(self, ckpt: dict | None) -> LoopState:
        """Load the checkpoint into the model, optimizer and generators (None: a fresh start); build the rays."""
        if ckpt is not None:
            self.model.load_state_dict(ckpt["weights"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            set_rng_state(ckpt["rng"], _generators(self.rngs), self.device)
        self.rays = TrainRays(self.scene, self.device)
        n_rays = self.rays.rgb.shape[0] * self.rays.rgb.shape[1]
        log.info("teacher %s on %s (%s): %d training rays, %d steps", self.cfg.kind, self.scene.name, self.device,
                 n_rays, self.cfg.steps)
        log_sampling(self.cfg, self.info, self.rays)
        return LoopState() if ckpt is None else resumed_state(ckpt)

    def step(self, step: int) -> StepOut:
        """:func:`take_step`, then the kind's work after it (a grid resample rebuilds the optimizer)."""
        loss, mse = take_step(self.model, self.optimizer, self.cfg, self.info, self.rays, self.rngs, step,
                              self.scene.ndc, self.device)
        lr = self.optimizer.param_groups[0]["lr"]  # before a grid resample rebuilds the optimizer
        if self.kind_ops.after_step(self.model, step):
            self.optimizer = make_optimizer(self.model, self.cfg, self.device)
        return StepOut(loss, mse, lr)

    def reduce(self, loss: torch.Tensor) -> torch.Tensor:
        return loss

    def validate(self, step: int) -> float | None:
        """:func:`validate_and_check` (R2LError when the teacher has not learned); the val PSNR."""
        val = validate_and_check(self.model, self.cfg, self.info, self.scene, self.rays, self.device, step)
        return None if val is None else val["psnr"]

    def state_dict(self) -> dict:
        """Its part of a checkpoint: config, weights, optimizer, rng (batch and render generators), no extra."""
        return {"config": dataclasses.asdict(self.cfg), "weights": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "rng": rng_state(_generators(self.rngs), self.device),
                "extra": {}}

    def finish(self, state: LoopState) -> dict:
        """Write the teacher file atomically; returns its metrics (``val_psnr``: the final validation's, at
        ``val_step``; the rest: :func:`r2l.stages.loop.common_metrics`)."""
        val_step, val_psnr = state.val_history[-1]
        check_held_out(self.model, self.cfg, self.info, self.scene, self.device, self.rays.mean_rgb)
        metrics = {"val_psnr": val_psnr, "val_step": val_step, **common_metrics(self, state)}
        out = {"weights": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
               "config": dataclasses.asdict(self.cfg), "kind": self.cfg.kind, "scene": self.info,
               "step": int(state.step), "metrics": metrics}
        save_model_file(out, self.out_path)
        log.info("teacher written to %s: val PSNR %s after %d steps, %.0f s", self.out_path, val_psnr, state.step,
                 state.train_seconds)
        return metrics


def train_teacher(
    scene: Scene,
    cfg: TeacherConfig,
    out_path: str | Path,
    resume_dir: str | Path,
    on_step: Callable[[int, torch.Tensor], None] | None = None,
    history_path: str | Path | None = None,
) -> dict:
    """Train a teacher on ``scene``'s train split; write ``out_path``; return its metrics.

    Resumes from the newest checkpoint in ``resume_dir``. ``on_step(step, loss)`` (optional) is called
    after every finished step with the step's loss tensor, unread (tests use it to simulate a kill).
    ``history_path``: where the training history CSV goes (none written without it).
    """
    task = TeacherTask(scene, cfg, out_path, resume_dir, history_path)
    return run_loop(task, task.cfg.log_every, task.cfg.val_every, task.cfg.ckpt_every, on_step)


def take_step(model, optimizer, cfg: TeacherConfig, info, rays: TrainRays, rngs, step, ndc, device):
    """One optimisation step; returns ``(loss, mse)``: detached 0-dim float32 tensors on ``device``, not read.

    Nothing here waits for the device: the loop reads (and checks) the loss every ``log_every`` steps only, and
    a checkpoint refuses non-finite weights, so a non-finite loss stops training at the next of those.
    """
    batch_gen, render_gen = rngs
    decay_lr(optimizer, cfg, step)
    crop = cfg.precrop_frac if (step < cfg.precrop_steps and not ndc) else 1.0
    rays_o, rays_d, target = rays.sample(cfg.batch_rays, batch_gen, crop)
    with computing_in(device, cfg.precision):
        out = render(model, cfg, info, rays_o, rays_d, train=True, generator=render_gen)
    loss, mse = teacher_loss(model, cfg, out, target)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach(), mse.detach()


def train_step(model, optimizer, cfg: TeacherConfig, info, rays: TrainRays, rngs, step, ndc, device, resume_dir):
    """:func:`take_step`, then read its ``(loss, mse)`` as floats (a host sync); R2LError on a non-finite loss.

    For callers that want every step's numbers (tests); the loop itself uses :func:`take_step`.
    """
    loss, mse = take_step(model, optimizer, cfg, info, rays, rngs, step, ndc, device)
    check_finite(loss, step, resume_dir)
    return float(loss), float(mse)


def log_sampling(cfg: TeacherConfig, info: dict, rays: TrainRays) -> None:
    """Log the samples per ray and their spacing in the field's space (NDC units for forward-facing scenes; an
    unbounded scene's spacing changes along the ray, so its split is logged instead)."""
    n = TEACHER_KINDS[cfg.kind].samples_per_ray(cfg)
    if info.get("unbounded"):
        log.info("%d samples per ray over t in [%g, %g]: evenly in t up to %g, then evenly in disparity (contracted "
                 "space)", n, info["near"], info["far"], info["sample_split"])
        return
    norms = torch.linalg.norm(rays.rays_d[0].float(), dim=-1)
    step = (info["far"] - info["near"]) / max(n - 1, 1)
    lo, med, hi = torch.quantile(norms.cpu(), torch.tensor([0.0, 0.5, 1.0])).tolist()
    space = "NDC" if info["ndc"] else "world"
    log.info("%d samples per ray over t in [%g, %g]: step %.4g in t, %.4g / %.4g / %.4g %s units (min/median/max "
             "over a training view)", n, info["near"], info["far"], step, step * lo, step * med, step * hi, space)
