"""Volume rendering of unbounded scenes: fields evaluated at contracted points (:mod:`r2l.geometry.contraction`).

Both teachers render an unbounded scene from world rays as follows (their object and forward-facing rendering,
:mod:`r2l.models.render`, is untouched):

- depths ``t`` along each ray from :func:`contracted_t` (linear up to ``split``, then
  uniform in disparity, out to ``far``), jittered while training;
- the field sees the contracted points ``contract(o + t d)`` (all inside the ball of radius 2) and the unit view
  direction of the ray (in the world);
- compositing runs over contracted distances: ``delta_i = |contract(p_{i+1}) - contract(p_i)|``, so densities
  are per unit of contracted length; the last sample, at ``far`` (99% of the way to the contracted ball's edge),
  is opaque: every ray ends on the far background, whose colour the field gives there (its density is not used);
- colour ``sum_i w_i c_i`` (the background colour only fills the rounding left of ``1 - sum_i w_i``), and depth
  the median (:func:`median_depth`): where half the weight is reached, in the spacing coordinate. Not the
  expected depth ``sum_i w_i t_i``: the opaque last sample at ``far`` (hundreds of units away) drags that far
  behind the surface that gives a ray its colour whenever the field leaves a little weight to it.

Shapes: ``rays_o, rays_d: (n_rays, 3)`` world rays; ``t, sigma: (n_rays, n_samples)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from r2l.geometry.contraction import (
    CONTRACTED_AABB,
    contracted_distances,
    contracted_points,
    spacing,
    spacing_inverse,
)
from r2l.models.render import Field, _normal, blend, sample_pdf, shade_grid_samples, stratified_t


def contracted_t(
    near: float,
    far: float,
    split: float,
    n_rays: int,
    n_samples: int,
    jitter: bool,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Depths along rays, uniform in :func:`r2l.geometry.contraction.spacing` between ``near`` and ``far`` (linear
    up to ``split``, then uniform in disparity), including both ends: :func:`r2l.models.render.stratified_t` (and
    its jitter) in spacing space, mapped back. Needs ``0 < near < far`` and ``split > 0``. Returns ``t: (n_rays,
    n_samples)`` sorted along each ray.
    """
    lo, hi = spacing(torch.tensor(float(near)), split), spacing(torch.tensor(float(far)), split)
    s = stratified_t(float(lo), float(hi), n_rays, n_samples, jitter, generator, device)
    return spacing_inverse(s, split).clamp(float(near), float(far))


@dataclass(frozen=True)
class RaySpace:
    """Where a student's points along a ray lie (both families, :mod:`r2l.models.students`).

    ``split`` None (object and forward-facing scenes): depths ``t`` stratified linearly between near and far
    (:func:`r2l.models.render.stratified_t`), points ``o + t d``, and the ray coordinate ``u`` (what the grid
    student places and spaces its points in) is ``t`` itself. A split (an unbounded scene's ``sample_split``):
    depths from :func:`contracted_t`, points ``contract(o + t d)`` inside :data:`CONTRACTED_AABB`, and ``u =
    spacing(t, split)``, uniform where the samples are.
    """

    split: float | None = None

    @property
    def contracted(self) -> bool:
        return self.split is not None

    def draw_t(self, near: float, far: float, n_rays: int, n_points: int, jitter: bool,
               generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
        """Depths ``t: (n_rays, n_points)`` between near and far, sorted, jittered when ``jitter``."""
        if self.split is None:
            return stratified_t(near, far, n_rays, n_points, jitter, generator, device)
        return contracted_t(near, far, self.split, n_rays, n_points, jitter, generator, device)

    def coordinate(self, t: torch.Tensor) -> torch.Tensor:
        """The ray coordinate ``u: (...)`` of depths ``t: (...)``."""
        return t if self.split is None else spacing(t, self.split)

    def coordinate_of(self, t: float) -> float:
        """The ray coordinate of one depth (near or far)."""
        return float(t) if self.split is None else float(spacing(torch.tensor(float(t)), self.split))

    def depth(self, u: torch.Tensor) -> torch.Tensor:
        """The depths ``t: (...)`` of ray coordinates ``u: (...)`` (the inverse of :meth:`coordinate`)."""
        return u if self.split is None else spacing_inverse(u, self.split)

    def points(self, rays_o: torch.Tensor, rays_d: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The points (n, p, 3) a student reads at depths ``t: (n, p)`` along rays_o, rays_d: (n, 3)."""
        if self.split is None:
            return rays_o[:, None, :] + t[..., None] * rays_d[:, None, :]
        return contracted_points(rays_o, rays_d, t)

    def grid_coords(self, rays_o: torch.Tensor, rays_d: torch.Tensor, u: torch.Tensor,
                    box: torch.Tensor) -> list[torch.Tensor]:
        """``grid_sample`` coordinates (x, y, z: (n, p) each, [-1, 1] over ``box`` (2, 3)) of the points at ray
        coordinates ``u: (n, p)`` along rays_o, rays_d: (n, 3); linear in u without a split (no (n, p, 3) tensor)."""
        scale = 2.0 / (box[1] - box[0])
        if self.split is None:
            start, step = (rays_o - box[0]) * scale - 1.0, rays_d * scale  # at u = 0, per unit u
            return [start[:, k, None] + u * step[:, k, None] for k in range(3)]
        return list(((self.points(rays_o, rays_d, self.depth(u)) - box[0]) * scale - 1.0).unbind(-1))


def ray_space(camera: dict | None) -> RaySpace:
    """The :class:`RaySpace` of a stored scene camera (a view store's ``meta["camera"]``, a model file's
    ``scene``): contracted with its ``sample_split`` when it says ``unbounded``, else linear."""
    if camera and camera.get("unbounded"):
        return RaySpace(float(camera["sample_split"]))
    return RaySpace()


CONTRACTED_BOX = torch.tensor(CONTRACTED_AABB)  # (2, 3): the grids' box of a student that reads contracted points


def contracted_weights(sigma: torch.Tensor, s: torch.Tensor, noise_std: float = 0.0,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Compositing weights over contracted distances, the last sample opaque.

    sigma: (n_rays, n_samples) raw density (relu here; the last column is not used); s: (n_rays, n_samples) the
    contracted arc length at each sample (:func:`r2l.geometry.contraction.contracted_distances`). ``noise_std`` > 0
    adds Gaussian noise to the raw density first. ``alpha_i = 1 - exp(-relu(sigma_i) (s_{i+1} - s_i))``, the last
    alpha 1; ``w_i = alpha_i prod_{j<i} (1 - alpha_j)``. Returns (n_rays, n_samples) float32 summing to 1 per ray.
    """
    sigma, s = sigma.float(), s.float()
    if noise_std > 0:
        sigma = sigma + noise_std * _normal(tuple(sigma.shape), generator, sigma.device)
    alpha = 1.0 - torch.exp(-torch.relu(sigma[:, :-1]) * (s[:, 1:] - s[:, :-1]))
    alpha = torch.cat([alpha, torch.ones_like(alpha[:, :1])], dim=-1)
    trans = torch.cumprod(1.0 - alpha + 1e-10, dim=-1)
    trans = torch.cat([torch.ones_like(trans[:, :1]), trans[:, :-1]], dim=-1)
    return alpha * trans


def median_depth(weights: torch.Tensor, t: torch.Tensor, split: float) -> torch.Tensor:
    """The depth (n_rays,) at which the weights along each ray reach half their sum (weights that sum to one, as
    :func:`contracted_weights`'). Within sample i's interval to sample i + 1 (its alpha's; the last sample is a
    point at far) the light is absorbed as under a constant density, exactly: the fraction ``log(1 - r / T) /
    log(1 - alpha)`` of it (in :func:`r2l.geometry.contraction.spacing`) when ``r`` is the weight still to reach,
    ``T`` the transmittance into it and ``alpha = w_i / T``. weights, t: (n_rays, n_samples), t sorted."""
    u, w = spacing(t.float(), split), weights.float()
    cdf = torch.cumsum(w, dim=-1)
    half = 0.5 * cdf[:, -1:]
    n = t.shape[1]
    i = torch.searchsorted(cdf.contiguous(), half.contiguous()).clamp(max=n - 1)
    w_i = w.gather(1, i)
    before = cdf.gather(1, i) - w_i
    trans = (cdf[:, -1:] - before).clamp_min(1e-12)
    alpha = (w_i / trans).clamp(max=1.0)  # 1: log1p(-1) = -inf, and the fraction 0
    rest = ((half - before) / trans).clamp(0.0, 1.0 - 1e-6)
    frac = torch.where(alpha > 1e-6, torch.log1p(-rest) / torch.log1p(-alpha), rest / alpha.clamp_min(1e-12))
    nxt = (i + 1).clamp(max=n - 1)
    u_i = u.gather(1, i)
    depth = spacing_inverse(u_i + frac.clamp(0.0, 1.0) * (u.gather(1, nxt) - u_i), split)
    return torch.minimum(torch.maximum(depth, t.gather(1, i)), t.gather(1, nxt))[:, 0]  # float32 rounding near far


def _unit_dirs(rays_d: torch.Tensor, n_samples: int) -> torch.Tensor:
    """The unit direction of each ray repeated for its samples: (n_rays * n_samples, 3)."""
    return F.normalize(rays_d, dim=-1)[:, None, :].expand(-1, n_samples, -1).reshape(-1, 3)


def render_rays_grid_contracted(
    field,
    rays_o: torch.Tensor,
    rays_d: torch.Tensor,
    near: float,
    far: float,
    split: float,
    n_samples: int,
    background,
    train: bool,
    generator: torch.Generator | None = None,
    weight_threshold: float = 0.0,
) -> dict[str, torch.Tensor]:
    """A grid field (over the contracted box, :data:`r2l.geometry.contraction.CONTRACTED_AABB`) along world rays.

    As :func:`r2l.models.render.render_rays_grid` (``field`` has ``aabb``, ``occupied``, ``density``, ``color``;
    only samples in occupied cells get a density, only samples whose weight exceeds ``weight_threshold`` a colour),
    at the contracted points of :func:`contracted_t`'s depths, composited by
    :func:`contracted_weights`. Returns ``rgb: (n_rays, 3)``, ``acc, depth: (n_rays,)``.
    """
    t = contracted_t(near, far, split, rays_o.shape[0], n_samples, train, generator, rays_o.device)
    pts3 = contracted_points(rays_o, rays_d, t)
    weights_of = lambda sigma: contracted_weights(sigma, contracted_distances(pts3))  # noqa: E731
    out = shade_grid_samples(field, pts3, rays_d, t, weights_of, background, weight_threshold)
    return {"rgb": out["rgb"], "acc": out["acc"], "depth": median_depth(out["weights"], t, split)}


def _composite_field(field: Field, rays_o, rays_d, t, split: float, background, noise_std: float, generator) -> dict:
    """``field`` at the contracted points of depths ``t: (n_rays, n_samples)``, composited by
    :func:`contracted_weights`; returns :func:`r2l.models.render.blend`'s dict (with ``weights``), its depth the
    :func:`median_depth`."""
    pts3 = contracted_points(rays_o, rays_d, t)
    sigma, rgb = field(pts3.reshape(-1, 3), _unit_dirs(rays_d, t.shape[1]))
    weights = contracted_weights(sigma.reshape(t.shape), contracted_distances(pts3), noise_std, generator)
    return {**blend(weights, rgb.reshape(*t.shape, 3), t, background), "depth": median_depth(weights, t, split)}


def render_rays_nerf_contracted(
    coarse: Field,
    fine: Field | None,
    rays_o: torch.Tensor,
    rays_d: torch.Tensor,
    near: float,
    far: float,
    split: float,
    n_coarse: int,
    n_fine: int,
    background,
    train: bool,
    noise_std: float = 0.0,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Hierarchical NeRF rendering of an unbounded scene: coarse samples from
    :func:`contracted_t`, then ``n_fine`` importance samples drawn in spacing space
    (:func:`r2l.geometry.contraction.spacing`) from the coarse weights; the fine network sees both, sorted.
    As :func:`r2l.models.render.render_rays_nerf` otherwise. Returns ``rgb_coarse, rgb`` (and ``rgb_fine``):
    (n_rays, 3); ``acc, depth``: (n_rays,).
    """
    noise = noise_std if train else 0.0
    t = contracted_t(near, far, split, rays_o.shape[0], n_coarse, train, generator, rays_o.device)
    out_c = _composite_field(coarse, rays_o, rays_d, t, split, background, noise, generator)
    result = {"rgb_coarse": out_c["rgb"], "rgb": out_c["rgb"], "acc": out_c["acc"], "depth": out_c["depth"]}
    if fine is None or n_fine <= 0:
        return result
    s = spacing(t, split)
    s_fine = sample_pdf(0.5 * (s[:, 1:] + s[:, :-1]), out_c["weights"][:, 1:-1].detach(), n_fine, not train, generator)
    t_fine = spacing_inverse(s_fine.detach(), split).clamp(near, far)
    t_all, _ = torch.sort(torch.cat([t, t_fine], dim=-1), dim=-1)
    out_f = _composite_field(fine, rays_o, rays_d, t_all, split, background, noise, generator)
    result.update(rgb_fine=out_f["rgb"], rgb=out_f["rgb"], acc=out_f["acc"], depth=out_f["depth"])
    return result
