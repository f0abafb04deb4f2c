"""FLOPs per ray in the R2L paper's convention, counted on a real forward pass and in closed form.

Convention (R2L Table 2): FLOPs = 2 x the multiply-adds of the ``nn.Linear`` weights actually run;
biases, activations, positional encoding, sampling and compositing are not counted. A linear layer
applied to ``rows`` inputs costs ``in_features * out_features * rows`` multiply-adds.

- :func:`count_linear_macs` runs one forward pass with a forward hook on every ``nn.Linear`` (a global
  module hook, so a plain function that calls modules is traced too) and sums those products.
- :func:`flops_per_ray` traces a renderer's ``render_rays`` on ``n`` rays: ``2 x MACs / n``.
- :func:`nerf_closed_form_flops` and :func:`student_closed_form_flops` compute the same number from
  a config's layer sizes; the tests check the traced counts against them (paper presets: 303.82 M for
  the coarse + fine NeRF, 11.79 M for the 88-layer student).

Layers called through ``torch.nn.functional.linear`` directly, or hidden from hooks by compilation,
are not seen by the tracer; the closed forms are the cross-check.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

GRID_NOTE = (
    "grid teacher: counts only its nn.Linear MLPs on the samples actually evaluated after empty-space "
    "skipping (traced on real rays); the feature-grid interpolation is not counted, so this is a lower "
    "bound and not comparable one-to-one with the MLP NeRF's 303.82 M"
)
MLP_NOTE = "2 x multiply-adds of nn.Linear weights per ray (biases ignored), traced on real rays"


def count_linear_macs(module_or_fn: nn.Module | Callable, *inputs) -> int:
    """Multiply-adds of every ``nn.Linear`` run by one call ``module_or_fn(*inputs)`` (no grad).

    Each linear layer adds ``in_features * out_features * rows`` with ``rows = input.numel() // in_features``.
    """
    total = 0

    def hook(module: nn.Module, args, _output) -> None:
        nonlocal total
        if isinstance(module, nn.Linear) and args:
            rows = args[0].numel() // module.in_features
            total += module.in_features * module.out_features * rows

    handle = nn.modules.module.register_module_forward_hook(hook)
    try:
        with torch.no_grad():
            module_or_fn(*inputs)
    finally:
        handle.remove()
    return int(total)


def flops_per_ray(renderer_or_callable, rays_o: torch.Tensor, rays_d: torch.Tensor) -> float:
    """FLOPs per ray (2 x MACs / n_rays) of one real forward pass in eval mode.

    renderer_or_callable: a ray renderer (its ``render_rays`` is traced) or any callable
    ``f(rays_o, rays_d)``. rays_o, rays_d: (n_rays, 3) render-space rays.
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
        macs = count_linear_macs(fn, rays_o, rays_d)
    finally:
        if was_training:
            model.train()
    return 2.0 * macs / n


def flops_note(renderer) -> str:
    """What the traced FLOPs of ``renderer`` cover (its ``meta["kind"]`` names grid teachers)."""
    kind = str(getattr(renderer, "meta", {}).get("kind", ""))
    return GRID_NOTE if "grid" in kind.lower() else MLP_NOTE


def _posenc_width(d: int, n_freqs: int, include_input: bool) -> int:
    """Width of the NeRF positional encoding of d values: d x (include_input + 2 n_freqs)."""
    return d * (int(include_input) + 2 * n_freqs)


def nerf_macs_per_sample(cfg) -> int:
    """Linear multiply-adds of one NeRF network evaluation, from a ``NeRFConfig``'s layer sizes."""
    w, hw = cfg.width, cfg.head_width
    in_pts = _posenc_width(3, cfg.pos_freqs, cfg.include_input)
    in_dirs = _posenc_width(3, cfg.dir_freqs, cfg.include_input)
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
    in_dim = 3 * cfg.n_points * (1 + 2 * cfg.n_freqs)
    n_blocks = (cfg.depth - 2) // 2
    return in_dim * cfg.width + n_blocks * 2 * cfg.width * cfg.width + cfg.width * 3


def student_closed_form_flops(cfg) -> float:
    """FLOPs per ray of the R2L student (one network pass per ray): 11.79 M for the paper preset."""
    return 2.0 * student_macs_per_ray(cfg)
