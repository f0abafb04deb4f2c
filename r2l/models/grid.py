"""A fast grid radiance field in pure PyTorch (TensoRF-VM): r2l's default teacher field.

Design choice
-------------
The field is TensoRF's vector-matrix ("VM") factorisation (Chen et al., ECCV 2022). A 3-D feature
grid is written as a sum of outer products of 2-D planes and 1-D lines: for the three axis pairs
``(x, y), (x, z), (y, z)`` a plane ``P_k: (C, R, R)`` and a line along the remaining axis
``L_k: (C, R)``; the feature of channel ``c`` at a point is ``P_k[c](a, b) * L_k[c](c_axis)``
(bilinear and linear interpolation). It was chosen over a DVGO-style dense grid because, in pure
PyTorch and on a CPU, cost is dominated by (1) the optimiser touching every parameter each step and
(2) the scatter of interpolation gradients: at side 128 the VM grids hold about 3 M parameters against
about 27 M for a dense 12-channel grid plus density, and their gradients land in small 2-D tensors
(``F.grid_sample`` on planes, batched over the three planes in one call). The same code runs on GPU
(TensoRF itself is pure PyTorch) and reaches high quality in a few thousand steps. Measured on
lego 100x100 with one CPU thread (1024 rays x 128 samples a step, R 64 -> 128, 16/32 components,
MLP width 64): 29.9 dB test PSNR after 1500 steps, about 3.5 minutes.

- Density: ``sigma = density_scale * act(sum_{k,c} P^d_k[c] L^d_k[c])`` (``density_components`` channels
  per plane; TensoRF's distance scale 25 folded in), so ``sigma`` is in world units (alpha =
  1 - exp(-sigma * delta), delta a world distance). ``act`` is ``softplus(x + density_shift)`` (shift -10:
  empty space starts empty, right for Blender scenes with a background to see through) or ``relu(x)``
  (TensoRF's LLFF choice: the random initial features give a thin fog everywhere, so every sample gets a
  gradient; with softplus(-10) a forward-facing scene, which has no empty background, learns nothing but
  a texture on the far plane and the occupancy grid then prunes it away). :meth:`GridConfig.resolved`
  picks the format's choice.
- Colour: the ``3 * app_components`` appearance products go through a linear "basis" matrix to
  ``app_dim`` features; an MLP ``[f, PE(f), d, PE(d)] -> width -> width -> 3`` (ReLU, sigmoid) adds
  the unit view direction ``d`` (TensoRF's ``MLP_Fea`` render module).
- Grids cover ``grid_aabb`` (inside the scene ``aabb``) with ``R`` nodes per axis at the box corners
  (``align_corners=True``); the features fade to zero within one node spacing outside it.

Occupancy grid (empty-space skipping)
-------------------------------------
``occupancy: (G, G, G)`` bool buffer over ``aabb`` (cell ``[i, j, k]`` spans
``aabb[0] + ([i, j, k] + [0, 1)) * cell``). It starts all True. ``update_occupancy(step)``, called
every training step, recomputes it every ``occupancy_every`` steps once ``step >= occupancy_warmup``:
a cell stays occupied when the max density over ``occupancy_samples`` jittered points in it reaches
``min(sigma_thr, mean cell density)`` with ``sigma_thr = -log(1 - occupancy_threshold) / step`` and
``step = |aabb diagonal| / n_samples`` (at least as long as the renderer's steps through the box, so
the test is conservative); the mean cap (as in instant-ngp) keeps a field that has not grown density
yet from being emptied. The result is dilated by one cell (3x3x3 max-pool).

Progressive upsampling and box shrinking: CONTRACT for the training loop
-------------------------------------------------------------------------
At each step in ``upsample_steps`` the grids are resampled from side ``resolution_init`` towards
``resolution`` (geometric schedule, TensoRF). When ``shrink`` is set and ``step >= occupancy_warmup``
the grid box first shrinks to the occupied cells' bounding box (plus one cell), so the same number
of nodes covers only the object. The ``nn.Parameter`` objects are kept but their ``.data`` changes
shape (and ``.grad`` is cleared), so ``update_occupancy`` returns True and the loop MUST then build
a new optimiser from ``param_groups`` (an old Adam fails loudly on the shape mismatch; it never
trains stale tensors silently). It returns False on every other step. Loading a state dict resizes
the grids to the saved shapes, so ``GridField(cfg, aabb).load_state_dict(sd)`` restores an upsampled
field exactly (then build the optimiser and load its state).

FLOPs
-----
Every dense layer is an ``nn.Linear`` (``basis`` and ``mlp``), so a FLOP count from hooks on
``nn.Linear`` sees the per-sample colour cost (``3 * app_components * app_dim`` multiply-adds for the
basis plus the MLP). It omits the grid interpolation (per sample about
``3 * (4 + 2 + 1) * (density_components + app_components)`` multiply-adds: bilinear plane, linear line,
product), the density sum and softplus, positional encodings, activations and occupancy lookups.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, fields, replace

import torch
import torch.nn.functional as F
from torch import nn

from r2l.core.errors import R2LError
from r2l.models.nerf import posenc, posenc_dim

log = logging.getLogger("r2l")

PLANE_AXES = ((0, 1), (0, 2), (1, 2))  # the axis pair (W index, H index) of each plane
LINE_AXES = (2, 1, 0)  # the axis of the line paired with each plane
GRID_PARAMS = ("density_planes", "density_lines", "app_planes", "app_lines")
OCCUPANCY_CHUNK = 1 << 16  # cells per chunk when refreshing the occupancy grid
ACTIVATIONS = ("softplus", "relu")  # density activations (TensoRF fea2denseAct)
CPU_CHANNEL_CHUNK = 4  # grid channels per grid_sample batch entry on CPU (see _interpolate)


@dataclass
class GridConfig:
    """TensoRF-VM grid field; defaults are TensoRF's lego settings adapted to 400x400 on a GPU."""

    resolution: int = 300  # final grid side R (nodes per axis of the grid box; TensoRF 300^3)
    resolution_init: int = 128  # grid side before the first upsampling step (TensoRF 128^3)
    upsample_steps: list[int] = field(default_factory=lambda: [2000, 3000, 4000, 5500, 7000])  # TensoRF
    shrink: bool = True  # shrink the grid box to the occupied region at upsample steps after warm-up
    density_components: int = 16  # VM channels per plane for density (TensoRF n_lamb_sigma)
    app_components: int = 48  # VM channels per plane for appearance (TensoRF n_lamb_sh)
    app_dim: int = 27  # appearance features after the basis matrix (TensoRF data_dim_color)
    mlp_width: int = 128  # hidden width of the colour MLP (two hidden layers)
    feature_freqs: int | None = None  # PE frequencies of the appearance features; None = 2 Blender / 0 LLFF (fea_pe)
    view_freqs: int | None = None  # PE frequencies of the view direction; None = 2 Blender / 0 LLFF (TensoRF view_pe)
    init_scale: float = 0.1  # std of the normal initialisation of planes and lines
    density_activation: str | None = None  # softplus | relu; None = softplus (Blender) / relu (LLFF, NDC), as TensoRF
    density_shift: float = -10.0  # added before the softplus (TensoRF density_shift; unused by relu)
    density_scale: float = 25.0  # multiplies the softplus (TensoRF distance_scale)
    n_samples: int = 512  # samples per ray between near and far for the renderer
    weight_threshold: float = 1e-4  # samples with a smaller compositing weight get no colour (TensoRF)
    aabb_scale: float = 1.5  # half side of the scene box (Blender; NDC scenes use z in [-1, 1])
    occupancy_resolution: int = 128  # side G of the occupancy grid
    occupancy_threshold: float = 1e-3  # alpha (over one sampling step) below which a cell is empty
    occupancy_samples: int = 4  # jittered density samples per cell when refreshing occupancy
    occupancy_every: int = 16  # refresh the occupancy grid every this many steps ...
    occupancy_warmup: int = 500  # ... from this step on (all cells occupied before)
    lr_grid: float = 0.02  # Adam learning rate of the planes and lines (TensoRF lr_init)
    lr_mlp: float = 1e-3  # Adam learning rate of the basis matrix and MLP (TensoRF lr_basis)
    occupancy_floor: float = 1e-3  # a refresh never keeps fewer than this fraction of cells (the densest; warns)
    l1_weight: float | None = None  # L1 on the density planes and lines; None = 8e-5 (Blender, TensoRF lego) / 0 (LLFF)
    tv_weight: float | None = None  # total variation on all planes; None = 0 (Blender) / 0.02 (LLFF, TensoRF's 1.0)

    def resolved(self, ndc: bool, unbounded: bool = False) -> "GridConfig":
        """The config with format-dependent ``None`` fields filled in (TensoRF's LLFF values when ``ndc``).

        ``unbounded`` (a walk-around with its surroundings, no empty background either): relu and no L1 as
        LLFF, no total variation and the Blender encodings (views from all round). Measured on the built-in
        unbounded scene (32x32, 30 views, 200 steps, test PSNR): relu 19.9 dB against softplus 15.6; total
        variation 0.02 17.8 dB, 0.002 18.6, none 19.9; no encodings (LLFF's) 17.2 against 17.8 with tv 0.02.
        """
        opaque = ndc or unbounded  # every ray ends on the scene: no empty space to keep empty
        return replace(
            self,
            density_activation=self.density_activation or ("relu" if opaque else "softplus"),
            l1_weight=self.l1_weight if self.l1_weight is not None else (0.0 if opaque else 8e-5),
            tv_weight=self.tv_weight if self.tv_weight is not None else (0.02 if ndc else 0.0),
            feature_freqs=self.feature_freqs if self.feature_freqs is not None else (0 if ndc else 2),
            view_freqs=self.view_freqs if self.view_freqs is not None else (0 if ndc else 2),
        )


def scene_aabb(cfg: GridConfig, ndc: bool) -> torch.Tensor:
    """The field's box ``(2, 3)``: ``+-aabb_scale`` on every axis, with z in [-1, 1] for NDC scenes."""
    half = torch.full((3,), float(cfg.aabb_scale))
    if ndc:
        half[2] = 1.0
    return torch.stack([-half, half])


def upsample_schedule(cfg: GridConfig) -> dict[int, int]:
    """Grid side after each upsample step: geometric from ``resolution_init`` to ``resolution``."""
    steps = sorted(set(cfg.upsample_steps))
    r0, r1 = math.log(cfg.resolution_init), math.log(cfg.resolution)
    n = len(steps)
    return {s: int(round(math.exp(r0 + (r1 - r0) * (i + 1) / n))) for i, s in enumerate(steps)}


def _replace_data(tensor: torch.Tensor, new: torch.Tensor) -> None:
    """Give a parameter or buffer new data of another shape, keeping the Python object; clears ``.grad``."""
    # autograd caches a leaf's gradient accumulator (holding the old shape) while any old graph is
    # alive, and drops it only on a dtype or device change: pass through another dtype to drop it.
    other = torch.float32 if new.dtype == torch.float64 else torch.float64
    tensor.data = torch.empty(0, dtype=other, device=new.device)
    tensor.data = new
    tensor.grad = None


def _check_config(cfg: GridConfig, aabb: torch.Tensor) -> None:
    """Raise R2LError on settings the field cannot work with."""
    problems = []
    unresolved = [f.name for f in fields(cfg) if getattr(cfg, f.name) is None]
    if unresolved:
        problems.append(f"{', '.join(unresolved)} unresolved: build the field from GridConfig.resolved(ndc)")
    if cfg.density_activation not in (None, *ACTIVATIONS):
        problems.append(f"density_activation must be one of {', '.join(ACTIVATIONS)} (got {cfg.density_activation!r})")
    if not 0.0 <= cfg.occupancy_floor <= 1.0:
        problems.append(f"occupancy_floor must be in [0, 1] (got {cfg.occupancy_floor})")
    if min(cfg.resolution, cfg.resolution_init) < 2:
        problems.append(f"resolution and resolution_init must be >= 2 (got {cfg.resolution}, {cfg.resolution_init})")
    if not 0.0 < cfg.occupancy_threshold < 1.0:
        problems.append(f"occupancy_threshold must be in (0, 1) (got {cfg.occupancy_threshold})")
    if min(cfg.n_samples, cfg.occupancy_resolution, cfg.occupancy_samples, cfg.occupancy_every) < 1:
        problems.append("n_samples, occupancy_resolution, occupancy_samples and occupancy_every must be >= 1")
    if min(cfg.density_components, cfg.app_components, cfg.app_dim, cfg.mlp_width) < 1:
        problems.append("density_components, app_components, app_dim and mlp_width must be >= 1")
    if not bool((aabb[1] > aabb[0]).all()):
        problems.append(f"the aabb max corner must exceed the min corner on every axis (got {aabb.tolist()})")
    if problems:
        raise R2LError("grid field config: " + "; ".join(problems))


def _interpolate(grids: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinear lookup of 3 batched grids at per-grid points. grids: (3, C, H, W); coords: (3, n, 1, 2).

    Returns (3, C, n) (zero padding, ``align_corners=True``). On CPU the channels are split into
    batch entries of ``CPU_CHANNEL_CHUNK`` so each lookup stays in cache (same numbers, 2-3x faster).
    """
    C, n = grids.shape[1], coords.shape[1]
    k = C
    if grids.device.type == "cpu":
        k = next(d for d in (CPU_CHANNEL_CHUNK, 2, 1) if C % d == 0)
    g = coords[:, None].expand(3, C // k, n, 1, 2).reshape(3 * (C // k), n, 1, 2)
    x = grids.reshape(3 * (C // k), k, *grids.shape[2:])
    out = F.grid_sample(x, g, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out.reshape(3, C, n)


def _total_variation(planes: torch.Tensor) -> torch.Tensor:
    """Sum over the planes of the mean squared neighbour differences along both axes. planes: (3, C, R, R)."""
    dh = (planes[:, :, 1:, :] - planes[:, :, :-1, :]).square().mean(dim=(1, 2, 3))
    dw = (planes[:, :, :, 1:] - planes[:, :, :, :-1]).square().mean(dim=(1, 2, 3))
    return (dh + dw).sum()


class GridField(nn.Module):
    """TensoRF-VM radiance field ``(pts, dirs) -> (sigma, rgb)`` with an occupancy grid (see module doc)."""

    def __init__(self, cfg: GridConfig, aabb: torch.Tensor):
        """cfg: the configuration. aabb: (2, 3) min and max corners of the scene box (render space)."""
        super().__init__()
        self.cfg = cfg
        aabb = torch.as_tensor(aabb, dtype=torch.float32).reshape(2, 3).clone()
        _check_config(cfg, aabb)
        self.register_buffer("aabb", aabb)
        self.register_buffer("grid_aabb", aabb.clone())
        G = cfg.occupancy_resolution
        self.register_buffer("occupancy", torch.ones(G, G, G, dtype=torch.bool))
        R, s = cfg.resolution_init, cfg.init_scale
        self.density_planes = nn.Parameter(s * torch.randn(3, cfg.density_components, R, R))
        self.density_lines = nn.Parameter(s * torch.randn(3, cfg.density_components, R, 1))
        self.app_planes = nn.Parameter(s * torch.randn(3, cfg.app_components, R, R))
        self.app_lines = nn.Parameter(s * torch.randn(3, cfg.app_components, R, 1))
        self.basis = nn.Linear(3 * cfg.app_components, cfg.app_dim, bias=False)
        n_in = posenc_dim(cfg.app_dim, cfg.feature_freqs) + posenc_dim(3, cfg.view_freqs)
        self.mlp = nn.Sequential(
            nn.Linear(n_in, cfg.mlp_width), nn.ReLU(),
            nn.Linear(cfg.mlp_width, cfg.mlp_width), nn.ReLU(),
            nn.Linear(cfg.mlp_width, 3),
        )
        nn.init.zeros_(self.mlp[-1].bias)

    @property
    def resolution(self) -> int:
        """Current grid side R."""
        return int(self.density_planes.shape[-1])

    @property
    def sample_step(self) -> float:
        """The step length used by the occupancy test: ``|aabb diagonal| / n_samples``."""
        return float(torch.linalg.norm(self.aabb[1] - self.aabb[0])) / self.cfg.n_samples

    # ------------------------------------------------------------------ evaluation
    def _coords(self, pts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """grid_sample coordinates of points. pts: (n, 3). Returns plane and line grids, each (3, n, 1, 2)."""
        box = self.grid_aabb
        x = (pts.float() - box[0]) / (box[1] - box[0]) * 2.0 - 1.0
        plane = torch.stack([x[:, [a, b]] for a, b in PLANE_AXES])
        line = torch.stack([x[:, c] for c in LINE_AXES])
        line = torch.stack([torch.zeros_like(line), line], dim=-1)
        return plane.unsqueeze(2), line.unsqueeze(2)

    @staticmethod
    def _vm(planes: torch.Tensor, lines: torch.Tensor, pc: torch.Tensor, lc: torch.Tensor) -> torch.Tensor:
        """Plane-times-line features. planes: (3, C, R, R); lines: (3, C, R, 1); pc, lc: (3, n, 1, 2).

        Returns (3, C, n); zero beyond one node spacing outside the grid box.
        """
        return _interpolate(planes, pc) * _interpolate(lines, lc)

    def _sigma(self, pc: torch.Tensor, lc: torch.Tensor) -> torch.Tensor:
        """Density (n,) from grid coordinates (see :meth:`_coords`) through ``density_activation``."""
        raw = self._vm(self.density_planes, self.density_lines, pc, lc).sum(dim=(0, 1))
        if self.cfg.density_activation == "relu":
            return self.cfg.density_scale * F.relu(raw)
        return self.cfg.density_scale * F.softplus(raw + self.cfg.density_shift)

    def density(self, pts: torch.Tensor) -> torch.Tensor:
        """Density only. pts: (n, 3). Returns sigma: (n,) >= 0."""
        return self._sigma(*self._coords(pts))

    def _rgb(self, pc: torch.Tensor, lc: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
        """Colour (n, 3) from grid coordinates (see :meth:`_coords`) and view directions dirs: (n, 3)."""
        app = self._vm(self.app_planes, self.app_lines, pc, lc)  # (3, C, n)
        feat = self.basis(app.permute(2, 0, 1).reshape(dirs.shape[0], 3 * self.cfg.app_components))
        d = F.normalize(dirs.float(), dim=-1)
        h = torch.cat([posenc(feat, self.cfg.feature_freqs), posenc(d, self.cfg.view_freqs)], dim=-1)
        return torch.sigmoid(self.mlp(h))

    def color(self, pts: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
        """Colour only (for renderers that shade just the samples with visible weight).

        pts: (n, 3); dirs: (n, 3) any length. Returns rgb: (n, 3) in [0, 1], equal to ``forward(...)[1]``.
        """
        return self._rgb(*self._coords(pts), dirs)

    def forward(self, pts: torch.Tensor, dirs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pts: (n, 3) points; dirs: (n, 3) view directions (any length; normalised here).

        Returns ``sigma: (n,)`` non-negative density (world units) and ``rgb: (n, 3)`` in [0, 1].
        """
        pc, lc = self._coords(pts)
        return self._sigma(pc, lc), self._rgb(pc, lc, dirs)

    # ------------------------------------------------------------------ occupancy
    def occupied(self, pts: torch.Tensor) -> torch.Tensor:
        """Whether each point's occupancy cell may hold density. pts: (n, 3). Returns (n,) bool.

        False outside ``aabb`` (the max faces count as inside).
        """
        G = self.occupancy.shape[0]
        rel = (pts.float() - self.aabb[0]) / (self.aabb[1] - self.aabb[0])
        inside = ((rel >= 0) & (rel <= 1)).all(dim=-1)
        ijk = (rel.nan_to_num(0.0) * G).clamp(0, G - 1).long()
        return inside & self.occupancy[ijk[:, 0], ijk[:, 1], ijk[:, 2]]

    def occupied_fraction(self) -> float:
        """Fraction of occupancy cells marked occupied (for logging)."""
        return float(self.occupancy.float().mean())

    def _cell_block(self) -> tuple[list[int], list[int]]:
        """Index range ``[lo, hi)`` per axis of the occupancy cells that overlap the grid box."""
        G = self.occupancy.shape[0]
        cell = (self.aabb[1] - self.aabb[0]) / G
        lo = ((self.grid_aabb[0] - self.aabb[0]) / cell).floor().clamp(0, G).long().tolist()
        hi = ((self.grid_aabb[1] - self.aabb[0]) / cell).ceil().clamp(0, G).long().tolist()
        return lo, hi

    @torch.no_grad()
    def cell_max_density(self, seed: int) -> torch.Tensor:
        """Max density over ``occupancy_samples`` jittered points per occupancy cell. Returns (G, G, G).

        Cells that do not overlap the grid box get 0 (no features there). ``seed`` fixes the jitter.
        """
        G, k = self.occupancy.shape[0], self.cfg.occupancy_samples
        dev = self.aabb.device
        out = torch.zeros(G, G, G, device=dev)
        lo, hi = self._cell_block()
        if any(h <= l for l, h in zip(lo, hi)):
            return out
        axes = [torch.arange(l, h, device=dev) for l, h in zip(lo, hi)]
        idx = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)
        cell = (self.aabb[1] - self.aabb[0]) / G
        gen = torch.Generator(device=dev).manual_seed(int(seed))
        best = torch.empty(idx.shape[0], device=dev)
        for i in range(0, idx.shape[0], OCCUPANCY_CHUNK):
            c = idx[i : i + OCCUPANCY_CHUNK]
            u = torch.rand(k, c.shape[0], 3, generator=gen, device=dev)
            pts = self.aabb[0] + (c.float() + u) * cell
            best[i : i + c.shape[0]] = self.density(pts.reshape(-1, 3)).reshape(k, -1).amax(dim=0)
        out[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = best.reshape(*[h - l for l, h in zip(lo, hi)])
        return out

    @torch.no_grad()
    def refresh_occupancy(self, seed: int = 0) -> None:
        """Recompute the occupancy grid from the current density (see module doc); ``seed`` fixes the jitter.

        Never keeps fewer than ``occupancy_floor`` of the cells: when the test would, the densest cells are
        kept instead and a warning says so (a field that prunes itself empty can never recover).
        """
        dens = self.cell_max_density(seed)
        sigma_thr = -math.log(1.0 - self.cfg.occupancy_threshold) / self.sample_step
        thr = min(sigma_thr, float(dens.mean()))
        keep = dens >= thr
        floor = max(1, math.ceil(self.cfg.occupancy_floor * dens.numel()))
        if int(keep.sum()) < floor:
            log.warning(
                "occupancy refresh would keep %d of %d cells (max density %.3g, threshold %.3g): keeping the %d "
                "densest instead; the field has little density, check the scene and the density settings",
                int(keep.sum()), dens.numel(), float(dens.max()), thr, floor,
            )
            keep = torch.zeros_like(keep).flatten()
            keep[dens.flatten().topk(floor).indices] = True
            keep = keep.reshape(dens.shape)
        occ = F.max_pool3d(keep.float()[None, None], kernel_size=3, stride=1, padding=1)[0, 0] > 0
        self.occupancy.copy_(occ)

    def update_occupancy(self, step: int) -> bool:
        """Call once per training step, after its optimiser step and before checkpointing it.

        Refreshes occupancy every ``occupancy_every`` steps from ``occupancy_warmup`` on, and at the
        ``upsample_steps`` shrinks/resamples the grids. Returns True when the grid parameters changed
        shape: the caller must then rebuild its optimiser from :meth:`param_groups`.
        """
        cfg = self.cfg
        warm = step >= cfg.occupancy_warmup
        refreshed = False
        if warm and (step - cfg.occupancy_warmup) % max(cfg.occupancy_every, 1) == 0:
            self.refresh_occupancy(seed=step)
            refreshed = True
        target = upsample_schedule(cfg).get(step)
        if target is None:
            return False
        box = self.grid_aabb.clone()
        if cfg.shrink and warm:
            if not refreshed:
                self.refresh_occupancy(seed=step)
            box = self.occupied_box()
        if target == self.resolution and torch.equal(box, self.grid_aabb):
            return False
        self.resample(box, target)
        log.info("step %d: grid side %d over box %s (%.1f%% of occupancy cells kept)", step, target,
                 [[round(v, 3) for v in corner] for corner in box.tolist()], 100 * self.occupied_fraction())
        return True

    def occupied_box(self) -> torch.Tensor:
        """Bounding box (2, 3) of the occupied cells grown by one cell, within the grid box.

        The grid box itself when no cell is occupied.
        """
        G = self.occupancy.shape[0]
        ijk = self.occupancy.nonzero()
        if ijk.shape[0] == 0:
            return self.grid_aabb.clone()
        cell = (self.aabb[1] - self.aabb[0]) / G
        lo = self.aabb[0] + (ijk.amin(dim=0).float() - 1) * cell
        hi = self.aabb[0] + (ijk.amax(dim=0).float() + 2) * cell
        return torch.stack([torch.maximum(lo, self.grid_aabb[0]), torch.minimum(hi, self.grid_aabb[1])])

    @torch.no_grad()
    def resample(self, box: torch.Tensor, R: int) -> None:
        """Resample every plane and line onto side ``R`` over ``box: (2, 3)`` (inside the current grid box).

        Keeps the Parameter objects (new ``.data``, ``.grad`` cleared); any optimiser must be rebuilt.
        """
        box = box.to(self.grid_aabb)
        t = torch.linspace(0.0, 1.0, R, device=box.device)[:, None]
        x = (box[0] + t * (box[1] - box[0]) - self.grid_aabb[0]) / (self.grid_aabb[1] - self.grid_aabb[0]) * 2 - 1
        plane_grid = []
        for a, b in PLANE_AXES:
            gb, ga = torch.meshgrid(x[:, b], x[:, a], indexing="ij")
            plane_grid.append(torch.stack([ga, gb], dim=-1))
        plane_grid = torch.stack(plane_grid)  # (3, R, R, 2)
        line = torch.stack([x[:, c] for c in LINE_AXES])[:, :, None]  # (3, R, 1)
        line_grid = torch.stack([torch.zeros_like(line), line], dim=-1)  # (3, R, 1, 2)
        for name in GRID_PARAMS:
            p = getattr(self, name)
            grid = plane_grid if name.endswith("planes") else line_grid
            _replace_data(p, F.grid_sample(p.data, grid, mode="bilinear", padding_mode="border", align_corners=True))
        self.grid_aabb.copy_(box)

    # ------------------------------------------------------------------ training helpers
    def param_groups(self, base_lr: float = 1.0) -> list[dict]:
        """Adam parameter groups: grids at ``base_lr * cfg.lr_grid``, basis + MLP at ``base_lr * cfg.lr_mlp``.

        ``base_lr`` is a MULTIPLIER (1.0 = the configured rates; pass a schedule's decay factor).
        """
        grids = [getattr(self, name) for name in GRID_PARAMS]
        nets = list(self.basis.parameters()) + list(self.mlp.parameters())
        return [
            {"params": grids, "lr": base_lr * self.cfg.lr_grid, "name": "grid"},
            {"params": nets, "lr": base_lr * self.cfg.lr_mlp, "name": "mlp"},
        ]

    def regularizer(self) -> torch.Tensor:
        """``l1_weight * L1(density planes and lines) + tv_weight * TV(all planes)``; a scalar tensor."""
        zero = self.density_planes.new_zeros(())
        l1 = tv = zero
        if self.cfg.l1_weight > 0:
            l1 = sum(p.abs().mean(dim=(1, 2, 3)).sum() for p in (self.density_planes, self.density_lines))
        if self.cfg.tv_weight > 0:
            tv = _total_variation(self.density_planes) + _total_variation(self.app_planes)
        return self.cfg.l1_weight * l1 + self.cfg.tv_weight * tv

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        """Resize the grids (and the occupancy grid) to the saved shapes, then load as usual."""
        for name in (*GRID_PARAMS, "occupancy"):
            saved = state_dict.get(prefix + name)
            mine = getattr(self, name)
            if saved is not None and saved.shape != mine.shape:
                _replace_data(mine, mine.data.new_empty(saved.shape))
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
