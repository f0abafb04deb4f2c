"""The teacher as a model: its config, its networks, rendering with them, and loading a trained one.

A teacher is either the paper's coarse + fine NeRF (:mod:`r2l.models.nerf`) or a TensoRF-style grid field
(:mod:`r2l.models.grid`); :func:`render` draws rays through either with :mod:`r2l.models.render`.
:func:`load_teacher` returns a :class:`Teacher`, the shared "ray renderer" interface:
``render_rays(rays_o: (n, 3), rays_d: (n, 3)) -> rgb: (n, 3)`` on render-space rays, eval mode,
deterministic, chunked, no grad, output on CPU; plus ``.model``, ``.meta``, ``.render_image`` and
``.render_outputs`` (rgb with the depth and opacity along each ray).
The stage that trains it is :mod:`r2l.stages.teacher`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from r2l.core.config import from_dict
from r2l.core.errors import R2LError
from r2l.core.runtime import check_precision, chunked, computing_in, pick_device
from r2l.geometry.contraction import CONTRACTED_AABB
from r2l.models.contracted import render_rays_grid_contracted, render_rays_nerf_contracted
from r2l.models.grid import GridConfig, GridField, scene_aabb
from r2l.models.nerf import NeRF, NeRFConfig
from r2l.models.render import pose_rays, render_rays_grid, render_rays_nerf

if TYPE_CHECKING:  # annotations only: models never import the data layer at run time
    from r2l.data.scene import Scene

KINDS = ("nerf", "grid")


@dataclass
class TeacherConfig:
    """Teacher training; defaults are the paper / nerf-pytorch values where those exist."""

    kind: str = "nerf"  # "nerf" (the paper's coarse + fine MLPs) or "grid" (r2l.models.grid, much faster)
    steps: int = 200_000  # optimisation steps (nerf-pytorch trains Blender scenes 200k steps)
    batch_rays: int = 1024  # rays per step, drawn across all training views
    lr: float = 5e-4  # NeRF Adam learning rate at step 0 (the grid uses grid.lr_grid / grid.lr_mlp)
    lr_decay_steps: int | None = None  # lr * 0.1 ** (step / lr_decay_steps); None: 500k Blender, 250k LLFF
    precrop_steps: int = 500  # Blender scenes: sample only the image centre for these first steps
    precrop_frac: float = 0.5  # side of that centre crop as a fraction of the image side
    val_every: int = 10_000  # validate every n steps (0 = only at the end; not a paper setting)
    val_views: int = 4  # validation views scored (evenly spread over the val split)
    ckpt_every: int = 10_000  # checkpoint into resume_dir every n steps (nerf-pytorch: 10k)
    log_every: int = 100  # loss/PSNR history interval in steps
    seed: int = 0  # seeds network init and all sampling
    device: str = "auto"  # "auto" (CUDA if present), "cuda", "cuda:1", "cpu"
    precision: str = "fp32"  # training arithmetic: fp32 (the authors'), tf32 or bf16 (r2l.core.runtime.PRECISIONS)
    chunk: int = 32768  # rays per chunk when rendering without grad (validation, inference); nerf-pytorch's 1024 x 32
    check_learned: bool = True  # stop with an error when val PSNR is below that of a mean-colour image
    nerf: NeRFConfig = field(default_factory=NeRFConfig)  # the MLP teacher (kind "nerf")
    grid: GridConfig = field(default_factory=GridConfig)  # the grid teacher (kind "grid")


def teacher_config_from_dict(d: dict) -> TeacherConfig:
    """Build a :class:`TeacherConfig` from a (possibly partial, nested) dict; unknown keys raise R2LError."""
    cfg = from_dict(TeacherConfig, dict(d), "teacher")
    if cfg.kind not in KINDS:
        raise R2LError(f"teacher: kind must be one of {', '.join(KINDS)}, got {cfg.kind!r}")
    check_precision(cfg.precision)
    return cfg


def build_model(cfg: TeacherConfig, info: dict) -> nn.ModuleDict:
    """The teacher's networks: ``{"coarse", "fine"}`` NeRFs or ``{"field"}`` GridField (over the contracted box
    :data:`r2l.geometry.contraction.CONTRACTED_AABB` for an unbounded scene, ``info["unbounded"]``)."""
    if cfg.kind == "nerf":
        return nn.ModuleDict({"coarse": NeRF(cfg.nerf), "fine": NeRF(cfg.nerf)})
    unbounded = bool(info.get("unbounded", False))
    aabb = torch.tensor(CONTRACTED_AABB) if unbounded else scene_aabb(cfg.grid, info["ndc"])
    return nn.ModuleDict({"field": GridField(cfg.grid.resolved(info["ndc"], unbounded), aabb)})


def render_unbounded(model: nn.ModuleDict, cfg: TeacherConfig, info: dict, rays_o, rays_d, train: bool,
                     generator=None) -> dict:
    """:func:`render` for an unbounded scene: world rays (n, 3), the fields at contracted points
    (:mod:`r2l.models.contracted`, samples spaced by ``info["sample_split"]``)."""
    near, far, split, bg = info["near"], info["far"], info["sample_split"], info["background"]
    if cfg.kind == "nerf":
        n = cfg.nerf
        return render_rays_nerf_contracted(model["coarse"], model["fine"], rays_o, rays_d, near, far, split,
                                           n.n_coarse, n.n_fine, bg, train, n.raw_noise_std, generator)
    return render_rays_grid_contracted(model["field"], rays_o, rays_d, near, far, split, cfg.grid.n_samples, bg,
                                       train, generator, cfg.grid.weight_threshold)


def render(model: nn.ModuleDict, cfg: TeacherConfig, info: dict, rays_o, rays_d, train: bool, generator=None) -> dict:
    """Render render-space rays (n, 3) with either teacher; returns at least ``rgb: (n, 3)``."""
    if info.get("unbounded"):
        return render_unbounded(model, cfg, info, rays_o, rays_d, train, generator)
    bg = info["background"]
    if cfg.kind == "nerf":
        n = cfg.nerf
        return render_rays_nerf(
            model["coarse"], model["fine"], rays_o, rays_d, info["near"], info["far"], n.n_coarse, n.n_fine,
            bg, train, n.raw_noise_std, generator,
        )
    return render_rays_grid(
        model["field"], rays_o, rays_d, info["near"], info["far"], cfg.grid.n_samples, bg, train, generator,
        cfg.grid.weight_threshold,
    )


@torch.no_grad()
def render_eval_outputs(model, cfg: TeacherConfig, info: dict, rays_o, rays_d, device,
                        precision: str = "fp32") -> dict[str, torch.Tensor]:
    """Deterministic chunked rendering without grad: ``rgb: (n, 3)`` in [0, 1], ``acc, depth: (n,)``, float32.

    precision: the arithmetic of the render (fp32 by default: quality is always scored from a float32 render).
    """
    was_training = model.training
    model.eval()
    try:
        def fn(o, d):
            with computing_in(device, precision):
                out = render(model, cfg, info, o.to(device), d.to(device), train=False)
            return {k: out[k].float() for k in ("rgb", "acc", "depth")}

        out = chunked(fn, rays_o, rays_d, cfg.chunk)
        out["rgb"] = out["rgb"].clamp(0.0, 1.0)
        return out
    finally:
        model.train(was_training)


def render_eval(model, cfg: TeacherConfig, info: dict, rays_o, rays_d, device, precision: str = "fp32") -> torch.Tensor:
    """Deterministic chunked rendering without grad: rgb (n, 3) float32 in [0, 1] on ``device``."""
    return render_eval_outputs(model, cfg, info, rays_o, rays_d, device, precision)["rgb"]


class Teacher:
    """A trained teacher as a ray renderer (eval mode, deterministic, chunked, no grad).

    ``precision``: the arithmetic ``render_rays`` uses; the training precision unless the loader was given one.
    """

    def __init__(self, model: nn.ModuleDict, cfg: TeacherConfig, info: dict, meta: dict, device: torch.device,
                 precision: str | None = None):
        self.model, self.cfg, self.info, self.meta, self.device = model, cfg, info, meta, device
        self.precision = check_precision(precision or cfg.precision)

    def render_rays(self, rays_o: torch.Tensor, rays_d: torch.Tensor) -> torch.Tensor:
        """rays_o, rays_d: (n, 3) render-space rays. Returns rgb: (n, 3) float32 in [0, 1] on CPU."""
        rays_o, rays_d = torch.as_tensor(rays_o, dtype=torch.float32), torch.as_tensor(rays_d, dtype=torch.float32)
        if rays_o.shape[0] == 0:
            return torch.zeros(0, 3)
        return render_eval(self.model, self.cfg, self.info, rays_o, rays_d, self.device, self.precision).cpu()

    def render_outputs(self, rays_o: torch.Tensor, rays_d: torch.Tensor) -> dict[str, torch.Tensor]:
        """rays_o, rays_d: (n, 3) render-space rays. Returns float32 on CPU: ``rgb: (n, 3)`` in [0, 1] (as
        :meth:`render_rays`), ``acc: (n,)`` the opacity ``sum_i w_i`` and ``depth: (n,)`` the expected distance
        ``sum_i w_i t_i`` along ``rays_o + t * rays_d`` (no background term); in an unbounded scene the median
        depth instead (:func:`r2l.models.contracted.median_depth`)."""
        rays_o, rays_d = torch.as_tensor(rays_o, dtype=torch.float32), torch.as_tensor(rays_d, dtype=torch.float32)
        if rays_o.shape[0] == 0:
            return {"rgb": torch.zeros(0, 3), "acc": torch.zeros(0), "depth": torch.zeros(0)}
        out = render_eval_outputs(self.model, self.cfg, self.info, rays_o, rays_d, self.device, self.precision)
        return {k: out[k].cpu() for k in ("rgb", "acc", "depth")}

    def render_image(self, scene: Scene | None, c2w, H: int, W: int, focal: float) -> torch.Tensor:
        """A full image (H, W, 3) float32 on CPU at pose ``c2w`` (4, 4), its rays built on the teacher's device;
        render space (NDC or not) from ``scene`` or the stored scene info."""
        ndc, ndc_near = (scene.ndc, scene.ndc_near) if scene is not None else (self.info["ndc"], self.info["ndc_near"])
        rays_o, rays_d = pose_rays(c2w, H, W, focal, bool(ndc), ndc_near, self.device)
        return self.render_rays(rays_o, rays_d).reshape(H, W, 3)


def early_teacher_config(config: dict) -> dict:
    """The training config of a format-0 teacher file in today's layout: its ``amp`` (bf16 autocast on CUDA) as
    ``precision`` (:func:`r2l.models.load.read_model_file` reads that format)."""
    config = dict(config)
    if "amp" in config:
        amp = config.pop("amp")
        config.setdefault("precision", "bf16" if amp and config.get("device") != "cpu" else "fp32")
    return config


def load_teacher(path: str | Path, device: str | torch.device | None = None, precision: str | None = None,
                 ckpt: dict | None = None) -> Teacher:
    """Load a teacher file written by :func:`train_teacher` (``weights_only=True``, any format) onto ``device``.

    precision: the arithmetic of its renders (None: the precision it was trained at). ckpt: the file's
    contents in today's layout when the caller has read them already (:func:`r2l.models.load.read_model_file`),
    so it is read once. DataError naming the file when it is missing, unreadable or no teacher file.
    """
    if ckpt is None:
        from r2l.models.load import TEACHER_KINDS, read_model_file  # (that module imports this one)

        ckpt = read_model_file(path, TEACHER_KINDS, "teacher")
    cfg = teacher_config_from_dict(ckpt["config"])
    device = pick_device(None if device is None else str(device))
    model = build_model(cfg, ckpt["scene"])
    model.load_state_dict(ckpt["weights"])
    model.to(device).eval()
    m = ckpt["metrics"]
    meta = {
        "kind": ckpt["kind"],
        "train_seconds": float(m["train_seconds"]),
        "step": int(ckpt["step"]),
        "device": m["device"],
        "device_name": m.get("device_name", m["device"]),
        "val_psnr": m["val_psnr"],
        "render_device": device.type,
        "precision": cfg.precision,
        "format_version": ckpt["format_version"],
    }
    return Teacher(model, cfg, ckpt["scene"], meta, device, precision)
