"""The NeRF teacher network (Mildenhall et al. 2020, as in nerf-pytorch) and positional encoding.

One :class:`NeRF` is an 8x256 ReLU MLP on the positional encoding of a point, with the encoded
input concatenated again after layer 4 (``skip``); density comes from the trunk, colour from a
small view-dependent head on the trunk feature and the encoded view direction. The teacher pairs
a coarse and a fine copy (see :func:`r2l.models.render.render_rays_nerf`).

Cost, in the paper's convention (2 x multiply-adds of the linear layers, biases ignored; counted by
:mod:`r2l.models.flops`): one paper-preset network costs 593,408 multiply-adds per sample; a ray costs
``2 x 593,408 x (64 + 64 + 128) = 303.82 MFLOPs`` (coarse net on 64 samples, fine net on 64 + 128).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from r2l.core.errors import R2LError


def posenc(x: torch.Tensor, n_freqs: int, include_input: bool = True) -> torch.Tensor:
    """NeRF positional encoding with frequencies 2^0 .. 2^(n_freqs-1) (no pi factor).

    x: (..., d). Returns (..., d * (include_input + 2 * n_freqs)) float32 ordered
    ``[x, sin(2^0 x), cos(2^0 x), sin(2^1 x), cos(2^1 x), ...]`` where each entry is a d-vector. Always
    computed in float32 (float64 for a float64 x), whatever autocast says (sin(2^9 x) in bf16 would be noise).
    """
    with torch.autocast(device_type=x.device.type, enabled=False):
        return _posenc_full(x if x.dtype == torch.float64 else x.float(), n_freqs, include_input)


def _posenc_full(x: torch.Tensor, n_freqs: int, include_input: bool) -> torch.Tensor:
    """:func:`posenc` on float32 or float64 ``x: (..., d)``."""
    parts = [x] if include_input else []
    if n_freqs > 0:
        freqs = 2.0 ** torch.arange(n_freqs, dtype=x.dtype, device=x.device)
        xb = x[..., None, :] * freqs[:, None]  # (..., n_freqs, d)
        sc = torch.stack([torch.sin(xb), torch.cos(xb)], dim=-2)  # (..., n_freqs, 2, d)
        parts.append(sc.reshape(*x.shape[:-1], 2 * n_freqs * x.shape[-1]))
    return torch.cat(parts, dim=-1)


def posenc_dim(d: int, n_freqs: int, include_input: bool = True) -> int:
    """Output width of :func:`posenc` for d inputs: d x (include_input + 2 n_freqs)."""
    return d * (int(include_input) + 2 * n_freqs)


@dataclass
class NeRFConfig:
    """NeRF teacher network and sampling; defaults are the paper / nerf-pytorch values."""

    depth: int = 8  # linear layers in the density trunk
    width: int = 256  # hidden width of the trunk
    skip: int = 4  # encoded input is concatenated to the output of this trunk layer (0-based)
    pos_freqs: int = 10  # positional-encoding frequencies for xyz (63 inputs with the raw input)
    dir_freqs: int = 4  # positional-encoding frequencies for the view direction (27 inputs)
    include_input: bool = True  # the raw coordinates are part of the encoding
    head_width: int = 128  # hidden width of the view-dependent colour head (width // 2)
    n_coarse: int = 64  # stratified samples per ray for the coarse network
    n_fine: int | None = None  # extra importance samples for the fine net; None = 128 (Blender) / 64 (LLFF, NDC)
    raw_noise_std: float | None = None  # noise added to raw density while training; None = 0 (Blender) / 1 (LLFF)

    def resolved(self, ndc: bool, unbounded: bool = False) -> NeRFConfig:
        """The config with scene-dependent ``None`` fields filled in (LLFF values when ``ndc``; ``unbounded``: the
        Blender number of fine samples and the LLFF density noise, as no background is empty)."""
        n_fine = self.n_fine if self.n_fine is not None else (64 if ndc else 128)
        noise = self.raw_noise_std if self.raw_noise_std is not None else (1.0 if ndc or unbounded else 0.0)
        return replace(self, n_fine=n_fine, raw_noise_std=noise)


class NeRF(nn.Module):
    """One NeRF MLP (coarse or fine): a radiance field ``(pts, dirs) -> (raw sigma, rgb)``."""

    def __init__(self, cfg: NeRFConfig):
        super().__init__()
        if not -1 <= cfg.skip <= cfg.depth - 2:
            raise R2LError(f"nerf: skip={cfg.skip} must lie in [-1, depth - 2] = [-1, {cfg.depth - 2}] (-1: no skip)")
        self.cfg = cfg
        in_pts = posenc_dim(3, cfg.pos_freqs, cfg.include_input)
        in_dirs = posenc_dim(3, cfg.dir_freqs, cfg.include_input)
        layers = [nn.Linear(in_pts, cfg.width)]
        for i in range(1, cfg.depth):
            extra = in_pts if i == cfg.skip + 1 else 0
            layers.append(nn.Linear(cfg.width + extra, cfg.width))
        self.trunk = nn.ModuleList(layers)
        self.sigma = nn.Linear(cfg.width, 1)
        self.feature = nn.Linear(cfg.width, cfg.width)
        self.head = nn.Linear(cfg.width + in_dirs, cfg.head_width)
        self.rgb = nn.Linear(cfg.head_width, 3)

    def forward(self, pts: torch.Tensor, dirs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pts: (n, 3) points; dirs: (n, 3) unit view directions.

        Returns raw density ``sigma: (n,)`` (before the ReLU applied when compositing) and
        ``rgb: (n, 3)`` in [0, 1].
        """
        x = posenc(pts, self.cfg.pos_freqs, self.cfg.include_input)
        h = x
        for i, layer in enumerate(self.trunk):
            h = torch.relu(layer(h))
            if i == self.cfg.skip:
                h = torch.cat([x, h], dim=-1)
        sigma = self.sigma(h).squeeze(-1)
        d = posenc(dirs, self.cfg.dir_freqs, self.cfg.include_input)
        h = torch.relu(self.head(torch.cat([self.feature(h), d], dim=-1)))
        return sigma, torch.sigmoid(self.rgb(h))

