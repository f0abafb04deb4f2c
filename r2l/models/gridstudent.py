"""The grid student family: a depth-guided grid-feature light field, one network pass per ray.

A ray is looked up at a fixed number of points and mapped to a colour by one small MLP; nothing is
composited by volume rendering. The forward pass (:class:`GridStudentNet`):

1. Where: ``n_points`` points stratified over the ray's stretch inside ``box`` (``span: box``; between near
   and far with ``near_far``, as the R2L student's) read one logit each from a dense 3-D grid
   (``geometry_resolution`` per side, trilinear); a ray that misses the box is background. With ``weights:
   first_hit`` they give the probability that the ray's first surface is at each point, ``w_i = sigmoid(l_i)
   prod_{j<i} (1 - sigmoid(l_j))`` (a near surface hides what is behind it; no colour is composited), the rest
   ``1 - sum w`` the background; with ``softmax`` (files written before ``weights`` existed) a softmax with one
   learned background logit. ``1 - w_bg`` is the opacity, the other weights give a surface depth, and the same
   weights over ``n_refine`` points within one point spacing (the ray's own: its span / ``n_points``) refine it.
   Where the pseudo-data holds the teacher's depth and opacity, both are trained towards them
   (:meth:`GridStudentNet.depth_loss`: cross-entropy against the two points around the depth, and the
   background).
2. What: ``n_fine`` points around that depth (spread over ``fine_spread`` point spacings) read multi-
   resolution tri-plane features (K-Planes: the product of the three axis-pair planes, ``channels`` per
   level), concatenated in ray order with the opacity and the encoded view direction.
3. An MLP (``mlp_depth`` hidden layers of ``mlp_width``, ReLU, sigmoid out) gives the colour.

Grids cover ``box`` (render space, from the scene: :func:`scene_box`); points outside it get no weight. In an
unbounded scene (``space``, :class:`r2l.models.contracted.RaySpace` with a split) the points are spaced in the
ray coordinate ``u = spacing(t)`` between near and far and read at ``contract(o + t d)`` (the box lies inside
``[-2, 2]^3``); "point spacing" then means spacing in u.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from r2l.core.errors import R2LError
from r2l.models.contracted import CONTRACTED_BOX, RaySpace
from r2l.models.nerf import posenc, posenc_dim

OUTSIDE_LOGIT = -1e4  # softmax logit of a point outside the box: no weight
PLANE_PAIRS = ((0, 1), (0, 2), (1, 2))  # xy, xz, yz
WEIGHTS = ("first_hit", "softmax")  # how the points' logits become weights along the ray (module docstring)
SPANS = ("box", "near_far")  # where a ray's points lie: its stretch inside the box, or near..far (module docstring)
FIRST_HIT_INIT = -4.0  # a first-hit grid's initial logit: sigmoid 0.018, 32 points leave 56% to the background
ADAM_BETAS = (0.9, 0.99)
TILES_PER_ROW = 8  # slices of the logit grid side by side in the 2-D image it is read through (slice_tiles)


@dataclass
class GridStudentConfig:
    """The grid student family's network (defaults: measured on the built-in scene, lego and flower)."""

    weights: str = "first_hit"  # first_hit | softmax: how the points' logits become weights (module docstring)
    span: str = "box"  # box | near_far: the points lie on the ray's stretch inside the box, or between near and far
    n_points: int = 32  # points stratified over the span that place the feature points (geometry lookups)
    geometry_resolution: int = 64  # side of the dense logit grid that gives each point's weight
    n_refine: int = 8  # points over +-1 spacing about the first depth whose softmax refines it (0: no refinement)
    n_fine: int = 4  # feature points around the expected depth (tri-plane lookups)
    fine_spread: float = 1.0  # the feature points span this many point spacings (the span / n_points)
    resolutions: tuple[int, ...] = (32, 64, 128)  # side of the tri-plane feature grids, one level each
    channels: int = 8  # feature channels per level
    mlp_width: int = 128  # hidden width of the colour MLP
    mlp_depth: int = 3  # hidden layers of the colour MLP
    view_freqs: int = 2  # positional-encoding frequencies of the unit view direction (-1: no direction)
    depth_weight: float = 0.05  # weight of the depth loss (cross-entropy of the weights against the teacher's depth)
    lr_geometry_scale: float = 400.0  # the logit grid's and background logit's learning rate: this times the student's lr
    lr_features_scale: float = 40.0  # the feature planes' learning rate: this times the student's lr
    lr_mlp_scale: float = 4.0  # the MLP's learning rate: this times the student's lr

    def __post_init__(self):
        self.resolutions = tuple(int(r) for r in self.resolutions)
        ints = {"n_points": 2, "geometry_resolution": 2, "n_refine": 0, "n_fine": 1, "channels": 1, "mlp_width": 1, "mlp_depth": 1}
        bad = [f"{k}={getattr(self, k)} (at least {lo})" for k, lo in ints.items() if getattr(self, k) < lo]
        if not self.resolutions or min(self.resolutions) < 2:
            bad.append(f"resolutions={list(self.resolutions)} (one or more sides >= 2)")
        if self.weights not in WEIGHTS:
            bad.append(f"weights={self.weights!r} (one of {', '.join(WEIGHTS)})")
        if self.span not in SPANS:
            bad.append(f"span={self.span!r} (one of {', '.join(SPANS)})")
        if self.view_freqs < -1 or self.fine_spread < 0 or self.depth_weight < 0:
            bad.append(f"view_freqs={self.view_freqs} (>= -1), fine_spread={self.fine_spread}, "
                       f"depth_weight={self.depth_weight} (>= 0)")
        scales = ("lr_geometry_scale", "lr_features_scale", "lr_mlp_scale")
        bad += [f"{k}={getattr(self, k)} (> 0)" for k in scales if getattr(self, k) <= 0]
        if bad:
            raise R2LError(f"grid student config: invalid value(s): {', '.join(bad)}")

    @property
    def feature_dim(self) -> int:
        """Features per feature point: channels x levels."""
        return self.channels * len(self.resolutions)

    @property
    def dir_dim(self) -> int:
        """Inputs the view direction adds: 0 with view_freqs -1, else 3 (1 + 2 view_freqs)."""
        return 0 if self.view_freqs < 0 else posenc_dim(3, self.view_freqs)

    @property
    def in_dim(self) -> int:
        """MLP input width: n_fine x feature_dim + 1 (opacity) + dir_dim."""
        return self.n_fine * self.feature_dim + 1 + self.dir_dim


def scene_box(points: torch.Tensor | None, ndc: bool, margin: float = 0.1, contracted: bool = False) -> torch.Tensor:
    """The grids' box (2, 3) in render space.

    points: (n, 3) surface points (the teacher's depth along opaque pseudo-data rays; contracted ones in an
    unbounded scene) or None. From them: their extent per axis, enlarged by ``margin`` of it on each side (the
    feature and refining points around a surface at the edge of the box must still fall inside); NDC boxes are
    kept inside the NDC cube, ``contracted`` ones inside ``[-2, 2]^3``. Without points: that cube or box, or
    +-1.5 (the NeRF-synthetic box) for object scenes.
    """
    cube = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    limit = CONTRACTED_BOX if contracted else cube if ndc else None
    if points is None or points.shape[0] < 16:
        return 1.5 * cube if limit is None else limit.clone()
    pts = points.float().cpu()
    lo, hi = pts.min(dim=0).values, pts.max(dim=0).values
    pad = margin * (hi - lo).clamp_min(1e-3)
    box = torch.stack([lo - pad, hi + pad])
    if limit is not None:
        box = torch.maximum(torch.minimum(box, limit[1]), limit[0])
    return box


def surface_depth(depth: torch.Tensor, acc: torch.Tensor, far: float) -> torch.Tensor:
    """The teacher's surface depth (n,) from its stored expected depth ``depth: (n,)`` (with the background term
    ``(1 - acc) far``) and opacity ``acc: (n,)``: ``(depth - (1 - acc) far) / acc``."""
    return (depth - (1.0 - acc) * far) / acc.clamp_min(1e-3)


def _grid_coords(pts: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """pts: (..., 3) render space -> grid_sample coordinates in [-1, 1] over ``box`` (2, 3)."""
    return (pts - box[0]) / (box[1] - box[0]) * 2.0 - 1.0


class GridStudentNet(nn.Module):
    """The grid student (module docstring). ``box``: (2, 3) min and max corners of its grids, render space;
    ``space``: where its points lie (contracted in an unbounded scene; its stretch inside the box is then all of
    near..far, whatever ``span`` says)."""

    predicts_depth = True

    def __init__(self, cfg: GridStudentConfig, box: torch.Tensor, space: RaySpace = RaySpace()):
        super().__init__()
        self.cfg, self.space = cfg, space
        self.register_buffer("box", torch.as_tensor(box, dtype=torch.float32).reshape(2, 3).clone())
        G = cfg.geometry_resolution
        self.first_hit, self.clip = cfg.weights == "first_hit", cfg.span == "box" and not space.contracted
        self.geometry = nn.Parameter(torch.full((1, 1, G, G, G), FIRST_HIT_INIT if self.first_hit else 0.0))
        self.background = None if self.first_hit else nn.Parameter(torch.zeros(1))  # softmax only
        self.planes = nn.ParameterList(
            nn.Parameter(0.1 + 0.4 * torch.rand(3, cfg.channels, R, R)) for R in cfg.resolutions)
        layers, width = [], cfg.in_dim
        for _ in range(cfg.mlp_depth):
            layers += [nn.Linear(width, cfg.mlp_width), nn.ReLU()]
            width = cfg.mlp_width
        self.mlp = nn.Sequential(*layers, nn.Linear(width, 3))

    @property
    def n_points(self) -> int:
        return self.cfg.n_points

    def param_groups(self) -> list[dict]:
        """Adam groups, each with its ``lr_scale``: the logits (grid and background), the planes, the MLP; all with
        ``betas`` (0.9, 0.99), as grid fields are usually trained (most cells see a gradient only now and then)."""
        logits = [self.geometry] if self.background is None else [self.geometry, self.background]
        groups = [(logits, self.cfg.lr_geometry_scale),
                  (list(self.planes), self.cfg.lr_features_scale), (list(self.mlp.parameters()), self.cfg.lr_mlp_scale)]
        return [{"params": params, "lr_scale": scale, "betas": ADAM_BETAS} for params, scale in groups]

    def span(self, rays_o: torch.Tensor, rays_d: torch.Tensor, near: float, far: float):
        """Where the points of rays_o, rays_d: (n, 3) lie: ``(lo, hi)``, (n,) each. ``span: box``: the ray's stretch
        inside the box, within [near, far] (both far for a ray that misses it); ``near_far``: near and far."""
        n = rays_o.shape[0]
        if not self.clip:
            return rays_o.new_full((n,), near), rays_o.new_full((n,), far)
        d = torch.where(rays_d.abs() < 1e-9, torch.full_like(rays_d, 1e-9), rays_d)
        t0, t1 = (self.box[0] - rays_o) / d, (self.box[1] - rays_o) / d
        lo = torch.minimum(t0, t1).amax(dim=-1).clamp(near, far)
        hi = torch.maximum(t0, t1).amin(dim=-1).clamp(near, far)
        miss = hi <= lo
        return torch.where(miss, torch.full_like(lo, far), lo), torch.where(miss, torch.full_like(hi, far), hi)

    def geometry_tiles(self) -> torch.Tensor:
        """The logit grid as :func:`slice_tiles`, made once per forward pass for its two reads."""
        return slice_tiles(self.geometry[0, 0])

    def point_logits(self, rays_o: torch.Tensor, rays_d: torch.Tensor, t: torch.Tensor, hit: torch.Tensor | None,
                     tiles: torch.Tensor) -> torch.Tensor:
        """Logits (n, p) of the points at ray coordinates ``t: (n, p)`` along rays_o, rays_d: (n, 3) (trilinear
        reads of the logit grid through its ``tiles``, :meth:`geometry_tiles`). OUTSIDE_LOGIT where a point is
        outside the box: per ray from ``hit: (n,)`` (whether the ray's span is inside the box) when given, else
        per point."""
        g = self.space.grid_coords(rays_o, rays_d, t, self.box)  # x, y, z: (n, p) each
        logit = tiled_trilinear(tiles, self.geometry.shape[2:], *g)
        inside = hit[:, None] if hit is not None else (g[0].abs() <= 1.0) & (g[1].abs() <= 1.0) & (g[2].abs() <= 1.0)
        return torch.where(inside, logit, torch.full_like(logit, OUTSIDE_LOGIT))

    def logits(self, rays_o: torch.Tensor, rays_d: torch.Tensor, t: torch.Tensor, hit: torch.Tensor | None,
               tiles: torch.Tensor) -> torch.Tensor:
        """Logits whose softmax is the weights along the rays: (n, n_points + 1), the last column the background's
        (first hit: the log-weights themselves, :func:`first_hit_log_weights`).

        rays_o, rays_d: (n, 3); t: (n, n_points) distances of the points; hit, tiles: as :meth:`point_logits`.
        """
        logit = self.point_logits(rays_o, rays_d, t, hit, tiles)
        if self.first_hit:
            return first_hit_log_weights(logit)
        return torch.cat([logit, self.background.expand(t.shape[0], 1)], dim=-1)

    def _around(self, depth: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """Distances (n, k) ``depth + offsets x spacing`` kept within [lo, hi]: depth, lo, hi (n,), the ray's point
        spacing ``(hi - lo) / n_points``; offsets (k,) in spacings."""
        t = depth[:, None] + ((hi - lo) / self.cfg.n_points)[:, None] * offsets
        return torch.maximum(torch.minimum(t, hi[:, None]), lo[:, None])

    def refine_t(self, surface: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        """Distances (n, n_refine) of the refining points: evenly over one point spacing either side of
        ``surface: (n,)``, within the span ``lo, hi: (n,)``."""
        return self._around(surface, lo, hi, torch.linspace(-1.0, 1.0, self.cfg.n_refine, device=surface.device))

    def features(self, pts: torch.Tensor) -> torch.Tensor:
        """Tri-plane product features of points. pts: (m, 3) render space. Returns (m, channels x levels)."""
        g = _grid_coords(pts, self.box)
        coords = torch.stack([g[:, :2], g[:, ::2], g[:, 1:]])[:, :, None, :]  # (3, m, 1, 2): PLANE_PAIRS
        levels = []
        for planes in self.planes:
            f = F.grid_sample(planes, coords, align_corners=True)[..., 0]  # (3, C, m)
            levels.append((f[0] * f[1] * f[2]).t())
        return torch.cat(levels, dim=-1)

    def fine_t(self, depth: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        """Distances of the feature points: (n, n_fine) evenly over ``fine_spread`` point spacings about
        ``depth: (n,)``, within the span ``lo, hi: (n,)``."""
        K = self.cfg.n_fine
        offsets = torch.linspace(-0.5, 0.5, K, device=depth.device) if K > 1 else depth.new_zeros(1)
        return self._around(depth, lo, hi, self.cfg.fine_spread * offsets)

    def forward(self, rays_o: torch.Tensor, rays_d: torch.Tensor, near: float, far: float, train: bool,
                generator: torch.Generator | None = None, t: torch.Tensor | None = None,
                with_depth: bool = False):
        """rays_o, rays_d: (n, 3) render-space rays; jittered points if ``train``; t: (n, n_points) given
        distances in [near, far] instead (as ``space.draw_t`` draws them; mapped onto each ray's span). Returns
        rgb: (n, 3), or with ``with_depth`` ``(rgb, aux)``: aux ``{"depth": (n,) (a distance along the ray),
        "logits": (n, n_points + 1), "t": (n, n_points) (ray coordinates)}``, what :meth:`depth_loss` reads."""
        rays_o, rays_d = rays_o.to(self.box.dtype), rays_d.to(self.box.dtype)  # float32, float64 when made double
        if t is None:
            t = self.space.draw_t(near, far, rays_o.shape[0], self.cfg.n_points, train, generator, rays_o.device)
        u, u_near, u_far = self.space.coordinate(t), self.space.coordinate_of(near), self.space.coordinate_of(far)
        lo, hi = self.span(rays_o, rays_d, u_near, u_far)
        if self.clip:
            u = lo[:, None] + (hi - lo)[:, None] * ((u - u_near) / (u_far - u_near))
        aux = self.where(rays_o, rays_d, u, lo, hi)
        aux["depth"] = aux["opacity"] * self.space.depth(aux["surface"]) + (1.0 - aux["opacity"]) * far
        tf = self.fine_t(aux["surface"], lo, hi)
        pts = self.space.points(rays_o, rays_d, self.space.depth(tf))
        feats = self.features(pts.reshape(-1, 3)).reshape(rays_o.shape[0], -1)
        parts = [feats, aux["opacity"][:, None]]
        if self.cfg.view_freqs >= 0:
            parts.append(posenc(F.normalize(rays_d, dim=-1), self.cfg.view_freqs))
        rgb = torch.sigmoid(self.mlp(torch.cat(parts, dim=-1)))
        return (rgb, aux) if with_depth else rgb

    def where(self, rays_o: torch.Tensor, rays_d: torch.Tensor, t: torch.Tensor, lo: torch.Tensor,
              hi: torch.Tensor) -> dict:
        """Step 1 of the forward pass for rays_o, rays_d: (n, 3), points at ray coordinates t: (n, n_points) on the
        spans lo, hi: (n,) (:meth:`span`): ``opacity`` (n,) = 1 - the background weight, ``surface`` (n,) the ray
        coordinate the feature points go around (the first softmax's foreground depth, refined by the second),
        and what :meth:`depth_loss` reads (``t``, ``logits``, ``refine_t``, ``refine_logits``)."""
        hit = hi > lo if self.clip else None
        tiles = self.geometry_tiles()
        logits = self.logits(rays_o, rays_d, t, hit, tiles)
        w = torch.softmax(logits, dim=-1)
        opacity = 1.0 - w[:, -1]
        # the foreground's own softmax, not w / opacity: on a nearly empty ray 1 - w_bg cancels to a few bits
        surface = torch.maximum(torch.minimum((torch.softmax(logits[:, :-1], dim=-1) * t).sum(dim=-1), hi), lo)
        aux = {"t": t, "logits": logits}
        if self.cfg.n_refine > 0:
            tr = self.refine_t(surface, lo, hi)
            lr = self.point_logits(rays_o, rays_d, tr, hit, tiles)
            if self.first_hit:  # the first surface within the window (its softmax renormalises over the window)
                lr = first_hit_log_weights(lr)[:, :-1]
            surface = (torch.softmax(lr, dim=-1) * tr).sum(dim=-1)
            aux.update(refine_t=tr, refine_logits=lr)
        return {**aux, "opacity": opacity, "surface": surface}

    def depth_loss(self, aux: dict, target: torch.Tensor, far: float) -> torch.Tensor:
        """Per-ray cross-entropy (n,) of the softmax weights against the teacher's depth and opacity.

        target: (n, 2) the teacher's expected depth (with its background term ``(1 - acc) far``) and opacity
        ``acc`` per ray; NaN depth for rays without one (real views), which cost 0. The first softmax's target puts
        ``1 - acc`` on the background and ``acc`` on the two points around the surface depth ``(depth - (1 - acc)
        far) / acc`` (its ray coordinate), split linearly (so its expectation is that depth); the refining
        softmax's (when there is one) puts the surface depth on its two points around it, weighted by ``acc``.
        Log-weights are floored at -30 so that targets in places with no weight (outside the box) do not swamp the
        loss.
        """
        known = torch.isfinite(target[:, 0])
        target = torch.where(known[:, None], target, torch.zeros_like(target))  # no NaN reaches the gradient
        depth, acc = target[:, 0], target[:, 1].clamp(0.0, 1.0)
        surface = self.space.coordinate(surface_depth(depth, acc, far))
        log_w = torch.log_softmax(aux["logits"], dim=-1).clamp_min(-30.0)
        ce = acc * _two_point_ce(aux["t"], log_w[:, :-1], surface) - (1.0 - acc) * log_w[:, -1]
        if "refine_t" in aux:
            log_r = torch.log_softmax(aux["refine_logits"], dim=-1).clamp_min(-30.0)
            ce = ce + acc * _two_point_ce(aux["refine_t"], log_r, surface)
        return torch.where(known, ce, torch.zeros_like(ce))


def slice_tiles(volume: torch.Tensor) -> torch.Tensor:
    """volume: (D, H, W) -> (1, 2, rows H, TILES_PER_ROW W), its z slices as the tiles of a 2-D image, row-major
    (rows = ceil(D / TILES_PER_ROW)): channel 0 holds slice z at tile z, channel 1 slice z + 1 (the last repeated;
    the tiles past D repeat it too)."""
    D, H, W = volume.shape
    rows = -(-D // TILES_PER_ROW)
    padded = torch.cat([volume, volume[-1:].expand(rows * TILES_PER_ROW + 1 - D, H, W)])  # slices 0..D-1, then D-1

    def image(slices: torch.Tensor) -> torch.Tensor:
        return slices.reshape(rows, TILES_PER_ROW, H, W).permute(0, 2, 1, 3).reshape(rows * H, TILES_PER_ROW * W)

    return torch.stack([image(padded[:-1]), image(padded[1:])])[None]


def tiled_trilinear(tiles: torch.Tensor, size: tuple[int, int, int], gx: torch.Tensor, gy: torch.Tensor,
                    gz: torch.Tensor) -> torch.Tensor:
    """``F.grid_sample(volume[None, None], g, align_corners=True, padding_mode="border")`` through the volume's
    :func:`slice_tiles` ``tiles``: one bilinear read of the two slices about each point (a 2-D read, which torch
    vectorises on the CPU where its 3-D one is a scalar loop: 4x faster forward and 2x with the backward, 164k
    points of a 64^3 grid on 2 threads), then a linear blend in z. Equal to the 3-D read to float rounding.

    size: the volume's (D, H, W), D >= 2; gx, gy, gz: (...) coordinates in [-1, 1] along W, H and D (clamped: border).
    Returns (...) values.
    """
    D, H, W = size
    x = (gx.clamp(-1.0, 1.0) + 1.0) * (0.5 * (W - 1))
    y = (gy.clamp(-1.0, 1.0) + 1.0) * (0.5 * (H - 1))
    z = (gz.clamp(-1.0, 1.0) + 1.0) * (0.5 * (D - 1))
    z0 = z.floor().clamp(max=D - 2)
    row = torch.div(z0, TILES_PER_ROW, rounding_mode="floor")
    rows, cols = tiles.shape[-2:]
    u = ((z0 - row * TILES_PER_ROW) * W + x) * (2.0 / (cols - 1)) - 1.0
    v = (row * H + y) * (2.0 / (rows - 1)) - 1.0
    both = F.grid_sample(tiles, torch.stack([u, v], dim=-1).reshape(1, -1, 1, 2), align_corners=True)
    lower, upper = both.reshape(2, *gx.shape).unbind(0)
    return lower + (upper - lower) * (z - z0)


def log_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """``log sigmoid(x)`` of any shape as ``min(x, 0) - log(1 + exp(-|x|))``: finite for every finite x also in an
    exported graph (torch's exporter writes ``F.logsigmoid`` as log(sigmoid(x)), which onnxruntime takes to
    log(0) = -inf for x far below 0, and a window of such points then gets NaN weights)."""
    return torch.clamp(x, max=0.0) - torch.log1p(torch.exp(-x.abs()))


def first_hit_log_weights(logit: torch.Tensor) -> torch.Tensor:
    """Log-probabilities (n, p + 1) that a ray's first surface is at each of its points, from their logits
    ``logit: (n, p)`` in ray order: ``log sigmoid(l_i) + sum_{j<i} log sigmoid(-l_j)``; the last column the log
    of what no point takes (``sum_j log sigmoid(-l_j)``). They sum to one in probability, so their softmax is
    the probabilities themselves."""
    hit = log_sigmoid(logit)
    miss = hit - logit  # log sigmoid(-l) = log sigmoid(l) - l
    passed = torch.cumsum(miss, dim=-1)  # log of the chance to pass points 0..i
    before = torch.cat([torch.zeros_like(passed[:, :1]), passed[:, :-1]], dim=-1)
    return torch.cat([hit + before, passed[:, -1:]], dim=-1)


def _two_point_ce(t: torch.Tensor, log_w: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Cross-entropy (n,) of log-weights ``log_w: (n, p)`` of points ``t: (n, p)`` (sorted) against the depth
    ``d: (n,)`` split linearly between the two points around it (the end point when outside them)."""
    d = d.clamp(min=t[:, 0], max=t[:, -1])[:, None]
    hi = torch.searchsorted(t.contiguous(), d.contiguous()).clamp(1, t.shape[1] - 1)
    lo = hi - 1
    t_lo, t_hi = t.gather(1, lo), t.gather(1, hi)
    frac = ((d - t_lo) / (t_hi - t_lo).clamp_min(1e-8)).clamp(0.0, 1.0)[:, 0]
    return -((1.0 - frac) * log_w.gather(1, lo)[:, 0] + frac * log_w.gather(1, hi)[:, 0])


def grid_student_lookup_flops(cfg: GridStudentConfig) -> float:
    """FLOPs per ray of the feature lookups, which a FLOP counter of matrix products does not see.

    Counted as 2 FLOPs (a multiply-add) per corner value read and weighted: a trilinear geometry read is 8
    corners of 1 channel (16 FLOPs, ``n_points + n_refine`` a ray); a level's bilinear plane reads are 3 planes x 4 corners x
    ``channels`` (24 C) and their product 2 C multiplies (``n_fine`` points a ray, every level). Corner weights,
    softmax and encoding are not counted (as biases and activations are not for the linear layers).
    """
    levels = len(cfg.resolutions)
    return float((cfg.n_points + cfg.n_refine) * 16 + cfg.n_fine * levels * 26 * cfg.channels)


def grid_student_closed_form_flops(cfg: GridStudentConfig) -> float:
    """FLOPs per ray of a grid student from its config: 2 x the colour MLP's multiply-adds (``in_dim`` ->
    ``mlp_depth`` hidden layers of ``mlp_width`` -> 3) plus :func:`grid_student_lookup_flops`."""
    w = cfg.mlp_width
    return 2.0 * (cfg.in_dim * w + (cfg.mlp_depth - 1) * w * w + w * 3) + grid_student_lookup_flops(cfg)
