"""The R2L student: a deep residual MLP "neural light field" that renders a ray in one network pass.

A ray is represented by ``n_points`` points between ``near`` and ``far`` in render space (NDC for
forward-facing scenes, where near = 0 and far = 1; the authors sampled world-space rays there).
Their xyz coordinates are concatenated (48 values), positionally encoded (``[x, sin(2^k x),
cos(2^k x)]``, k < 10, no pi factor: 48 x 21 = 1008 inputs) and mapped to a colour; no view direction
goes in.

Sampling convention (the teacher's, :func:`r2l.models.render.stratified_t`, and the authors' code): the
deterministic distances are ``linspace(near, far, n_points)``, both ends included; while training
each point is drawn uniformly, independently per ray and per point, from its interval between the
midpoints of its neighbours (the first from ``[near, mid_0]``, the last from ``[mid_{n-2}, far]``).
Rendering uses the deterministic points, so a trained student is a deterministic function of the ray. In an
unbounded scene (``space``, :class:`r2l.models.contracted.RaySpace` with a split) the depths are drawn uniform
in the contraction's spacing and the points encoded are ``contract(o + t d)``.

Network (paper preset): ``Linear(1008, 256) + ReLU``; 43 residual blocks
``x + Linear(256, 256)(ReLU(Linear(256, 256)(x)))`` without an activation after the sum; a skip around
the whole body (body output + its input); ``Linear(256, 3) + sigmoid``. 88 linear layers,
5,917,187 parameters, 11.79 MFLOPs per ray (2 x multiply-adds of the linear weights; see
:mod:`r2l.models.flops`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from r2l.core.errors import R2LError
from r2l.models.contracted import RaySpace
from r2l.models.nerf import posenc, posenc_dim


@dataclass
class R2LNetConfig:
    """R2L student network; defaults are the paper's (nerf_v3.2 in the authors' code)."""

    n_points: int = 16  # points sampled along each ray (xyz concatenated -> 3 * n_points inputs)
    n_freqs: int = 10  # positional-encoding frequencies 2^0 .. 2^(n_freqs-1) per coordinate
    depth: int = 88  # number of linear layers: head + 2 per residual block + tail
    width: int = 256  # hidden width of every layer

    def __post_init__(self):
        if self.depth < 4 or self.depth % 2:
            raise R2LError(f"student depth must be even and >= 4 (head + 2 per block + tail), got {self.depth}")
        if self.n_points < 2 or self.n_freqs < 0 or self.width < 1:
            raise R2LError(
                f"student needs n_points >= 2, n_freqs >= 0, width >= 1 (got {self.n_points}, {self.n_freqs}, {self.width})"
            )

    @property
    def n_blocks(self) -> int:
        """Residual blocks: (depth - 2) // 2 (43 for the paper's 88 layers)."""
        return (self.depth - 2) // 2

    @property
    def in_dim(self) -> int:
        """Network input width: 3 * n_points * (1 + 2 * n_freqs) (1008 for the paper)."""
        return posenc_dim(3 * self.n_points, self.n_freqs)


class ResBlock(nn.Module):
    """``x + Linear(ReLU(Linear(x)))``: two linear layers, no activation after the sum."""

    def __init__(self, width: int):
        super().__init__()
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (n, width) -> (n, width)."""
        return x + self.fc2(torch.relu(self.fc1(x)))


class R2LNet(nn.Module):
    """The R2L residual MLP on the encoded points of a ray (see the module docstring); ``space``: where its
    points lie (:class:`r2l.models.contracted.RaySpace`)."""

    predicts_depth = False  # the student family interface (r2l.models.students): no depth output

    def __init__(self, cfg: R2LNetConfig, space: RaySpace = RaySpace()):
        super().__init__()
        self.cfg, self.space = cfg, space
        self.head = nn.Linear(cfg.in_dim, cfg.width)
        self.blocks = nn.Sequential(*[ResBlock(cfg.width) for _ in range(cfg.n_blocks)])
        self.tail = nn.Linear(cfg.width, 3)

    @property
    def n_points(self) -> int:
        return self.cfg.n_points

    def param_groups(self) -> list[dict]:
        """One Adam group of every parameter at the student's learning rate (the authors')."""
        return [{"params": list(self.parameters())}]

    def encode(self, rays_o: torch.Tensor, rays_d: torch.Tensor, near: float, far: float, train: bool,
               generator: torch.Generator | None = None, t: torch.Tensor | None = None) -> torch.Tensor:
        """rays_o, rays_d: (n, 3) render-space rays. Returns the network input (n, in_dim).

        t: (n, n_points) distances of the points along the rays, used instead of drawing them (``train`` and
        ``generator`` are then ignored): a loop that splits one batch over processes passes each its rows of the
        draw ``space.draw_t`` made for the whole batch.
        """
        if t is None:
            t = self.space.draw_t(near, far, rays_o.shape[0], self.cfg.n_points, train, generator, rays_o.device)
        pts = self.space.points(rays_o, rays_d, t)  # (n, n_points, 3)
        return posenc(pts.reshape(rays_o.shape[0], -1), self.cfg.n_freqs)

    def mlp(self, x: torch.Tensor) -> torch.Tensor:
        """x: (n, in_dim) encoded points. Returns rgb: (n, 3) in (0, 1)."""
        h = torch.relu(self.head(x))
        h = h + self.blocks(h)  # the global skip around the residual body
        return torch.sigmoid(self.tail(h))

    def forward(self, rays_o: torch.Tensor, rays_d: torch.Tensor, near: float, far: float, train: bool,
                generator: torch.Generator | None = None, t: torch.Tensor | None = None, with_depth: bool = False):
        """rays_o, rays_d: (n, 3) render-space rays; jittered points if ``train``; t: (n, n_points) given
        distances instead (see :meth:`encode`). Returns rgb: (n, 3) (``(rgb, None)`` with ``with_depth``: the
        family interface, :mod:`r2l.models.students`; this network predicts no depth)."""
        dtype = self.head.weight.dtype  # float32, float64 when made double
        rgb = self.mlp(self.encode(rays_o.to(dtype), rays_d.to(dtype), near, far, train, generator, t))
        return (rgb, None) if with_depth else rgb
