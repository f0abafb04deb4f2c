"""Unbounded scenes: mip-NeRF 360's scene contraction and the sample spacing that goes with it.

A walk-around capture (an object photographed with the room or the street around it) has content at every
distance, out to the horizon. Its world is normalised so that the object of interest sits in the unit ball
(:func:`r2l.data.unbounded.normalise_unbounded`); the far background is then squashed into a shell by the
contraction of mip-NeRF 360 (Barron et al., CVPR 2022)::

    contract(x) = x                          if |x| <= 1
                  (2 - 1 / |x|) x / |x|      otherwise

which keeps the unit ball as it is and maps all of space into the ball of radius 2 (a point at infinity lands
on the sphere of radius 2). Fields of unbounded scenes (the grid teacher, the NeRF teacher, the students) are
evaluated at ``contract(pts)``, so a grid over the box ``[-2, 2]^3`` (:data:`CONTRACTED_AABB`) covers the whole
world, with its resolution spent mostly near the object.

Samples along a ray (:func:`r2l.models.contracted.contracted_t`) are spaced uniformly in ``g(t)``, the contraction's radial profile
with radius ``split`` (:func:`spacing`): linear in the depth ``t`` up to ``split`` and uniform in disparity
``1 / t`` beyond, so that far-away samples are about as far apart in contracted space as near ones.
Compositing uses distances in contracted space (:func:`contracted_distances`): a density is per unit of
contracted length, so a wall at the horizon needs no more density than one nearby.

Shapes: points ``x, pts: (..., 3)``; distances along rays ``t: (n_rays, n_samples)``.
"""

from __future__ import annotations

import torch

CONTRACTED_RADIUS = 2.0  # contract() maps all of space into the ball of this radius
CONTRACTED_AABB = ((-2.0, -2.0, -2.0), (2.0, 2.0, 2.0))  # the box (2, 3) that holds every contracted point
EPS = 1e-9  # smallest norm divided by


def contract(x: torch.Tensor) -> torch.Tensor:
    """mip-NeRF 360's contraction of points ``x: (..., 3)``: ``x`` inside the unit ball, ``(2 - 1/|x|) x/|x|``
    outside. Returns (..., 3) with norm < 2, continuous with its first derivative at ``|x| = 1``."""
    norm = torch.linalg.norm(x, dim=-1, keepdim=True)
    safe = norm.clamp(min=1.0)
    return torch.where(norm <= 1.0, x, (2.0 - 1.0 / safe) * x / safe)


def uncontract(y: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`contract` for points ``y: (..., 3)`` with ``|y| < 2``: ``y`` inside the unit ball,
    ``y / (|y| (2 - |y|))`` outside. Returns (..., 3) world points."""
    norm = torch.linalg.norm(y, dim=-1, keepdim=True)
    safe = norm.clamp(min=1.0, max=CONTRACTED_RADIUS - EPS)
    return torch.where(norm <= 1.0, y, y / (safe * (2.0 - safe)))


def spacing(t: torch.Tensor, split: float) -> torch.Tensor:
    """The sample spacing function ``g(t) = t`` for ``t <= split``, ``split (2 - split / t)`` beyond (the
    contraction's radial profile scaled by ``split``); ``t: (...)`` positive. Returns (...), below ``2 split``."""
    return torch.where(t <= split, t, split * (2.0 - split / t.clamp(min=split)))


def spacing_inverse(s: torch.Tensor, split: float) -> torch.Tensor:
    """The inverse of :func:`spacing`: ``s`` for ``s <= split``, ``split^2 / (2 split - s)`` beyond. s: (...)
    in ``[0, 2 split)``. Returns (...) depths."""
    room = (2.0 * split - s).clamp(min=EPS * split)
    return torch.where(s <= split, s, split * split / room)


def contracted_points(rays_o: torch.Tensor, rays_d: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Contracted sample points ``contract(o + t d)``: (n_rays, n_samples, 3), for rays_o, rays_d: (n_rays, 3)
    and t: (n_rays, n_samples)."""
    return contract(rays_o[:, None, :] + rays_d[:, None, :] * t[..., None])


def contracted_distances(pts: torch.Tensor) -> torch.Tensor:
    """Arc length along each ray in contracted space at every sample, from 0 at the first.

    pts: (n_rays, n_samples, 3) contracted points in ray order. Returns (n_rays, n_samples): ``s_0 = 0``,
    ``s_i = sum_{j < i} |pts_{j+1} - pts_j|`` (the chords between neighbouring samples).
    """
    chords = torch.linalg.norm(pts[:, 1:] - pts[:, :-1], dim=-1)
    return torch.cat([torch.zeros_like(chords[:, :1]), torch.cumsum(chords, dim=-1)], dim=-1)
