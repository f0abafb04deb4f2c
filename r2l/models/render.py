"""Volume rendering along rays, independent of any network.

A radiance field is any callable ``field(pts: (n, 3), dirs: (n, 3)) -> (sigma: (n,), rgb: (n, 3))``
where ``sigma`` is the raw density (a ReLU is applied here; fields that already return a
non-negative density are unaffected) and ``dirs`` are unit view directions.

Sampling convention (the nerf-pytorch one, used everywhere in this module): the ``n_samples``
deterministic distances are ``linspace(near, far, n_samples)`` *including* both ends; when
jittering (training) each sample is drawn uniformly from its interval between the midpoints of
its neighbours (the first from ``[near, mid_0]``, the last from ``[mid_{n-2}, far]``).

Compositing follows NeRF: ``delta_i = t_{i+1} - t_i`` (the last one 1e10) times ``|rays_d|``,
``alpha_i = 1 - exp(-relu(sigma_i) delta_i)``, weights ``w_i = alpha_i prod_{j<i}(1 - alpha_j)``,
colour ``sum_i w_i c_i + (1 - sum_i w_i) background``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from r2l.geometry.rays import get_rays, ndc_rays

Field = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _uniform(shape: tuple[int, ...], generator: torch.Generator | None, device) -> torch.Tensor:
    """U[0, 1) samples of ``shape`` on ``device``, drawn from ``generator`` (on its own device) if given."""
    if generator is None:
        return torch.rand(shape, device=device)
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def _normal(shape: tuple[int, ...], generator: torch.Generator | None, device) -> torch.Tensor:
    """N(0, 1) samples of ``shape`` on ``device`` (see :func:`_uniform`)."""
    if generator is None:
        return torch.randn(shape, device=device)
    return torch.randn(shape, generator=generator, device=generator.device).to(device)


def stratified_t(
    near: float,
    far: float,
    n_rays: int,
    n_samples: int,
    jitter: bool,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Distances along rays: ``linspace(near, far, n_samples)``, jittered between midpoints if ``jitter``.

    The teachers' and the student's samples (:mod:`r2l.models.r2lnet`). The jitter is one
    ``U[0, 1)`` draw of shape ``(n_rays, n_samples)`` from ``generator`` (on its own device, then
    moved), or from the global RNG if None. Returns ``t: (n_rays, n_samples)`` sorted along each ray,
    within ``[near, far]``.
    """
    t = torch.linspace(near, far, n_samples, device=device).expand(n_rays, n_samples)
    if not jitter:
        return t.contiguous()
    mids = 0.5 * (t[:, 1:] + t[:, :-1])
    upper = torch.cat([mids, t[:, -1:]], dim=-1)
    lower = torch.cat([t[:, :1], mids], dim=-1)
    return lower + (upper - lower) * _uniform((n_rays, n_samples), generator, device)


def sample_pdf(
    bins: torch.Tensor,
    weights: torch.Tensor,
    n_samples: int,
    deterministic: bool,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Inverse-CDF samples of the piecewise-constant density ``weights`` over ``bins``.

    bins: (n_rays, n_bins + 1) bin edges; weights: (n_rays, n_bins) (1e-5 is added to each so empty
    rays sample uniformly). ``deterministic`` uses evenly spaced ``u = linspace(0, 1, n_samples)``,
    else ``u ~ U[0, 1)``. Returns ``(n_rays, n_samples)`` distances (not sorted when random).
    """
    weights = weights + 1e-5
    pdf = weights / weights.sum(dim=-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, dim=-1)], dim=-1)
    n_rays, n_edges = cdf.shape
    if deterministic:
        u = torch.linspace(0.0, 1.0, n_samples, device=cdf.device).expand(n_rays, n_samples)
    else:
        u = _uniform((n_rays, n_samples), generator, cdf.device)
    u = u.contiguous()
    idx = torch.searchsorted(cdf.contiguous(), u, right=True)
    below = (idx - 1).clamp(0, n_edges - 1)
    above = idx.clamp(0, n_edges - 1)
    cdf_lo, cdf_hi = cdf.gather(1, below), cdf.gather(1, above)
    bin_lo, bin_hi = bins.gather(1, below), bins.gather(1, above)
    denom = cdf_hi - cdf_lo
    denom = torch.where(denom < 1e-5, torch.ones_like(denom), denom)
    return bin_lo + (u - cdf_lo) / denom * (bin_hi - bin_lo)


def alpha_weights(
    sigma: torch.Tensor, t: torch.Tensor, rays_d: torch.Tensor, noise_std: float = 0.0, generator=None
) -> torch.Tensor:
    """Compositing weights ``w_i = alpha_i prod_{j<i}(1 - alpha_j)`` (float32), see the module doc.

    sigma: (n_rays, n_samples) raw density; t: (n_rays, n_samples) sorted; rays_d: (n_rays, 3).
    ``noise_std`` > 0 adds Gaussian noise to the raw density first. Returns (n_rays, n_samples).
    """
    sigma, t = sigma.float(), t.float()
    deltas = torch.cat([t[:, 1:] - t[:, :-1], torch.full_like(t[:, :1], 1e10)], dim=-1)
    deltas = deltas * torch.linalg.norm(rays_d.float(), dim=-1, keepdim=True)
    if noise_std > 0:
        sigma = sigma + noise_std * _normal(tuple(sigma.shape), generator, sigma.device)
    alpha = 1.0 - torch.exp(-torch.relu(sigma) * deltas)
    trans = torch.cumprod(1.0 - alpha + 1e-10, dim=-1)
    trans = torch.cat([torch.ones_like(trans[:, :1]), trans[:, :-1]], dim=-1)
    return alpha * trans


def blend(weights: torch.Tensor, rgb: torch.Tensor, t: torch.Tensor, background) -> dict[str, torch.Tensor]:
    """Colour, opacity and depth from weights (n_rays, n_samples) and sample colours rgb (n_rays, n_samples, 3).

    Returns ``rgb: (n_rays, 3)`` (``sum w c + (1 - acc) background``), ``weights``, ``acc, depth: (n_rays,)``.
    """
    acc = weights.sum(dim=-1)
    bg = torch.as_tensor(background, dtype=torch.float32, device=rgb.device)
    color = (weights[..., None] * rgb.float()).sum(dim=-2) + (1.0 - acc)[:, None] * bg
    return {"rgb": color, "weights": weights, "acc": acc, "depth": (weights * t.float()).sum(dim=-1)}


def composite(
    sigma: torch.Tensor,
    rgb: torch.Tensor,
    t: torch.Tensor,
    rays_d: torch.Tensor,
    background,
    noise_std: float = 0.0,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Alpha-composite samples along rays (in float32).

    sigma: (n_rays, n_samples) raw density; rgb: (n_rays, n_samples, 3); t: (n_rays, n_samples) sorted;
    rays_d: (n_rays, 3) (deltas are scaled by ``|rays_d|``); background: (3,) colour (tensor or tuple).
    ``noise_std`` > 0 adds Gaussian noise to the raw density (NeRF's regulariser, training only).
    Returns ``rgb: (n_rays, 3)``, ``weights: (n_rays, n_samples)``, ``acc: (n_rays,)``, ``depth: (n_rays,)``.
    """
    return blend(alpha_weights(sigma, t, rays_d, noise_std, generator), rgb, t, background)


def _points(rays_o: torch.Tensor, rays_d: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flattened sample points ``(n_rays * n_samples, 3)`` and their unit view directions (same shape)."""
    pts = rays_o[:, None, :] + rays_d[:, None, :] * t[..., None]
    dirs = torch.nn.functional.normalize(rays_d, dim=-1)[:, None, :].expand_as(pts)
    return pts.reshape(-1, 3), dirs.reshape(-1, 3)


def query_field(field: Field, rays_o: torch.Tensor, rays_d: torch.Tensor, t: torch.Tensor):
    """Evaluate ``field`` at every sample. t: (n_rays, n_samples).

    Returns ``sigma: (n_rays, n_samples)``, ``rgb: (n_rays, n_samples, 3)``.
    """
    pts, dirs = _points(rays_o, rays_d, t)
    sigma, rgb = field(pts, dirs)
    return sigma.reshape(t.shape), rgb.reshape(*t.shape, 3)


def render_rays_nerf(
    coarse: Field,
    fine: Field | None,
    rays_o: torch.Tensor,
    rays_d: torch.Tensor,
    near: float,
    far: float,
    n_coarse: int,
    n_fine: int,
    background,
    train: bool,
    noise_std: float = 0.0,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Hierarchical NeRF rendering: coarse stratified samples, then fine importance samples.

    rays_o, rays_d: (n_rays, 3) render-space rays. The fine network sees the union of the coarse
    and the ``n_fine`` importance samples, sorted. ``train`` jitters samples, draws random ``u`` and adds
    density noise; otherwise everything is deterministic.
    Returns ``rgb_coarse, rgb_fine, rgb`` (the fine one when present): (n_rays, 3); ``acc, depth``: (n_rays,).
    """
    noise = noise_std if train else 0.0
    t = stratified_t(near, far, rays_o.shape[0], n_coarse, train, generator, rays_o.device)
    out_c = composite(*query_field(coarse, rays_o, rays_d, t), t, rays_d, background, noise, generator)
    result = {"rgb_coarse": out_c["rgb"], "rgb": out_c["rgb"], "acc": out_c["acc"], "depth": out_c["depth"]}
    if fine is None or n_fine <= 0:
        return result
    mids = 0.5 * (t[:, 1:] + t[:, :-1])
    t_fine = sample_pdf(mids, out_c["weights"][:, 1:-1].detach(), n_fine, not train, generator)
    t_all, _ = torch.sort(torch.cat([t, t_fine.detach()], dim=-1), dim=-1)
    out_f = composite(*query_field(fine, rays_o, rays_d, t_all), t_all, rays_d, background, noise, generator)
    result.update(rgb_fine=out_f["rgb"], rgb=out_f["rgb"], acc=out_f["acc"], depth=out_f["depth"])
    return result


def render_rays_grid(
    field,
    rays_o: torch.Tensor,
    rays_d: torch.Tensor,
    near: float,
    far: float,
    n_samples: int,
    background,
    train: bool,
    generator: torch.Generator | None = None,
    weight_threshold: float = 0.0,
) -> dict[str, torch.Tensor]:
    """Dense uniform sampling with empty-space skipping and colour only where it is seen, for a grid field.

    ``field`` has ``aabb: (2, 3)``, ``occupied(pts: (n, 3)) -> (n,) bool``, ``density(pts) -> (n,)`` and
    ``color(pts, dirs) -> (n, 3)``. Only samples inside the aabb whose occupancy cell is set get a density
    (index masking: skipped samples cost nothing; the rest have zero density); only samples whose
    compositing weight exceeds ``weight_threshold`` get a colour (TensoRF's ``rayMarch_weight_thres``;
    the others are black, which changes a pixel by less than the sum of their weights; 0 shades every
    sample with density). rays_o, rays_d: (n_rays, 3). Returns ``rgb: (n_rays, 3)``, ``acc, depth: (n_rays,)``.
    """
    t = stratified_t(near, far, rays_o.shape[0], n_samples, train, generator, rays_o.device)
    pts = rays_o[:, None, :] + rays_d[:, None, :] * t[..., None]
    return shade_grid_samples(field, pts, rays_d, t, lambda sigma: alpha_weights(sigma, t, rays_d), background,
                              weight_threshold)


def shade_grid_samples(field, pts: torch.Tensor, rays_d: torch.Tensor, t: torch.Tensor,
                       weights_of: Callable[[torch.Tensor], torch.Tensor], background,
                       weight_threshold: float) -> dict[str, torch.Tensor]:
    """A grid field's density at the samples ``pts: (n_rays, n_samples, 3)`` (at depths ``t: (n_rays,
    n_samples)`` along rays of direction ``rays_d: (n_rays, 3)``) inside its aabb whose occupancy cell is set,
    compositing weights ``weights_of(sigma: (n_rays, n_samples))``, colour only where a weight exceeds
    ``weight_threshold``, blended over ``background``. Returns ``rgb: (n_rays, 3)``, ``acc, depth: (n_rays,)``
    and ``weights: (n_rays, n_samples)``.
    """
    flat_pts = pts.reshape(-1, 3)
    aabb = field.aabb.to(flat_pts.device)
    idx = ((flat_pts >= aabb[0]) & (flat_pts <= aabb[1])).all(dim=-1).nonzero().squeeze(1)
    with torch.no_grad():
        idx = idx[field.occupied(flat_pts[idx])]
    sigma = torch.zeros(flat_pts.shape[0], device=flat_pts.device)
    if idx.numel() > 0:
        sigma = sigma.index_put((idx,), field.density(flat_pts[idx]).float())
    weights = weights_of(sigma.reshape(t.shape))
    with torch.no_grad():
        seen = (weights.detach().reshape(-1) > weight_threshold).nonzero().squeeze(1)
    rgb = torch.zeros(flat_pts.shape[0], 3, device=flat_pts.device)
    if seen.numel() > 0:
        dirs = torch.nn.functional.normalize(rays_d, dim=-1)[:, None, :].expand(-1, t.shape[1], -1).reshape(-1, 3)
        rgb = rgb.index_put((seen,), field.color(flat_pts[seen], dirs[seen]).float())
    out = blend(weights, rgb.reshape(*t.shape, 3), t, background)
    return {k: out[k] for k in ("rgb", "acc", "depth", "weights")}


def pose_rays(c2w, H: int, W: int, focal: float, ndc: bool, ndc_near: float | None,
              device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Render-space rays of a whole H x W view, built on ``device`` from its pose (no host-built rays copied).

    c2w: (4, 4) or (3, 4) camera-to-world pose (array or tensor). ndc: map the rays into NDC with the near plane
    at ``ndc_near`` (forward-facing scenes). Returns ``rays_o, rays_d``: (H * W, 3) float32 on ``device``; on the
    CPU exactly :meth:`r2l.data.scene.Scene.rays`'s.
    """
    c2w = torch.as_tensor(np.asarray(c2w.cpu() if torch.is_tensor(c2w) else c2w, dtype=np.float32), device=device)
    rays_o, rays_d = get_rays(c2w, H, W, focal)
    if ndc:
        rays_o, rays_d = ndc_rays(H, W, focal, ndc_near, rays_o, rays_d)
    return rays_o, rays_d
