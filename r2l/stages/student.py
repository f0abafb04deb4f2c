"""Train the R2L student: distillation on pseudo-data with hard-example mining, then finetuning on real views.

:func:`train_student` runs the shared loop (:func:`r2l.stages.loop.run_loop`: resume, checkpoints, history,
validation, NaN guard, finish) on a :class:`StudentTask`. Each step draws ``batch_rays`` fresh rays
uniformly over every pixel of every view of the given view stores (:class:`r2l.data.views.ViewStore`,
render-space rays rebuilt from the stored cameras), adds ``hard_ratio * batch_rays`` rays drawn from the
hard-example pool once it is full (:class:`HardPool`), and takes an Adam step on the colour MSE under the
paper's schedule (:func:`lr_at`). The ``hard_ratio`` highest-loss FRESH rays of the step then enter the
pool. It validates every ``val_every`` steps (mean per-image PSNR of full views, deterministic rendering),
checkpoints every ``ckpt_every`` steps into ``resume_dir`` and resumes from the newest checkpoint on
restart (weights, optimizer, step, generator states, elapsed seconds, histories). The full training
history (step, loss, train PSNR, val PSNR, lr, seconds: :mod:`r2l.report.curves`) is written to
``history_path`` at every checkpoint and at the end when one is given. The hard pool is checkpointed
too (the authors' code does not), so a resume in one process continues bit for bit; with several processes
each rebuilds its pool over the next ``1 / hard_ratio * hard_mul`` steps (100 with the paper's values). The
student family (``family``: :mod:`r2l.models.students`) supplies the network, its Adam groups and, for a family
that predicts depth, a depth loss against the teacher's depth in the pseudo-data. The loss stays on the device and is read every
``log_every`` steps only (no host synchronisation in between). A non-finite loss (seen at those steps) or
non-finite weights (checked at every checkpoint) stop training with an R2LError and the last good checkpoint
stays. The result is written atomically to ``out_path``.

:func:`finetune_student` continues a trained student on the REAL training rays with the same loop
(weights, optimizer state and step carried over, so the learning-rate schedule goes on from that step).
Unlike the authors (who stopped on test-set PSNR) it selects on the validation split: the PSNR of the
val store is measured before finetuning and every ``val_every`` steps, the best weights (the unfinetuned
start included) are kept, and those are written with their val PSNR and step.

Timing: ``train_seconds`` is wall time of the stage's training steps (validation excluded), accumulated
over resumes.

Several processes (one per GPU, launched by :mod:`r2l.stages.distributed`): when ``torch.distributed`` is
initialised with more than one process, the same loop runs in each and the model is wrapped in
DistributedDataParallel for the training step. The global batch and the learning-rate schedule stay those of
one process: every process draws the same global fresh batch and the same point jitter from identically seeded
generators and trains on its share of the rows (:func:`share`: equal, the remainder to the first processes),
its loss weighted by its share of the global batch, so DDP's average of the processes' gradients is the
one-process gradient while the hard pool is inactive. Each process keeps its own hard pool
(:class:`HardPool`, :func:`pool_share`). Every process validates (with the
unwrapped model; the weights are the same everywhere, so are the PSNRs), only process 0 writes checkpoints,
the history CSV and the student file, and on a restart every process resumes from the same newest checkpoint.
The recorded loss is the mean over the processes (one all-reduce every ``log_every`` steps).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from r2l.core.checkpoint import check_state_dict, read_checkpoint_v3, save_model_file
from r2l.core.config import from_dict
from r2l.core.errors import DataError, R2LError
from r2l.core.metrics import psnr_from_mse
from r2l.core.runtime import (
    PAPER_LR_DECAY_STEPS,
    check_precision,
    chunked,
    computing_in,
    pick_device,
    rng_state,
    seed_everything,
    set_group_lr,
    set_rng_state,
)
from r2l.data.scene import check_same_scene
from r2l.data.views import ViewStore, read_meta
from r2l.models.contracted import RaySpace, ray_space
from r2l.models.gridstudent import GridStudentConfig, scene_box, surface_depth
from r2l.models.r2lnet import R2LNetConfig
from r2l.models.load import STUDENT_KINDS, read_model_file
from r2l.models.students import early_student_config, family, stored_family, stored_network
from r2l.stages.loop import LoopState, StepOut, common_metrics, cpu_weights, resumed_state, run_loop

log = logging.getLogger("r2l")


@dataclass
class DistillConfig:
    """Student distillation and finetuning; defaults are the paper's / the authors' code values."""

    steps: int = 1_200_000  # optimiser steps on pseudo-data (authors' code; the paper text says 600k)
    batch_rays: int = 81_920  # fresh rays per step (authors: 20 files x 4096 rays)
    hard_ratio: float = 0.2  # share of the fresh rays (highest loss) entering the pool; pool rays added per step
    hard_mul: int = 20  # hard-example pool capacity in batches: hard_mul * batch_rays rays
    lr: float = 5e-4  # Adam learning rate after warm-up (betas 0.9, 0.999, no weight decay)
    warmup_lr: float = 1e-4  # learning rate at step 0, rising linearly to ``lr``
    warmup_steps: int = 200  # length of the linear warm-up
    lr_decay_steps: int | None = None  # after warm-up: lr * lr_decay_factor ** ((step - warmup_steps) / lr_decay_steps);
    # None: the authors' horizon for the scene's format, 500k Blender, 250k LLFF (resolved when training starts)
    lr_decay_factor: float = 0.1  # decay per lr_decay_steps
    val_every: int = 10_000  # validate every n steps (0 = only at start and end; not a paper setting)
    val_views: int = 8  # views scored per validation, evenly spread over the store (0 = all)
    ckpt_every: int = 5_000  # checkpoint into resume_dir every n steps (not a paper setting)
    log_every: int = 100  # loss history interval in steps
    seed: int = 0  # seeds network init, ray sampling and jitter
    device: str = "auto"  # "auto" (CUDA if present), "cuda", "cuda:1", "cpu"
    precision: str = "fp32"  # training arithmetic: fp32 (the authors'), tf32 or bf16; validation is always fp32
    chunk: int = 32_768  # rays per chunk when rendering without grad (validation)
    family: str = "r2l"  # the student family: r2l (the paper's MLP, ``network``) or grid (``grid``)
    network: R2LNetConfig = field(default_factory=R2LNetConfig)  # the r2l family's network
    grid: GridStudentConfig = field(default_factory=GridStudentConfig)  # the grid family's network
    compare: tuple[str, ...] = ()  # further families trained beside ``family`` on the same pseudo-data, for comparison

    def __post_init__(self):
        positive = ("batch_rays", "hard_mul", "lr_decay_steps", "ckpt_every", "log_every", "chunk")
        bad = [f"{k}={getattr(self, k)}" for k in positive if getattr(self, k) is not None and getattr(self, k) < 1]
        bad += [f"{k}={getattr(self, k)}" for k in ("steps", "warmup_steps", "val_every", "val_views")
                if getattr(self, k) < 0]
        if not 0.0 <= self.hard_ratio <= 1.0:
            bad.append(f"hard_ratio={self.hard_ratio} (must be in [0, 1])")
        if not (self.lr > 0 and self.warmup_lr > 0 and self.lr_decay_factor > 0):
            bad.append(f"lr={self.lr}, warmup_lr={self.warmup_lr}, lr_decay_factor={self.lr_decay_factor} (must be > 0)")
        self.compare = tuple(self.compare)
        if self.family in self.compare or len(set(self.compare)) < len(self.compare):
            bad.append(f"compare={list(self.compare)} (families other than family={self.family!r}, each once)")
        if bad:
            raise R2LError(f"student config: invalid value(s): {', '.join(bad)}")
        for name in (self.family, *self.compare):
            family(name)

    @property
    def net(self):
        """The network config of the chosen family (``network`` for r2l, ``grid`` for grid)."""
        return getattr(self, family(self.family).config_key)

    @property
    def n_hard(self) -> int:
        """Hard rays per step: round(hard_ratio * batch_rays) (16,384 for the paper)."""
        return int(round(self.hard_ratio * self.batch_rays))


def distill_config_from_dict(d: dict) -> DistillConfig:
    """Build a :class:`DistillConfig` from a (possibly partial, nested) dict; unknown keys raise R2LError."""
    cfg = from_dict(DistillConfig, dict(d), "student")
    check_precision(cfg.precision)
    return cfg


def finetune_config(cfg: DistillConfig, finetune: dict) -> DistillConfig:
    """The student's ``cfg`` as finetuning runs it, from the config's ``finetune`` section: the learning rate
    times ``lr_scale`` (the schedule goes on from the student's step) and its validation and checkpoint cadence."""
    return dataclasses.replace(cfg, lr=cfg.lr * finetune["lr_scale"], val_every=finetune["val_every"],
                               val_views=finetune["val_views"], ckpt_every=finetune["ckpt_every"])


def resolve_lr_decay(cfg: DistillConfig, ndc: bool) -> DistillConfig:
    """``cfg`` with ``lr_decay_steps: None`` replaced by the authors' horizon for the format (logged)."""
    if cfg.lr_decay_steps is not None:
        return cfg
    cfg = dataclasses.replace(cfg, lr_decay_steps=PAPER_LR_DECAY_STEPS[bool(ndc)])
    log.info("lr_decay_steps resolved from the scene format: %d (%s)", cfg.lr_decay_steps,
             "forward-facing" if ndc else "object-centric")
    return cfg


def lr_at(step: int, cfg: DistillConfig) -> float:
    """Learning rate of optimiser step ``step`` (0-based): linear warm-up, then exponential decay.

    ``warmup_lr + (lr - warmup_lr) * step / warmup_steps`` for ``step < warmup_steps``, else
    ``lr * lr_decay_factor ** ((step - warmup_steps) / lr_decay_steps)``.
    """
    if step < cfg.warmup_steps:
        return cfg.warmup_lr + (cfg.lr - cfg.warmup_lr) * step / cfg.warmup_steps
    return cfg.lr * cfg.lr_decay_factor ** ((step - cfg.warmup_steps) / cfg.lr_decay_steps)


# ----------------------------------------------------------------------------- hard-example mining


class HardPool:
    """A fixed-capacity pool of hard rays ``(rays_o, rays_d, rgb, geo)``, render space, on ``device`` (geo: the
    teacher's depth and opacity, :func:`teacher_geometry`).

    Fill phase: :meth:`add` appends the ``n_hard`` highest-loss rays of each step until ``capacity`` rays
    are held. Once full, :meth:`draw` returns ``n_hard`` distinct random slots' rays for the next batch
    and remembers those slots; the following :meth:`add` overwrites exactly those slots with the step's
    newest hardest rays. The pool draws from its own generator on ``device`` (not checkpointed).

    With several training processes each has its own pool, fed with its own share of the fresh rays, handing out
    its share of the ``n_hard`` rays a step and holding its share of the capacity (``hard_mul * batch_rays /
    world`` rays when the shares are equal; :func:`pool_share`), so the pools together hold and hand out what one
    process's pool would (other rays: each picks the hardest of its own share) and all fill at the same step.
    """

    def __init__(self, capacity: int, n_hard: int, device: torch.device | str = "cpu", seed: int = 0):
        self.capacity, self.n_hard, self.device = int(capacity), int(n_hard), torch.device(device)
        self.rays_o = torch.zeros(self.capacity, 3, device=self.device)
        self.rays_d = torch.zeros(self.capacity, 3, device=self.device)
        self.rgb = torch.zeros(self.capacity, 3, device=self.device)
        self.geo = torch.zeros(self.capacity, 2, device=self.device)
        self.size = 0
        self.drawn: torch.Tensor | None = None  # slots handed out by the last draw(), overwritten by add()
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    @property
    def full(self) -> bool:
        return self.size >= self.capacity

    def state_dict(self) -> dict:
        """The pool's rays, fill level and generator state (what a checkpoint keeps, for a bit-identical resume)."""
        return {"rays_o": self.rays_o.cpu(), "rays_d": self.rays_d.cpu(), "rgb": self.rgb.cpu(), "geo": self.geo.cpu(),
                "size": self.size, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s contents; R2LError when the capacity differs."""
        if state["rays_o"].shape[0] != self.capacity:
            raise R2LError(f"hard pool of {state['rays_o'].shape[0]} rays in the checkpoint, {self.capacity} configured")
        for key in ("rays_o", "rays_d", "rgb", "geo"):
            getattr(self, key).copy_(state[key])
        self.size, self.drawn = int(state["size"]), None
        self.generator.set_state(state["generator"])

    def draw(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """``n_hard`` random distinct pool rays ``(rays_o, rays_d, rgb)`` each (n_hard, 3) and ``geo`` (n_hard, 2), or
        None until full."""
        if not self.full or self.n_hard == 0:
            return None
        perm = torch.randperm(self.capacity, generator=self.generator, device=self.device)
        self.drawn = perm[: self.n_hard]
        return self.rays_o[self.drawn], self.rays_d[self.drawn], self.rgb[self.drawn], self.geo[self.drawn]

    @torch.no_grad()
    def add(self, rays_o: torch.Tensor, rays_d: torch.Tensor, rgb: torch.Tensor, loss: torch.Tensor,
            geo: torch.Tensor | None = None) -> torch.Tensor:
        """Put the ``n_hard`` highest-``loss`` rays in the pool; returns the slots written (int64).

        rays_o, rays_d, rgb: (n, 3) the step's fresh rays; loss: (n,) their per-ray loss; geo: (n, 2) their
        teacher depth and opacity (None: NaN, none).
        """
        k = min(self.n_hard, loss.shape[0])
        if k == 0:
            return torch.zeros(0, dtype=torch.long, device=self.device)
        hardest = torch.topk(loss.float(), k).indices.to(self.device)
        if not self.full:
            n = min(k, self.capacity - self.size)
            slots = torch.arange(self.size, self.size + n, device=self.device)
            self.size += n
        else:
            slots = self.drawn
            if slots is None:  # full but nothing drawn this step (add() without draw()): random slots
                slots = torch.randperm(self.capacity, generator=self.generator, device=self.device)[:k]
            n = slots.shape[0]
        self.drawn = None
        self.rays_o[slots] = rays_o[hardest[:n]].to(self.device, torch.float32)
        self.rays_d[slots] = rays_d[hardest[:n]].to(self.device, torch.float32)
        self.rgb[slots] = rgb[hardest[:n]].to(self.device, torch.float32)
        self.geo[slots] = float("nan") if geo is None else geo[hardest[:n]].to(self.device, torch.float32)
        return slots


# ----------------------------------------------------------------------------- data and evaluation


def open_stores(store_dirs: list[Path], device: torch.device) -> tuple[list[ViewStore], dict]:
    """Load view stores onto ``device``; returns them and their shared render geometry.

    Geometry: ``{"near", "far", "ndc", "ndc_near"}``; stores that disagree raise DataError.
    """
    if not store_dirs:
        raise R2LError("train_student needs at least one view store folder")
    stores = [ViewStore(Path(p), device=device) for p in store_dirs]
    geom = store_geometry(stores[0])
    for store in stores[1:]:
        _check_geometry(store_geometry(store), geom, store.folder)
    return stores, geom


def store_geometry(store: ViewStore) -> dict:
    """``{"near", "far", "ndc", "ndc_near"}`` of a store (render-space sampling range)."""
    m = store.meta
    if "near" not in m or "far" not in m:
        raise DataError(store.folder / "meta.json", "lacks near/far")
    return {"near": float(m["near"]), "far": float(m["far"]), "ndc": bool(m["ndc"]),
            "ndc_near": float(m.get("ndc_near", 1.0))}


def _check_geometry(got: dict, want: dict, where) -> None:
    """Raise DataError when two render geometries differ."""
    same = got["ndc"] == want["ndc"] and all(math.isclose(got[k], want[k], abs_tol=1e-6) for k in ("near", "far", "ndc_near"))
    if not same:
        raise DataError(where, f"render geometry {got} differs from the other data's {want}")


def split_counts(n_rays: int, stores: list[ViewStore]) -> list[int]:
    """Fresh rays per store, proportional to each store's number of rays (sums to ``n_rays``)."""
    sizes = np.array([s.n_views * s.H * s.W for s in stores], dtype=np.float64)
    counts = np.floor(n_rays * sizes / sizes.sum()).astype(int)
    counts[-1] += n_rays - counts.sum()
    return counts.tolist()


def teacher_geometry(store: ViewStore, view: torch.Tensor, pix: torch.Tensor) -> torch.Tensor:
    """The teacher's depth and opacity at ``view, pix: (n,)`` as (n, 2) float32; NaN rows for stores without them
    (real views)."""
    if not store.has_depth:
        return torch.full((view.shape[0], 2), float("nan"), device=store.device)
    return torch.stack([store.depth_at(view, pix), store.alpha_at(view, pix)], dim=-1)


def fresh_batch(stores: list[ViewStore], counts: list[int], generator: torch.Generator):
    """Fresh random rays: ``rays_o, rays_d, rgb`` each (sum(counts), 3) and :func:`teacher_geometry` (sum(counts),
    2) on the stores' device."""
    parts = []
    for store, n in zip(stores, counts):
        if n > 0:
            view, pix, rgb = store.sample(n, generator)
            rays_o, rays_d = store.render_rays_at(view, pix)
            parts.append((rays_o, rays_d, rgb, teacher_geometry(store, view, pix)))
    return tuple(torch.cat(p, dim=0) for p in zip(*parts))


def view_indices(n_total: int, n_views: int) -> list[int]:
    """``n_views`` view indices evenly spread over ``n_total`` (all when n_views is 0 or >= n_total)."""
    if n_views <= 0 or n_views >= n_total:
        return list(range(n_total))
    return sorted(set(np.linspace(0, n_total - 1, n_views).round().astype(int).tolist()))


@torch.no_grad()
def store_psnr(model: torch.nn.Module, store: ViewStore, near: float, far: float, n_views: int, chunk: int) -> float:
    """Mean per-image PSNR (dB) of ``model`` on full views of ``store`` (deterministic points, float32).

    n_views: views scored, evenly spread (0 = all). chunk: rays per forward pass.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pix = torch.arange(store.H * store.W)
    psnrs = []
    for v in view_indices(store.n_views, n_views):
        rays_o, rays_d = store.render_rays_at(torch.full_like(pix, v), pix)
        pred = chunked(lambda o, d: model(o.to(device), d.to(device), near, far, train=False).float().cpu(),
                       rays_o, rays_d, chunk)
        gt = store.colors[v].float().cpu() / 255.0
        psnrs.append(psnr_from_mse(float((pred - gt).square().mean())))
    model.train(was_training)
    return float(np.mean(psnrs))


# ----------------------------------------------------------------------------- checkpoints


def _check_arch(config: dict, cfg: DistillConfig, where) -> None:
    """Raise R2LError when a stored config's student family or network differs from ``cfg``'s."""
    stored, name = stored_network(config), stored_family(config)
    wanted = dataclasses.asdict(cfg.net)
    if name != cfg.family or stored != wanted:
        raise R2LError(
            f"{where}: was trained with another student network ({name}: {stored}); the config asks for "
            f"{cfg.family}: {wanted}. Restore the old network settings or delete it to start over."
        )


def store_scene(meta: dict) -> dict:
    """The scene identity and camera a view store's ``meta`` records, in the form model files keep them."""
    return {"name": meta.get("scene"), "format": meta.get("scene_format"), "data_sha256": meta.get("data_sha256"),
            **meta.get("camera", {})}


def _load_init(path: Path, cfg: DistillConfig, geom: dict, scene: dict) -> dict:
    """A student file to continue from (any format, :func:`r2l.models.load.read_model_file`): weights, optimizer,
    step; checked against cfg and against the scene of the data it continues on (``scene``: :func:`store_scene`)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "student file to continue from not found")
    ckpt = read_model_file(path, STUDENT_KINDS, "student model")
    if "optimizer" not in ckpt:  # only a distilled student carries one (StudentTask.finish)
        raise DataError(path, f"cannot continue from it: a {ckpt['kind']} file without its optimizer state")
    _check_arch(ckpt["config"], cfg, path)
    _check_geometry({k: ckpt[k] for k in ("near", "far", "ndc", "ndc_near")}, geom, path)
    check_same_scene(ckpt["scene"], scene, path)
    return ckpt


def _read_checkpoint_v2(ckpt: dict, path: Path) -> dict:
    """A checkpoint of format 2 (weights, optimizer, config, rng, ``loop``: the loop state with its step and loss
    rows ``[steps done, loss]``, best, pool) in today's layout (:data:`r2l.core.checkpoint.CHECKPOINT_KEYS`). It
    does not record its kind: one that continues a student (``base_step`` above 0) is a finetuning's."""
    loop = ckpt["loop"]
    return {
        "stage": "student", "kind": "finetuned" if loop["base_step"] > 0 else "student", "config": ckpt["config"],
        "step": loop["step"], "weights": ckpt["weights"], "optimizer": ckpt["optimizer"], "rng": ckpt["rng"],
        "history": [[step, loss, psnr_from_mse(loss)] for step, loss in loop["history"]],
        "loop": {"base_step": loop["base_step"], "train_seconds": loop["train_seconds"],
                 "init_seconds": loop["init_seconds"], "val_history": loop["val_history"], "curve": loop["curve"],
                 "best": ckpt["best"]},
        "extra": {"pool": ckpt["pool"]},
    }


def _read_checkpoint_v1(ckpt: dict, path: Path) -> dict:
    """A checkpoint of format 1 (no ``format_version``): format 2's layout; the first ones have no ``pool``, no
    loop ``curve`` and a config of the early layout (:func:`r2l.models.students.early_student_config`)."""
    return _read_checkpoint_v2({"pool": None, **ckpt, "config": early_student_config(ckpt["config"]),
                                "loop": {"curve": [], **ckpt["loop"]}}, path)


CHECKPOINT_READERS = {1: _read_checkpoint_v1, 2: _read_checkpoint_v2, 3: read_checkpoint_v3}


def _generators(gens: tuple[torch.Generator, torch.Generator]) -> dict[str, torch.Generator]:
    """The loop's generators by name: ray sampling (CPU) and point jitter (training device)."""
    return {"batch": gens[0], "jitter": gens[1]}


# ----------------------------------------------------------------------------- the loop


def process_group() -> tuple[int, int]:
    """``(rank, world size)`` of this training process: ``(0, 1)`` unless torch.distributed is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def share(n: int, rank: int, world: int) -> slice:
    """The rows of ``n`` that process ``rank`` of ``world`` takes: ``n // world``, one more for the first
    ``n % world`` processes."""
    size, extra = divmod(n, world)
    start = rank * size + min(rank, extra)
    return slice(start, start + size + (rank < extra))


def pool_share(cfg: DistillConfig, rank: int, world: int) -> tuple[int, int]:
    """``(capacity, n_hard)`` of process ``rank``'s hard pool: its share ``h`` of the ``n_hard`` pool rays a step and
    ``ceil(hard_mul * batch_rays * h / n_hard)`` slots, so that every pool fills after ``ceil(hard_mul *
    batch_rays / n_hard)`` steps, as one process's pool does (whose capacity is ``hard_mul * batch_rays``)."""
    rows = share(cfg.n_hard, rank, world)
    h = rows.stop - rows.start
    return (-(-cfg.hard_mul * cfg.batch_rays * h // cfg.n_hard) if h else 0), h


def check_shares(cfg: DistillConfig, world: int) -> None:
    """R2LError unless each of ``world`` processes gets fresh rays and, when there are any, hard rays."""
    if cfg.batch_rays < world or 0 < cfg.n_hard < world:
        raise R2LError(f"student batch_rays {cfg.batch_rays} and its {cfg.n_hard} hard rays (hard_ratio "
                       f"{cfg.hard_ratio}) are too few to share among {world} training processes (GPUs)")


def train_step(model, optimizer, batch, pool: HardPool, geom: dict, cfg: DistillConfig, device, gen,
               rank: int = 0, world: int = 1, use_depth: bool = False) -> torch.Tensor:
    """One Adam step on fresh + pool rays; feeds the pool. Returns the loss (a tensor, not synchronised).

    batch: the GLOBAL fresh ``(rays_o, rays_d, rgb)`` each (batch_rays, 3) on ``device``, the same in every
    process. gen: the point-jitter generator, drawn for the global batch (fresh rays, then ``n_hard`` pool rays
    once the pools are full) as one process would. Process ``rank`` of ``world`` trains on its :func:`share` of
    both parts (its pool's rays standing for its share of the pool rays), its mean loss weighted by its share
    of the global batch. model: the network, or its DistributedDataParallel wrapper, which averages the
    processes' gradients: the gradient of the global batch's mean loss. use_depth: add the family's depth loss
    (:func:`uses_depth`); the returned loss is the colour MSE alone.
    """
    n_batch = batch[0].shape[0]
    fresh = share(n_batch, rank, world)
    rays_o, rays_d, rgb, geo = (x[fresh] for x in batch)
    n_fresh = rays_o.shape[0]
    hard = pool.draw()  # every pool fills at the same step (pool_share)
    n_global = n_batch + (0 if hard is None else cfg.n_hard)
    space = getattr(model, "module", model).space  # the network inside a DistributedDataParallel wrapper
    t = space.draw_t(geom["near"], geom["far"], n_global, cfg.net.n_points, True, gen, device)
    if world > 1:  # this process's rows of the global draw: its fresh rows, then its share of the pool rows
        hard_rows = share(n_global - n_batch, rank, world)
        t = torch.cat([t[fresh], t[n_batch + hard_rows.start:n_batch + hard_rows.stop]], dim=0)
    if hard is not None:
        rays_o, rays_d, rgb, geo = (torch.cat([a, b], dim=0) for a, b in zip((rays_o, rays_d, rgb, geo), hard))
    per_ray, extra = _per_ray_loss(model, rays_o, rays_d, rgb, geo, geom, cfg, device, t, use_depth)
    weight = per_ray.shape[0] * world / n_global  # 1 with equal shares
    loss = per_ray.mean() * weight
    optimizer.zero_grad(set_to_none=True)
    (loss if extra is None else loss + extra.mean() * weight).backward()
    optimizer.step()
    pool.add(rays_o[:n_fresh], rays_d[:n_fresh], rgb[:n_fresh], per_ray[:n_fresh].detach(), geo[:n_fresh])
    return loss.detach()


def _per_ray_loss(model, rays_o, rays_d, rgb, geo, geom: dict, cfg: DistillConfig, device, t, use_depth: bool):
    """``(colour MSE (n,), depth loss (n,) or None)`` of a forward pass on the rays (n, 3) with their teacher
    ``geo`` (n, 2) and point distances t (n, n_points); the depth loss (the family's ``depth_loss`` times its
    ``depth_weight``) when ``use_depth`` (:func:`uses_depth`)."""
    net = getattr(model, "module", model)  # the network inside a DistributedDataParallel wrapper
    with computing_in(device, cfg.precision):
        out = model(rays_o, rays_d, geom["near"], geom["far"], train=True, t=t, with_depth=use_depth)
    pred, aux = out if use_depth else (out, None)
    per_ray = (pred.float() - rgb).square().mean(dim=-1)
    if aux is None:
        return per_ray, None
    return per_ray, cfg.net.depth_weight * net.depth_loss(aux, geo, geom["far"])


def uses_depth(model, cfg: DistillConfig, stores: list[ViewStore]) -> bool:
    """Whether training adds the depth loss: the family predicts depth, its ``depth_weight`` is above 0 and some
    store holds the teacher's depth (pseudo-data does, real views do not)."""
    return bool(model.predicts_depth and cfg.net.depth_weight > 0 and any(s.has_depth for s in stores))


def warn_stale_depth(stores: list[ViewStore], space: RaySpace) -> None:
    """Warn about pseudo-data of an unbounded scene whose depths are not the teacher's median depth (written before
    r2l stored it, meta ``depth_kind``): their depth targets lie behind the surfaces."""
    if not space.contracted:
        return
    for store in (s for s in stores if s.has_depth and s.meta.get("depth_kind") != "median"):
        log.warning("pseudo-data %s holds the teacher's expected depth, which in an unbounded scene lies far behind "
                    "the surfaces (r2l now stores the median depth; measured: a student 1.9 dB worse): run the "
                    "same command with --forcerun pseudo_data_part to render it anew", store.folder)


def student_box(stores: list[ViewStore], ndc: bool, space: RaySpace, max_rays: int = 1 << 20) -> torch.Tensor:
    """The grids' box (2, 3) of a grid student (:func:`r2l.models.gridstudent.scene_box`) from the surface points of
    the stores' rays that the teacher saw as opaque (opacity above 0.5; contracted when ``space`` is): at most
    ``max_rays`` rays a store, taken at a fixed stride (so the box is the same on every run); the format's box
    when no store has depth."""
    points = []
    for store in (s for s in stores if s.has_depth):
        n = store.n_views * store.H * store.W
        idx = torch.arange(0, n, max(1, n // max_rays), device=store.device)
        view, pix = idx // (store.H * store.W), idx % (store.H * store.W)
        geo = teacher_geometry(store, view, pix)
        keep = geo[:, 1] > 0.5
        rays_o, rays_d = store.render_rays_at(view[keep], pix[keep])
        depth = surface_depth(geo[keep, 0], geo[keep, 1], float(store.meta["far"]))
        points.append(space.points(rays_o, rays_d, depth[:, None])[:, 0])
    box = scene_box(torch.cat(points).cpu() if points else None, ndc, contracted=space.contracted)
    log.info("student grid box %s (from %s)", [[round(v, 3) for v in row] for row in box.tolist()],
             f"{sum(len(p) for p in points)} surface points" if points else "the scene format")
    return box


def _global_mean(loss: torch.Tensor, world: int) -> torch.Tensor:
    """The global batch's mean loss: the mean of the processes' weighted losses (:func:`train_step`; itself in one
    process)."""
    if world == 1:
        return loss
    total = loss.clone()
    dist.all_reduce(total)
    return total / world


def _pick_val_fn(val_fn, val_store, stores, geom, cfg: DistillConfig, device) -> tuple[Callable, str]:
    """``(val_fn, description)``: the given one, else PSNR on ``val_store`` (a view-store folder), else on
    the first training store."""
    if val_fn is not None:
        return val_fn, "val_fn"
    if val_store is not None:
        store = ViewStore(Path(val_store), device=device)
        _check_geometry(store_geometry(store), geom, store.folder)
        source = f"val store {store.folder}"
    else:
        store = stores[0]
        source = f"training store {store.folder} (fit, not held out)"
    return (lambda model: store_psnr(model, store, geom["near"], geom["far"], cfg.val_views, cfg.chunk)), source


@dataclass
class StudentRun:
    """What one :func:`train_student` call trains, beside the config (the settings of a :class:`StudentTask`).

    kind: ``"student"`` (distillation) or ``"finetuned"``, the model file's kind; end_step: the step the stage ends
    at; stop_step: where this call stops (end_step, or earlier: ``max_steps``); select_on_val: write the
    best-validated weights instead of the last; val_fn(model) -> val PSNR, and val_source its description;
    out_path, resume_dir, history_path: the model file, the checkpoints' folder and the history CSV (None: none).
    """

    kind: str
    end_step: int
    stop_step: int
    select_on_val: bool
    val_fn: Callable[[torch.nn.Module], float]
    val_source: str
    out_path: Path
    resume_dir: Path
    history_path: Path | None = None


class StudentTask:
    """The student's part of :func:`r2l.stages.loop.run_loop`: its network, step, validation, checkpoint and file.

    Its checkpoints have the layout of every stage (:data:`r2l.core.checkpoint.CHECKPOINT_KEYS`: stage
    ``"student"``, kind ``student`` or ``finetuned``, ``rng`` the generators before the next batch was drawn,
    ``loop["best"]`` the best-validated weights when selecting on validation) with ``extra = {"pool": process 0's
    hard pool}``. stores: the view stores it trains on (:func:`open_stores`); gens: the ray-sampling and jitter
    generators; init: the student file it continues (None: a fresh network).
    """

    validate_first, stage = True, "student"
    readers = CHECKPOINT_READERS

    def __init__(self, cfg: DistillConfig, run: StudentRun, stores: list[ViewStore], gens: tuple,
                 init: dict | None):
        self.cfg, self.run, self.stores, self.gens, self.init = cfg, run, stores, gens, init
        self.name = self.kind = run.kind
        self.end_step, self.stop_step, self.select_on_val = run.end_step, run.stop_step, run.select_on_val
        self.resume_dir, self.history_path = Path(run.resume_dir), run.history_path
        self.rank, self.world = process_group()
        self.device, self.geom = stores[0].device, store_geometry(stores[0])
        fam, space = family(cfg.family), ray_space(stores[0].meta.get("camera"))
        box = student_box(stores, self.geom["ndc"], space) if fam.needs_box and init is None else torch.zeros(2, 3)
        self.model = fam.build(cfg.net, box, space).to(self.device)  # (a continued grid student loads its box)
        self.optimizer = torch.optim.Adam(self.model.param_groups(), lr=cfg.lr, betas=(0.9, 0.999),
                                          fused=self.device.type == "cuda")
        self.counts = split_counts(cfg.batch_rays, stores)
        self.use_depth = uses_depth(self.model, cfg, stores)
        if self.use_depth:
            warn_stale_depth(stores, space)

    def check(self, ckpt: dict) -> None:
        """Raise when ``ckpt`` cannot be resumed: another network or start step (R2LError), missing keys."""
        _check_arch(ckpt["config"], self.cfg, self.resume_dir)
        base = int(self.init["step"]) if self.init else 0
        if ckpt["loop"]["base_step"] != base:
            raise R2LError(f"{self.resume_dir}: its checkpoints continue a run started at step "
                           f"{ckpt['loop']['base_step']}, not {base}; use another resume folder or delete it")
        check_state_dict(ckpt["weights"], self.model)
        _ = ckpt["optimizer"]["state"], ckpt["rng"]["batch"], ckpt["extra"]["pool"]

    def restore(self, ckpt: dict | None) -> LoopState:
        """Load the checkpoint, else the ``init`` student, else nothing; then the hard pool, the DDP wrapper and
        the first batch."""
        pool = None
        if ckpt is not None:
            state = self._load(ckpt["weights"], ckpt["optimizer"], ckpt)
            pool = ckpt["extra"]["pool"]  # one process: the checkpoint's pool; several: each rebuilds its own
        elif self.init:
            state = self._load(self.init["weights"], self.init["optimizer"], None)
        else:
            state = LoopState()
        self.pool = HardPool(*pool_share(self.cfg, self.rank, self.world), self.device,
                             seed=(self.cfg.seed + 2 + state.step) * self.world + self.rank)
        if pool is not None and self.world == 1:
            self.pool.load_state_dict(pool)
        self.net = self.model if self.world == 1 else DistributedDataParallel(
            self.model, device_ids=[self.device] if self.device.type == "cuda" else None)
        self._log_start(state)
        self.batch = fresh_batch(self.stores, self.counts, self.gens[0])
        return state

    def _load(self, weights: dict, optimizer: dict, ckpt: dict | None) -> LoopState:
        """Load weights and optimizer; from a checkpoint also the generators and the loop state."""
        self.model.load_state_dict(weights)
        self.optimizer.load_state_dict(optimizer)
        if ckpt is None:  # the init student: its step goes on
            seconds = float(self.init["metrics"].get("train_seconds", 0.0))
            return LoopState(step=int(self.init["step"]), base_step=int(self.init["step"]), init_seconds=seconds)
        set_rng_state(ckpt["rng"], _generators(self.gens), self.device)
        return resumed_state(ckpt)

    def _log_start(self, state: LoopState) -> None:
        log.info("student family %s (%d parameters)%s", self.cfg.family,
                 sum(p.numel() for p in self.model.parameters()),
                 "; depth loss against the teacher's depth in the pseudo-data" if self.use_depth else "")
        log.info("%s on %s (%s, %d process(es)): steps %d -> %d, %d fresh + %d hard rays a step", self.name,
                 ", ".join(str(s.folder) for s in self.stores), self.device, self.world, state.step, self.end_step,
                 self.cfg.batch_rays, self.cfg.n_hard)

    def step(self, step: int) -> StepOut:
        """:func:`train_step` at :func:`lr_at`; then note the generators and draw the next batch (while the
        device works on this step). The loss is the colour MSE over the step's fresh + hard rays."""
        lr = lr_at(step, self.cfg)
        set_group_lr(self.optimizer, lambda group: lr * group.get("lr_scale", 1.0))
        loss = train_step(self.net, self.optimizer, self.batch, self.pool, self.geom, self.cfg, self.device,
                          self.gens[1], self.rank, self.world, self.use_depth)
        self.rng = rng_state(_generators(self.gens), self.device)  # what a resume restarts from
        self.batch = fresh_batch(self.stores, self.counts, self.gens[0])
        return StepOut(loss, None, lr)

    def reduce(self, loss: torch.Tensor) -> torch.Tensor:
        return _global_mean(loss, self.world)

    def validate(self, step: int) -> float:
        psnr = float(self.run.val_fn(self.model))
        log.info("step %d: val PSNR %.2f dB", step, psnr)
        return psnr

    def state_dict(self) -> dict:
        """Its part of a checkpoint: config, weights, optimizer, rng and ``extra = {"pool"}``."""
        return {"config": dataclasses.asdict(self.cfg), "weights": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "rng": self.rng, "extra": {"pool": self.pool.state_dict()}}

    def finish(self, state: LoopState) -> dict:
        """Write the student file atomically (the best-validated weights when ``select_on_val``; process 0 only);
        return its metrics."""
        last_step, last_psnr = state.val_history[-1]
        if self.select_on_val:
            chosen = state.best
        else:
            chosen = {"psnr": last_psnr, "step": last_step, "weights": cpu_weights(self.model)}
        metrics = self._metrics(state, chosen)
        if self.rank != 0:
            return {"finished": True, **metrics}
        out = {"weights": chosen["weights"], "config": dataclasses.asdict(self.cfg), "kind": self.kind, **self.geom,
               "scene": store_scene(self.stores[0].meta), "step": int(chosen["step"]), "metrics": metrics}
        if self.kind == "student":  # a distilled student carries its optimizer so finetuning can continue it
            out["optimizer"] = self.optimizer.state_dict()
        save_model_file(out, self.run.out_path)
        log.info("%s written to %s: val PSNR %.2f dB (step %d; %.2f dB at the start), %.0f s", self.name,
                 self.run.out_path, chosen["psnr"], chosen["step"], metrics["val_psnr_before"], state.train_seconds)
        return {"finished": True, **metrics}

    def _metrics(self, state: LoopState, chosen: dict) -> dict:
        """The chosen weights' val PSNR and step, the first and last validations, the validation's source, the
        rays a step and :func:`r2l.stages.loop.common_metrics`."""
        return {
            "val_psnr": chosen["psnr"], "val_step": chosen["step"], "val_psnr_before": state.val_history[0][1],
            "val_psnr_last": state.val_history[-1][1], "val_source": self.run.val_source,
            "rays_per_step": self.cfg.batch_rays + self.cfg.n_hard, **common_metrics(self, state),
        }


def train_student(
    store_dirs: list[Path],
    cfg: DistillConfig,
    out_path: str | Path,
    resume_dir: str | Path,
    init_from: Path | None = None,
    val_fn: Callable[[torch.nn.Module], float] | None = None,
    max_steps: int | None = None,
    val_store: Path | None = None,
    n_steps: int | None = None,
    select_on_val: bool = False,
    kind: str = "student",
    history_path: str | Path | None = None,
) -> dict:
    """Train (or continue) a student on the rays of ``store_dirs``; write ``out_path``; return its metrics.

    init_from: a student file to continue from (weights, optimizer, step); the stage then trains ``n_steps``
    (default ``cfg.steps``) steps beyond its step. val_fn(model) -> PSNR overrides the default validation
    (``store_psnr`` on ``val_store``, else on the first training store). select_on_val: write the
    best-validated weights instead of the last. max_steps: stop at this global step with a checkpoint and
    return ``{"finished": False, ...}`` without writing ``out_path`` (the next call resumes).
    history_path: where the training history CSV goes (none written without it). Run in each of several
    processes (torch.distributed initialised), each trains on its share of every batch and only the first writes
    (module docstring; :mod:`r2l.stages.distributed` launches them).
    """
    rank, world = process_group()
    check_shares(cfg, world)
    device = pick_device(cfg.device)
    gens = (seed_everything(cfg.seed),  # ray sampling (CPU); the same in every process, as is the jitter
            torch.Generator(device=device).manual_seed(cfg.seed + 1))  # points along rays (on the device)
    stores, geom = open_stores(store_dirs, device)
    cfg = resolve_lr_decay(cfg, geom["ndc"])
    init = _load_init(init_from, cfg, geom, store_scene(stores[0].meta)) if init_from is not None else None
    end_step = (int(init["step"]) if init else 0) + (cfg.steps if n_steps is None else int(n_steps))
    stop_step = end_step if max_steps is None else min(end_step, int(max_steps))
    val_fn, val_source = _pick_val_fn(val_fn, val_store, stores, geom, cfg, device)
    run = StudentRun(kind, end_step, stop_step, select_on_val, val_fn, val_source, Path(out_path), Path(resume_dir),
                     None if history_path is None else Path(history_path))
    task = StudentTask(cfg, run, stores, gens, init)
    result = run_loop(task, cfg.log_every, cfg.val_every, cfg.ckpt_every)
    if world > 1:
        dist.barrier()  # when any process returns, the first one's files are written
    return result


def finetune_student(
    student_ckpt: Path,
    real_store: Path,
    val_store: Path,
    cfg: DistillConfig,
    steps: int,
    out_path: str | Path,
    resume_dir: str | Path,
    max_steps: int | None = None,
    val_fn: Callable[[torch.nn.Module], float] | None = None,
    history_path: str | Path | None = None,
) -> dict:
    """Finetune a distilled student on the real training rays, selecting on the validation store.

    Continues ``student_ckpt`` (weights, optimizer, step: the lr schedule goes on from there) for ``steps``
    steps (the paper runs 1.2M -> 1.6M; the authors note ~1k can do) with the same batch and mining; validates
    on ``val_store`` before and every ``val_every`` steps and writes the best (kind "finetuned") with its val
    PSNR and step. When the validation views are training views (:meth:`Scene.views_in_train`: LLFF's val views
    are every 8th training view, a photos scene's are training photos), choosing the best of them would reward
    overfitting and could not see it, so the LAST checkpoint is written instead, with a log line saying so.
    Holding views out of the teacher's and student's training set instead would change what they train on against
    the authors' protocol.
    max_steps, val_fn, history_path: as in :func:`train_student`.
    """
    select = not read_meta(val_store).get("views_in_train", False)
    if not select:
        log.warning("the validation views of %s are training views (LLFF and photos scenes have no validation "
                    "split of their own): keeping the last finetuning checkpoint, not the best on them", val_store)
    return train_student(
        [Path(real_store)], cfg, out_path, resume_dir, init_from=Path(student_ckpt), val_fn=val_fn,
        max_steps=max_steps, val_store=Path(val_store), n_steps=steps,
        select_on_val=select, kind="finetuned", history_path=history_path,
    )
