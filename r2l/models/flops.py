"""FLOPs per ray in the R2L paper's convention: one measured counter, and closed forms to check it.

Convention (R2L Table 2): FLOPs = 2 x the multiply-adds of the linear layers actually run. A linear
layer applied to ``rows`` inputs costs ``in_features * out_features * rows`` multiply-adds; biases,
activations, positional encoding, sampling, grid interpolation (``grid_sample``) and compositing are
not counted.

- :func:`count_flops` runs one call under :class:`torch.utils.flop_counter.FlopCounterMode`, which
  counts at the ATen dispatch level (so ``nn.Linear``, ``F.linear`` and ``@`` are all seen), and keeps
  only the matrix products of :data:`MATMUL_OPS` (``mm``, ``addmm``, ``bmm``, ``baddbmm``: what linear
  layers run). FlopCounterMode counts ``(m x k) @ (k x n)`` as ``2 m k n``: already 2 x multiply-adds.
- :func:`flops_per_ray` measures a renderer's ``render_rays`` on ``n`` real rays: FLOPs / n.
- :func:`nerf_closed_form_flops` and :func:`student_closed_form_flops` give the same number from a
  config's layer sizes, without running a model; the tests check the measured counts against them
  (paper presets: 303.82 M for the coarse + fine NeRF, 11.79 M for the 88-layer student).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from r2l.models.nerf import posenc_dim

aten = torch.ops.aten

MATMUL_OPS = (aten.mm, aten.addmm, aten.bmm, aten.baddbmm)  # counted; convolutions, attention etc. are not

GRID_NOTE = (
    "grid teacher: counts only its linear layers (basis matrix and colour MLP) on the samples actually "
    "evaluated after empty-space skipping (measured on real rays); the feature-grid interpolation "
    "(grid_sample) is not counted, so this is a lower bound and not comparable one-to-one with the MLP "
    "NeRF's 303.82 M"
)
MLP_NOTE = "2 x multiply-adds of the linear layers per ray (biases ignored), measured on real rays"
GRID_STUDENT_NOTE = (
    "grid student: 2 x multiply-adds of its colour MLP per ray, measured on real rays, plus its feature lookups in "
    "closed form (2 FLOPs per corner value read: trilinear logits, bilinear tri-plane features and their products)"
)


def count_flops(fn: nn.Module | Callable, *inputs) -> int:
    """FLOPs (2 x multiply-adds) of the matrix products run by one call ``fn(*inputs)``, without grad.

    A product of an ``(m, k)`` by a ``(k, n)`` matrix counts ``2 m k n``; so a linear layer on an input
    ``(..., in_features)`` counts ``2 * in_features * out_features * rows`` with ``rows`` its leading size.
    """
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn(*inputs)
    counts = counter.get_flop_counts().get("Global", {})
    return int(sum(counts.get(op, 0) for op in MATMUL_OPS))


def flops_per_ray(renderer_or_callable, rays_o: torch.Tensor, rays_d: torch.Tensor) -> float:
    """FLOPs per ray of one real forward pass in eval mode: :func:`count_flops` / n_rays, plus the feature lookups a
    grid student's ``meta["lookup_flops_per_ray"]`` states (:func:`r2l.models.gridstudent.grid_student_lookup_flops`).

    renderer_or_callable: a ray renderer (its ``render_rays`` is measured, its ``model`` put in eval
    mode meanwhile) or any callable ``f(rays_o, rays_d)``. rays_o, rays_d: (n_rays, 3) render-space rays.
    """
    n = rays_o.shape[0]
    if n == 0:
        raise ValueError("flops_per_ray needs at least one ray")
    fn = getattr(renderer_or_callable, "render_rays", renderer_or_callable)
    model = getattr(renderer_or_callable, "model", renderer_or_callable)
    was_training = model.training if isinstance(model, nn.Module) else False
    if isinstance(model, nn.Module):
        model.eval()
    try:
        flops = count_flops(fn, rays_o, rays_d)
    finally:
        if was_training:
            model.train()
    return flops / n + float(getattr(renderer_or_callable, "meta", {}).get("lookup_flops_per_ray", 0.0))


def flops_note(renderer) -> str:
    """What the measured FLOPs of ``renderer`` cover (its ``meta["kind"]`` names grid teachers, ``meta["family"]``
    grid students)."""
    meta = getattr(renderer, "meta", {})
    if meta.get("family") == "grid":
        return GRID_STUDENT_NOTE
    return GRID_NOTE if "grid" in str(meta.get("kind", "")).lower() else MLP_NOTE


def nerf_macs_per_sample(cfg) -> int:
    """Linear multiply-adds of one NeRF network evaluation, from a ``NeRFConfig``'s layer sizes."""
    w, hw = cfg.width, cfg.head_width
    in_pts = posenc_dim(3, cfg.pos_freqs, cfg.include_input)
    in_dirs = posenc_dim(3, cfg.dir_freqs, cfg.include_input)
    trunk = in_pts * w + (cfg.depth - 1) * w * w
    if 0 <= cfg.skip < cfg.depth - 1:  # the layer after the skip also reads the encoded input
        trunk += in_pts * w
    heads = w * 1 + w * w + (w + in_dirs) * hw + hw * 3  # sigma, feature, colour hidden, rgb
    return trunk + heads


def nerf_closed_form_flops(cfg, ndc: bool = False) -> float:
    """FLOPs per ray of the coarse + fine NeRF: coarse on n_coarse samples, fine on n_coarse + n_fine.

    cfg: a ``NeRFConfig`` (its ``None`` fields resolved for ``ndc`` when it has ``resolved``).
    """
    if hasattr(cfg, "resolved"):
        cfg = cfg.resolved(ndc)
    return 2.0 * nerf_macs_per_sample(cfg) * (2 * cfg.n_coarse + cfg.n_fine)


def student_macs_per_ray(cfg) -> int:
    """Linear multiply-adds of one R2L student pass, from a ``R2LNetConfig``'s layer sizes.

    Head ``Linear(3 n_points (1 + 2 n_freqs), width)``, ``(depth - 2) / 2`` blocks of two
    ``Linear(width, width)``, tail ``Linear(width, 3)``.
    """
    in_dim = posenc_dim(3 * cfg.n_points, cfg.n_freqs)
    n_blocks = (cfg.depth - 2) // 2
    return in_dim * cfg.width + n_blocks * 2 * cfg.width * cfg.width + cfg.width * 3


def student_closed_form_flops(cfg) -> float:
    """FLOPs per ray of the R2L student (one network pass per ray): 11.79 M for the paper preset."""
    return 2.0 * student_macs_per_ray(cfg)
