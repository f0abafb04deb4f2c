"""The built-in procedural scene: an analytic ground truth that r2l renders itself.

A :class:`BuiltinScene` is a handful of spheres and oriented boxes placed near the origin (a z-up world,
every object inside radius ~1.3), drawn from a seed. It carries what makes radiance and light fields hard:
objects that occlude one another, high-frequency object-space textures (checkers, stripes, sine
products) and a view-dependent Blinn-Phong highlight from a fixed light. Misses are transparent.
Being analytic it gives exact ground truth at any pose (:meth:`BuiltinScene.render_rays`,
:meth:`BuiltinScene.render`, :meth:`BuiltinScene.as_teacher`).

Writers produce the two on-disk formats r2l reads:

- :func:`write_blender`: NeRF-synthetic layout (``transforms_{train,val,test}.json`` + RGBA PNGs), cameras
  at radius 4 above the xy plane looking at the origin (Blender's near 2 / far 6 hold).
- :func:`write_llff`: a forward-facing capture in the LLFF layout (``poses_bounds.npy`` + ``images_8/``),
  opaque images in front of a textured backdrop plane.

Rays follow :mod:`r2l.rays`: world-space ``rays_o: (n, 3)``, unnormalised ``rays_d: (n, 3)``; ``t`` is the
distance along ``rays_d`` (depth along the viewing axis for camera rays).
"""

from __future__ import annotations

import json
import logging
import math
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

from r2l.atomic import atomic_folder
from r2l.errors import R2LError
from r2l.poses import llff_to_opengl as llff_to_opengl  # re-exported: callers of r2l.builtin use it
from r2l.poses import look_at as poses_look_at
from r2l.poses import opengl_to_llff
from r2l.rays import camera_dirs, get_rays, pixel_centres, rays_from_dirs
from r2l.train_utils import progress

log = logging.getLogger("r2l")

EPS = 1e-4  # smallest accepted hit distance (ray-parameter units)
CHUNK = 8192  # rays intersected at once
AMBIENT = 0.25  # ambient light level
DIFFUSE = 0.75  # diffuse light level
LIGHT_DIR = (0.35, -0.45, 0.82)  # direction towards the light (normalised in code), z-up world
BACKDROP_Z = -1.6  # height of the backdrop plane (used only with backdrop=True)
LLFF_FACTOR = 8  # write_llff writes images_8/ and stores hwf at the 8x "full" resolution

SPHERE, BOX, PLANE = 0, 1, 2
CHECKER, STRIPES, SINES = 0, 1, 2


@dataclass
class Shape:
    """One object. kind: SPHERE (size = (r, r, r)) | BOX (size = half extents) | PLANE (z = centre z).

    centre: (3,) world; rot: (3, 3) object-to-world rotation (columns = object axes in world);
    colors: (2, 3) the two albedos the texture mixes; texture: CHECKER | STRIPES | SINES;
    freq: texture frequency in radians per unit; ks, shininess: Blinn-Phong specular weight and exponent.
    """

    kind: int
    centre: np.ndarray
    rot: np.ndarray
    size: np.ndarray
    colors: np.ndarray
    texture: int
    freq: float
    ks: float
    shininess: float


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3x3 rotation (QR of a Gaussian matrix with sign fix)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _draw_shapes(rng: np.random.Generator) -> list[Shape]:
    """3-5 spheres and boxes, inside radius 1.3 of the origin, kept apart by rejection sampling (200 tries)."""
    n = int(rng.integers(3, 6))
    kinds = [SPHERE, BOX] + [int(k) for k in rng.integers(0, 2, size=n - 2)]
    textures = rng.permutation(3)  # every texture kind appears
    shapes: list[Shape] = []
    for i, kind in enumerate(kinds):
        for _ in range(200):  # rejection sampling for a centre that leaves room
            size = rng.uniform(0.28, 0.45) * np.ones(3) if kind == SPHERE else rng.uniform(0.18, 0.36, size=3)
            bound = float(np.linalg.norm(size)) if kind == BOX else float(size[0])
            centre = rng.normal(size=3)
            centre *= rng.uniform(0.0, min(0.8, 1.3 - bound)) / max(np.linalg.norm(centre), 1e-6)
            if all(np.linalg.norm(centre - s.centre) > 0.9 * (bound + _bound(s)) for s in shapes):
                break
        colors = np.stack([rng.uniform(0.05, 0.45, size=3), rng.uniform(0.55, 0.95, size=3)])  # dark + light
        shapes.append(
            Shape(kind, centre, _random_rotation(rng), size, colors, int(textures[i % 3]),
                  float(rng.uniform(15.0, 40.0)), float(rng.uniform(0.3, 0.7)), float(rng.uniform(20.0, 80.0)))
        )
    return shapes


def _bound(shape: Shape) -> float:
    """Radius of a sphere around ``shape.centre`` that holds the shape."""
    return float(np.linalg.norm(shape.size)) if shape.kind == BOX else float(shape.size[0])


def _backdrop(rng: np.random.Generator) -> Shape:
    """The plane z = BACKDROP_Z, faintly glossy, with a stripe/sine texture."""
    colors = np.array([[0.55, 0.5, 0.4], [0.2, 0.3, 0.45]]) + rng.uniform(-0.1, 0.1, size=(2, 3))
    return Shape(PLANE, np.array([0.0, 0.0, BACKDROP_Z]), _random_rotation(rng), np.ones(3), colors, SINES,
                 float(rng.uniform(4.0, 8.0)), 0.1, 10.0)


def _hit_sphere(o: torch.Tensor, d: torch.Tensor, size: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Object-space ray vs the sphere |p| = r. o, d: (n, 3). Returns t: (n,) (inf on miss), normal: (n, 3)."""
    r = size[0]
    a = (d * d).sum(-1)
    b = (o * d).sum(-1)
    c = (o * o).sum(-1) - r * r
    disc = b * b - a * c
    root = torch.sqrt(disc.clamp(min=0.0))
    t0, t1 = (-b - root) / a, (-b + root) / a
    t = torch.where(t0 > EPS, t0, t1)
    t = torch.where((disc >= 0) & (t > EPS), t, torch.full_like(t, math.inf))
    p = o + torch.nan_to_num(t, posinf=0.0)[:, None] * d
    return t, p / r


def _hit_box(o: torch.Tensor, d: torch.Tensor, size: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Object-space ray vs the box |p_i| <= size_i (slab method). Returns t: (n,), normal: (n, 3)."""
    d = torch.where(d.abs() < 1e-12, torch.full_like(d, 1e-12), d)
    t_a, t_b = (-size - o) / d, (size - o) / d
    t_lo, t_hi = torch.minimum(t_a, t_b), torch.maximum(t_a, t_b)
    axis_in, axis_out = t_lo.argmax(-1), t_hi.argmin(-1)  # (Tensor.max(dim) is very slow on CPU under load)
    t_in, t_out = t_lo.gather(1, axis_in[:, None])[:, 0], t_hi.gather(1, axis_out[:, None])[:, 0]
    entering = t_in > EPS
    t = torch.where(entering, t_in, t_out)
    t = torch.where((t_out >= t_in) & (t > EPS), t, torch.full_like(t, math.inf))
    axis = torch.where(entering, axis_in, axis_out)
    d_axis = torch.sign(d.gather(1, axis[:, None]))  # (n, 1)
    normal = torch.zeros_like(o).scatter(1, axis[:, None], torch.where(entering[:, None], -d_axis, d_axis))
    return t, normal


def _hit_plane(o: torch.Tensor, d: torch.Tensor, size: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """World-aligned plane z = 0 (object space is only translated). Returns t: (n,), normal: (n, 3) = +z."""
    dz = torch.where(d[:, 2].abs() < 1e-12, torch.full_like(d[:, 2], 1e-12), d[:, 2])
    t = -o[:, 2] / dz
    t = torch.where(t > EPS, t, torch.full_like(t, math.inf))
    normal = torch.zeros_like(o)
    normal[:, 2] = 1.0
    return t, normal


_HIT = {SPHERE: _hit_sphere, BOX: _hit_box, PLANE: _hit_plane}


@contextmanager
def _one_thread():
    """Run torch CPU ops on one thread inside the block (restored after).

    The ops here are many and small; with intra-op threads on a busy machine each one waits for a
    descheduled worker and rendering gets ~30x slower. One thread is fast and load-independent.
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _texture(kind: int, freq: float, q: torch.Tensor) -> torch.Tensor:
    """Mix weight in [0, 1] of a procedural texture at object-space points q: (n, 3). Returns (n,)."""
    if kind == CHECKER:
        return (torch.floor(q * (freq / math.pi)).sum(-1) % 2.0).float()
    if kind == STRIPES:
        s = torch.sin(freq * (q[:, 0] + 0.5 * q[:, 1]))
        return 0.5 + 0.5 * torch.sign(s) * s.abs().sqrt()
    return 0.5 + 0.5 * torch.sin(freq * q[:, 0]) * torch.sin(freq * q[:, 1]) * torch.sin(freq * q[:, 2] + 0.7)


class BuiltinScene:
    """An analytic procedural scene drawn from ``seed`` (numpy Generator), deterministic.

    backdrop: add a textured plane at z = BACKDROP_Z so that every downward ray hits something (used by
    :func:`write_llff`; the Blender-style scene has a transparent background).
    """

    def __init__(self, seed: int = 0, backdrop: bool = False):
        rng = np.random.default_rng(seed)
        self.seed = seed
        self.shapes = _draw_shapes(rng)
        self.n_objects = len(self.shapes)
        if backdrop:
            self.shapes.append(_backdrop(rng))
        self.light = torch.tensor(LIGHT_DIR, dtype=torch.float32)
        self.light = self.light / self.light.norm()
        self._t = [
            {
                "centre": torch.tensor(s.centre, dtype=torch.float32),
                "rot": torch.tensor(s.rot if s.kind != PLANE else np.eye(3), dtype=torch.float32),
                "tex_rot": torch.tensor(s.rot, dtype=torch.float32),
                "size": torch.tensor(s.size, dtype=torch.float32),
                "colors": torch.tensor(s.colors, dtype=torch.float32),
            }
            for s in self.shapes
        ]

    def _all_hits(self, rays_o: torch.Tensor, rays_d: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Hit distance with every shape. rays_o, rays_d: (n, 3). Returns t: (n, n_shapes), n_shapes world normals (n, 3)."""
        ts, normals = [], []
        for shape, p in zip(self.shapes, self._t):
            o = (rays_o - p["centre"]) @ p["rot"]  # world -> object: R^T (x - c)
            d = rays_d @ p["rot"]
            t, n = _HIT[shape.kind](o, d, p["size"])
            ts.append(t)
            normals.append(n @ p["rot"].T)
        return torch.stack(ts, -1), normals

    def intersect(self, rays_o: torch.Tensor, rays_d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Closest hit. rays_o, rays_d: (n, 3) world, float32.

        Returns ``t: (n,)`` (inf on a miss), ``obj: (n,)`` int64 shape index (-1 on a miss), ``normal: (n, 3)``
        unit outward world normal (zeros on a miss).
        """
        with _one_thread():
            t_all, normals = self._all_hits(rays_o.float(), rays_d.float())
            obj = t_all.argmin(-1)
            t = t_all.gather(1, obj[:, None])[:, 0]
            obj = torch.where(torch.isinf(t), torch.full_like(obj, -1), obj)
            normal = torch.zeros_like(normals[0])
            for i, n in enumerate(normals):
                normal = torch.where((obj == i)[:, None], n, normal)
        return t, obj, normal

    def hit_count(self, rays_o: torch.Tensor, rays_d: torch.Tensor) -> torch.Tensor:
        """Number of distinct shapes each ray passes through (occlusion probe). rays_o, rays_d: (n, 3). Returns (n,) int64."""
        with _one_thread():
            t_all, _ = self._all_hits(rays_o.float(), rays_d.float())
        return torch.isfinite(t_all).sum(-1)

    def shade(self, pts: torch.Tensor, normal: torch.Tensor, view: torch.Tensor, obj: torch.Tensor) -> torch.Tensor:
        """Surface colour: albedo * (ambient + diffuse) + specular, clamped to [0, 1].

        pts: (n, 3) world hit points; normal: (n, 3) unit normals; view: (n, 3) directions of travel of the
        incoming rays (any length); obj: (n,) shape index (>= 0). Returns rgb: (n, 3).
        """
        v = -view / view.norm(dim=-1, keepdim=True)
        h = self.light + v
        h = h / h.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        n_dot_l = (normal @ self.light).clamp(min=0.0)
        n_dot_h = (normal * h).sum(-1).clamp(min=0.0)
        rgb = torch.zeros_like(pts)
        for i, (shape, p) in enumerate(zip(self.shapes, self._t)):
            m = obj == i
            if not bool(m.any()):
                continue
            q = (pts[m] - p["centre"]) @ p["tex_rot"]
            w = _texture(shape.texture, shape.freq, q)[:, None]
            albedo = (1.0 - w) * p["colors"][0] + w * p["colors"][1]
            spec = shape.ks * n_dot_h[m] ** shape.shininess * (n_dot_l[m] > 0).float()
            rgb[m] = albedo * (AMBIENT + DIFFUSE * n_dot_l[m, None]) + spec[:, None]
        return rgb.clamp(0.0, 1.0)

    def _render_chunk(self, rays_o: torch.Tensor, rays_d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Object colour (zeros on a miss) and hit mask of one chunk. rays: (n, 3). Returns (n, 3), (n,) bool."""
        t, obj, normal = self.intersect(rays_o, rays_d)
        hit = obj >= 0
        rgb = torch.zeros_like(rays_o)
        if bool(hit.any()):
            pts = rays_o[hit] + t[hit, None] * rays_d[hit]
            rgb[hit] = self.shade(pts, normal[hit], rays_d[hit], obj[hit])
        return rgb, hit

    @torch.no_grad()
    def render_rays(self, rays_o: torch.Tensor, rays_d: torch.Tensor, background=(1.0, 1.0, 1.0)) -> tuple[torch.Tensor, torch.Tensor]:
        """Colour of world rays composited on ``background`` (white), and alpha.

        rays_o, rays_d: (n, 3) world-space (directions unnormalised), any device; computed on CPU in chunks.
        Returns ``rgb: (n, 3)`` float32 in [0, 1], ``alpha: (n,)`` float32 (1 on a hit, 0 on a miss).
        """
        rays_o, rays_d = rays_o.detach().float().cpu(), rays_d.detach().float().cpu()
        bg = torch.tensor(background, dtype=torch.float32)
        rgbs, alphas = [], []
        with _one_thread():
            for i in range(0, rays_o.shape[0], CHUNK):
                rgb, hit = self._render_chunk(rays_o[i : i + CHUNK], rays_d[i : i + CHUNK])
                rgbs.append(torch.where(hit[:, None], rgb, bg))
                alphas.append(hit.float())
        if not rgbs:
            return torch.zeros(0, 3), torch.zeros(0)
        return torch.cat(rgbs), torch.cat(alphas)

    @torch.no_grad()
    def render(self, c2w, H: int, W: int, focal: float, spp: int = 2) -> np.ndarray:
        """Supersampled RGBA image with straight (non-premultiplied) alpha.

        c2w: (4, 4) or (3, 4) array/tensor (OpenGL convention). spp: subpixel rays per side (spp^2 per pixel,
        on a regular grid; spp=1 is the pixel centre, identical to :func:`r2l.rays.get_rays`).
        Returns rgba: (H, W, 4) float32; ``rgb * a + (1 - a)`` is the mean of the white-composited subsamples,
        rgb = 0 where a = 0.
        """
        c2w = torch.as_tensor(np.asarray(c2w, dtype=np.float32))
        x, y = pixel_centres(H, W)
        offsets = (torch.arange(spp, dtype=torch.float32) + 0.5) / spp - 0.5
        col_sum, hits = torch.zeros(H * W, 3), torch.zeros(H * W)
        for dy in offsets:
            for dx in offsets:
                rays_o, rays_d = rays_from_dirs(c2w, camera_dirs(x + dx, y + dy, H, W, focal))
                rgb, alpha = self.render_rays(rays_o, rays_d, background=(0.0, 0.0, 0.0))
                col_sum += rgb
                hits += alpha
        alpha = hits / spp**2
        rgb = col_sum / hits.clamp(min=1.0)[:, None]
        return torch.cat([rgb, alpha[:, None]], -1).reshape(H, W, 4).numpy()

    def as_teacher(self, background=(1.0, 1.0, 1.0)) -> "AnalyticRenderer":
        """This scene as a "ray renderer" (see BRIEF): ``render_rays(rays_o, rays_d) -> rgb (n, 3)``."""
        return AnalyticRenderer(self, background)


class AnalyticRenderer:
    """Ray-renderer wrapper of a :class:`BuiltinScene` (world-space rays; exact ground truth).

    ``.model`` is an empty ``nn.Module`` (no parameters); ``.meta`` describes it.
    """

    def __init__(self, scene: BuiltinScene, background=(1.0, 1.0, 1.0)):
        self.scene = scene
        self.background = tuple(float(b) for b in background)
        self.model = torch.nn.Module()
        self.meta = {"kind": "analytic", "train_seconds": 0.0, "step": 0, "device": "cpu", "seed": scene.seed}

    def render_rays(self, rays_o: torch.Tensor, rays_d: torch.Tensor) -> torch.Tensor:
        """rays_o, rays_d: (n, 3) world rays. Returns rgb: (n, 3) float32 on CPU, composited on the background."""
        return self.scene.render_rays(rays_o, rays_d, background=self.background)[0]


# ---------------------------------------------------------------- cameras


def look_at(eye, target, up) -> np.ndarray:
    """:func:`r2l.poses.look_at` in float64: (4, 4) OpenGL c2w at ``eye`` looking at ``target``, ``up`` hints +y."""
    return poses_look_at(eye, target, up, dtype=np.float64)


def sphere_poses(azimuth_deg: np.ndarray, elevation_deg: np.ndarray, radius: float = 4.0) -> np.ndarray:
    """Cameras on a sphere looking at the origin, z-up world. azimuth, elevation: (n,) degrees. Returns (n, 4, 4).

    Not NeRF's ``pose_spherical`` convention: azimuth counts from +x towards +y and a POSITIVE elevation
    is above the xy plane (this equals :func:`r2l.poses.spherical_poses` at ``(90 - az, -el)``, in float64).
    """
    az, el = np.radians(azimuth_deg), np.radians(elevation_deg)
    eyes = radius * np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], -1)
    c2w = [look_at(e, (0.0, 0.0, 0.0), (0.0, 0.0, 1.0)) for e in eyes]
    return np.stack(c2w) if c2w else np.zeros((0, 4, 4))


def blender_split_poses(seed: int, n_train: int, n_val: int, n_test: int) -> dict[str, np.ndarray]:
    """Poses of each split: train/val random (azimuth U[-180, 180), elevation U[10, 80] deg), test an orbit at 30 deg."""
    poses = {}
    for i, (split, n) in enumerate([("train", n_train), ("val", n_val)]):
        rng = np.random.default_rng([seed, 1000 + i])
        poses[split] = sphere_poses(rng.uniform(-180.0, 180.0, n), rng.uniform(10.0, 80.0, n))
    poses["test"] = sphere_poses(np.linspace(-180.0, 180.0, n_test, endpoint=False), np.full(n_test, 30.0))
    return poses


# ---------------------------------------------------------------- writers


def _new_folder(out_dir: str | Path, fill) -> Path:
    """Build ``out_dir`` with ``fill(tmp_dir)`` in a temp folder renamed into place (complete or absent).

    Raises R2LError if ``out_dir`` already exists.
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise R2LError(f"{out_dir}: output folder already exists; remove it to write the built-in scene again")
    return atomic_folder(out_dir, fill)


def _check_counts(**counts: tuple[int, int]) -> None:
    """Each ``name=(value, minimum)`` must be an int >= minimum, else R2LError naming it."""
    for name, (value, minimum) in counts.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise R2LError(f"built-in scene: {name} must be an integer >= {minimum}, got {value!r}")


def _to_uint8(img: np.ndarray) -> np.ndarray:
    """(H, W, C) float in [0, 1] -> uint8, rounded."""
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def write_blender(
    out_dir: str | Path,
    seed: int = 0,
    resolution: int = 64,
    n_train: int = 60,
    n_val: int = 10,
    n_test: int = 20,
    camera_angle_x: float = 0.6911112070083618,
    spp: int = 2,
) -> Path:
    """Write the scene of ``seed`` as a NeRF-synthetic folder (square ``resolution`` RGBA PNGs); returns it.

    Raises R2LError if ``out_dir`` exists. The folder appears complete or not at all.
    """
    _check_counts(seed=(seed, 0), resolution=(resolution, 1), n_train=(n_train, 1), n_val=(n_val, 0),
                  n_test=(n_test, 1), spp=(spp, 1))
    scene = BuiltinScene(seed)
    focal = 0.5 * resolution / math.tan(0.5 * camera_angle_x)
    poses = blender_split_poses(seed, n_train, n_val, n_test)

    def fill(tmp: Path) -> None:
        bar = progress(n_train + n_val + n_test, desc="builtin scene")
        for split, split_poses in poses.items():
            (tmp / split).mkdir()
            frames = []
            for i, c2w in enumerate(split_poses):
                rgba = scene.render(c2w, resolution, resolution, focal, spp=spp)
                iio.imwrite(tmp / split / f"r_{i}.png", _to_uint8(rgba))
                frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": c2w.tolist()})
                bar.update(1)
            meta = {"camera_angle_x": camera_angle_x, "frames": frames}
            (tmp / f"transforms_{split}.json").write_text(json.dumps(meta, indent=2))
        bar.close()

    log.info("writing built-in scene (seed %d, %dx%d) to %s", seed, resolution, resolution, out_dir)
    return _new_folder(out_dir, fill)


def llff_poses(seed: int, n_views: int) -> np.ndarray:
    """Forward-facing cameras: centres jittered on a ~0.5-wide grid at z ~ 3.5, looking down -z (up +y). Returns (n, 4, 4)."""
    rng = np.random.default_rng([seed, 2000])
    cols = int(math.ceil(math.sqrt(n_views * 4 / 3)))
    idx = np.arange(n_views)
    gx = (idx % cols) / max(cols - 1, 1) - 0.5
    gy = (idx // cols) / max((n_views - 1) // cols, 1) - 0.5
    eyes = np.stack([0.5 * gx, 0.4 * gy, np.full(n_views, 3.5)], -1) + rng.normal(0.0, [0.03, 0.03, 0.05], (n_views, 3))
    targets = np.stack([0.2 * eyes[:, 0], 0.2 * eyes[:, 1], np.zeros(n_views)], -1) + rng.normal(0.0, 0.05, (n_views, 3))
    return np.stack([look_at(e, t, (0.0, 1.0, 0.0)) for e, t in zip(eyes, targets)])


def _view_depths(scene: BuiltinScene, c2w: np.ndarray, H: int, W: int, focal: float) -> np.ndarray:
    """Hit depths (along the viewing axis) of one view's pixel-centre rays that hit something. Returns (k,)."""
    rays_o, rays_d = get_rays(torch.as_tensor(c2w, dtype=torch.float32), H, W, focal)
    t, _, _ = scene.intersect(rays_o, rays_d)
    return t[torch.isfinite(t)].numpy()


def write_llff(out_dir: str | Path, seed: int = 0, width: int = 64, height: int = 48, n_views: int = 20, spp: int = 2) -> Path:
    """Write a forward-facing capture of the scene of ``seed`` (with a backdrop) in the LLFF layout; returns it.

    ``images_8/image{i:03d}.png``: opaque RGB (height, width). ``poses_bounds.npy``: (n_views, 17) with hwf
    stored at LLFF_FACTOR x the image size (as real LLFF data describes its full-resolution images) and
    per-view bounds = (0.9 * 1st, 1.1 * 99th) percentile of the hit depths. Raises R2LError if ``out_dir`` exists.
    """
    _check_counts(seed=(seed, 0), width=(width, 1), height=(height, 1), n_views=(n_views, 1), spp=(spp, 1))
    scene = BuiltinScene(seed, backdrop=True)
    focal = 1.1 * width
    poses = llff_poses(seed, n_views)

    def fill(tmp: Path) -> None:
        img_dir = tmp / f"images_{LLFF_FACTOR}"
        img_dir.mkdir()
        bounds = np.zeros((n_views, 2))
        for i, c2w in enumerate(poses):
            rgba = scene.render(c2w, height, width, focal, spp=spp)
            rgb = rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:])
            iio.imwrite(img_dir / f"image{i:03d}.png", _to_uint8(rgb))
            depths = _view_depths(scene, c2w, height, width, focal)
            bounds[i] = 0.9 * np.percentile(depths, 1), 1.1 * np.percentile(depths, 99)
        hwf = (LLFF_FACTOR * height, LLFF_FACTOR * width, LLFF_FACTOR * focal)
        np.save(tmp / "poses_bounds.npy", opengl_to_llff(poses, hwf, bounds))

    log.info("writing built-in forward-facing scene (seed %d, %dx%d) to %s", seed, width, height, out_dir)
    return _new_folder(out_dir, fill)
