"""The built-in procedural scenes: analytic ground truth that r2l renders itself.

A :class:`BuiltinScene` is a set of analytic shapes (spheres, oriented boxes, capped cylinders, planes)
drawn from a seed. It has three layouts:

- ``"orbit"`` (the default; :func:`write_blender`): 3-5 spheres and boxes near the origin (a z-up world,
  every object inside radius ~1.3), seen from all around. It carries what makes radiance and light
  fields hard: objects that occlude one another, high-frequency object-space textures (checkers,
  stripes, sine products) and a view-dependent Blinn-Phong highlight from a fixed light. Misses are
  transparent.
- ``"forward_facing"`` (:func:`write_llff`): a cluttered scene in front of cameras at height
  ``FF_CAMERA_Z`` looking down -z, built to be as hard as a real LLFF capture (the flower/fern kind):
  content at every depth and no empty pixel (a near "flower head" on a stem at depth ~1.3, leaves,
  ~18 objects spread from depth 1.8 to 5, mounds and rocks on a tilted, textured ground plane at depth
  ~6-7, so each view's farthest hit is > 3x its nearest and no single shape fills the frame), thin
  stems (capped cylinders about one pixel wide at 64x48), near-black and strongly saturated albedos
  besides pastel ones, and the same textures and highlights.
- ``"unbounded"`` (:func:`write_unbounded`): a walk-around capture of an object with its surroundings. The orbit
  layout's objects of the same seed, scaled into the unit ball, stand on a floor disc (radius ``UB_FLOOR_RADIUS``)
  among pillars and blocks 3-9 away, all inside a sky dome (radius ``UB_DOME_RADIUS``) on which every ray that
  misses the rest ends: no pixel is empty, and most of what the cameras see lies far outside the ball they stand
  in. Floor and dome wear random cells (``CELLS``: no period, corners at two scales), as a room's clutter gives
  COLMAP features to register a walk-around by; periodic checkers made it misplace the cameras.

Being analytic, a scene gives exact ground truth at any pose (:meth:`BuiltinScene.render_rays`,
:meth:`BuiltinScene.render`, :meth:`BuiltinScene.as_teacher`), always at exposure 1.

Writers produce the on-disk formats r2l reads:

- :func:`write_blender`: NeRF-synthetic layout (``transforms_{train,val,test}.json`` + RGBA PNGs), cameras
  at radius 4 above the xy plane looking at the origin (Blender's near 2 / far 6 hold).
- :func:`write_unbounded`: the unbounded layout in the Blender format (opaque RGB PNGs) with the marker of
  :mod:`r2l.data.unbounded`, already in its normalised world (object at the origin, up +z): cameras walk round
  the object at distance ``UB_CAMERA_RADIUS`` and height ``UB_CAMERA_HEIGHT``, looking at its centre.
- :func:`write_llff`: a forward-facing capture in the LLFF layout (``poses_bounds.npy`` + ``images_8/``):
  opaque images whose per-view bounds are the nearest and farthest hit of all rendered rays (x0.9, x1.1).
  Like a real capture, views differ in exposure: the image of view i is ``clip(gain_i * rgb)`` with
  ``rgb`` the exposure-1 ground truth and ``gain_i`` from :func:`llff_exposures` (uniform in
  [0.85, 1.15] from the seed, also written to ``exposure.json``). The held-out test views (0, hold,
  2 hold, ...; ``hold`` = 8 as r2l's default ``llff_hold``) have gain exactly 1, so their images are the
  analytic ground truth (``render``/``as_teacher()``), while training and validation views are not.

Rays follow :mod:`r2l.geometry.rays`: world-space ``rays_o: (n, 3)``, unnormalised ``rays_d: (n, 3)``; ``t`` is the
distance along ``rays_d`` (depth along the viewing axis for camera rays).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

from r2l.core.atomic import atomic_folder
from r2l.core.errors import R2LError
from r2l.core.imageio import to_uint8
from r2l.core.log import progress
from r2l.core.runtime import chunked
from r2l.data.unbounded import unbounded_bounds, write_marker
from r2l.geometry.poses import llff_to_opengl as llff_to_opengl  # re-exported: callers of r2l.data.builtin use it
from r2l.geometry.poses import look_at as poses_look_at
from r2l.geometry.poses import opengl_to_llff
from r2l.geometry.rays import camera_dirs, pixel_centres, rays_from_dirs

log = logging.getLogger("r2l")

EPS = 1e-4  # smallest accepted hit distance (ray-parameter units)
CHUNK = 16384  # rays intersected at once
AMBIENT = 0.25  # ambient light level
DIFFUSE = 0.75  # diffuse light level
LIGHT_DIR = (0.35, -0.45, 0.82)  # direction towards the light (normalised in code), z-up world
LLFF_FACTOR = 8  # write_llff writes images_8/ and stores hwf at the 8x "full" resolution
LLFF_FOCAL = 1.1  # write_llff's focal length in units of the image width
FF_CAMERA_Z = 3.5  # height of the forward-facing cameras (llff_poses): a point at height z is ~3.5 - z deep
FF_EXPOSURE = 0.15  # write_llff: exposure gains are uniform in [1 - FF_EXPOSURE, 1 + FF_EXPOSURE]
LAYOUTS = ("orbit", "forward_facing", "unbounded")
UB_OBJECT_SCALE = 0.7  # unbounded: the orbit objects (inside radius 1.3) scaled into the unit ball
UB_FLOOR_Z = -0.95  # unbounded: height of the floor's top, under the object
UB_FLOOR_RADIUS = 12.0  # unbounded: radius of the floor disc
UB_DOME_RADIUS = 20.0  # unbounded: radius of the sky dome around everything
UB_CAMERA_RADIUS = (2.0, 2.4)  # unbounded: the cameras' horizontal distance from the object's centre
UB_CAMERA_HEIGHT = (0.0, 0.8)  # unbounded: the cameras' height
UB_CAMERA_ANGLE_X = 1.0  # unbounded: horizontal field of view (radians)

SPHERE, BOX, PLANE, CYLINDER = 0, 1, 2, 3
CHECKER, STRIPES, SINES, CELLS = 0, 1, 2, 3


@dataclass
class Shape:
    """One object, defined in its object space (world = centre + rot @ object).

    kind: SPHERE (size = (r, r, r)) | BOX (size = half extents) | PLANE (the plane z = 0, normal +z;
    size unused) | CYLINDER (size = (r, r, h): radius r around the z axis, capped at z = -h and z = h).
    centre: (3,) world; rot: (3, 3) object-to-world rotation (columns = object axes in world);
    colors: (2, 3) the two albedos the texture mixes; texture: CHECKER | STRIPES | SINES (in object space);
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


def _axis_frame(axis) -> np.ndarray:
    """A rotation (3, 3) whose third column (object z) is the unit vector along ``axis: (3,)``."""
    z = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    helper = np.array([1.0, 0.0, 0.0]) if abs(z[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    x = np.cross(helper, z)
    x /= np.linalg.norm(x)
    return np.stack([x, np.cross(z, x), z], 1)


def _draw_shapes(rng: np.random.Generator) -> list[Shape]:
    """Orbit layout: 3-5 spheres and boxes, inside radius 1.3 of the origin, kept apart by rejection sampling (200 tries)."""
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
    """Radius of a sphere around ``shape.centre`` that holds the shape (inf for a plane)."""
    if shape.kind == PLANE:
        return math.inf
    if shape.kind == BOX:
        return float(np.linalg.norm(shape.size))
    if shape.kind == CYLINDER:
        return float(math.hypot(shape.size[0], shape.size[2]))
    return float(shape.size[0])


# ---------------------------------------------------------------- the forward-facing layout

_FF_TAN = (0.5 / LLFF_FOCAL, 0.375 / LLFF_FOCAL)  # half-extent (x, y) of a 4:3 frame per unit depth
_FF_PIXEL = 1.0 / (LLFF_FOCAL * 64)  # footprint of one pixel per unit depth at the default width 64
_STYLES = ("dark", "saturated", "mixed", "pastel")


def _ff_point(depth: float, u: float, v: float) -> np.ndarray:
    """World point at viewing ``depth`` seen at frame fractions (u, v) in [-1, 1] from the central camera."""
    return np.array([u * depth * _FF_TAN[0], v * depth * _FF_TAN[1], FF_CAMERA_Z - depth])


def _ff_colors(rng: np.random.Generator, style: str) -> np.ndarray:
    """Two albedos (2, 3): "dark" both near-black (< 0.08), "saturated" both one-hue (max - min >= 0.8),
    "mixed" near-black + saturated, "pastel" mid dark + light (the orbit layout's kind)."""

    def dark() -> np.ndarray:
        return rng.uniform(0.0, 0.08, size=3)

    def saturated() -> np.ndarray:
        c = np.array([rng.uniform(0.85, 1.0), rng.uniform(0.0, 0.45), rng.uniform(0.0, 0.05)])
        return c[rng.permutation(3)]

    if style == "dark":
        return np.stack([dark(), dark()])
    if style == "saturated":
        return np.stack([saturated(), saturated()])
    if style == "mixed":
        return np.stack([dark(), saturated()])
    return np.stack([rng.uniform(0.05, 0.45, size=3), rng.uniform(0.55, 0.95, size=3)])


def _draw_forward_facing(rng: np.random.Generator) -> list[Shape]:
    """Forward-facing layout (cameras at z ~ FF_CAMERA_Z looking down -z; depth ~ FF_CAMERA_Z - z), ~36 shapes:

    1. the ground: a plane at depth 5.6-6.2 tilted 9-17 degrees, checkered or textured, dark + saturated;
    2. 4-6 mounds and rocks (spheres / boxes of size 0.7-1.4) sunk into the ground, so the far depth varies;
    3. a flower head (sphere, radius 0.16-0.22) near the frame centre at depth 1.35-1.6, in every view,
       on a thin stem that leaves the frame downwards;
    4. 3 leaves: thin boxes (0.008 thick) at depth 1.6-3;
    5. 18 spheres and boxes at depths log-uniform in [1.8, 5] over the whole frame;
    6. 7 stems: capped cylinders 1-1.8 pixels wide at 64x48, at depth 1.6-4, mostly upright in the image.
    Albedo styles are drawn from near-black, saturated, mixed and pastel.
    """
    shapes: list[Shape] = []

    def add(kind, centre, rot, size, colors, freq, ks=None):
        texture = int(rng.integers(0, 3))
        ks = float(rng.uniform(0.1, 0.5)) if ks is None else ks
        shapes.append(Shape(kind, np.asarray(centre, dtype=np.float64), rot, np.asarray(size, dtype=np.float64),
                            colors, texture, float(freq), ks, float(rng.uniform(20.0, 80.0))))

    def style() -> str:
        return _STYLES[int(rng.choice(4, p=[0.2, 0.35, 0.3, 0.15]))]

    def tex_freq(depth: float) -> float:  # texture periods of ~3-9 pixels at the default 64x48
        return float(rng.uniform(50.0, 150.0) / depth)

    # 1. ground
    ground_depth = rng.uniform(5.6, 6.2)
    phi, tilt = rng.uniform(0.0, 2 * math.pi), rng.uniform(0.16, 0.3)
    normal = np.array([math.sin(tilt) * math.cos(phi), math.sin(tilt) * math.sin(phi), math.cos(tilt)])
    ground = np.array([0.0, 0.0, FF_CAMERA_Z - ground_depth])
    add(PLANE, ground, _axis_frame(normal), np.ones(3), _ff_colors(rng, "mixed"), rng.uniform(6.0, 12.0), ks=0.05)
    # 2. mounds and rocks
    for _ in range(int(rng.integers(4, 7))):
        size = rng.uniform(0.7, 1.4)
        p = _ff_point(ground_depth, *rng.uniform(-1.2, 1.2, size=2))
        p = p - np.dot(p - ground, normal) * normal  # onto the ground
        centre = p + rng.uniform(-0.6, 0.2) * size * normal
        if rng.random() < 0.5:
            add(SPHERE, centre, _random_rotation(rng), size * np.ones(3), _ff_colors(rng, style()), tex_freq(ground_depth))
        else:
            add(BOX, centre, _random_rotation(rng), size * rng.uniform(0.5, 1.0, size=3), _ff_colors(rng, style()),
                tex_freq(ground_depth))
    # 3. the flower head and its stem
    head_depth = rng.uniform(1.35, 1.6)
    head = _ff_point(head_depth, *rng.uniform(-0.25, 0.25, size=2))
    add(SPHERE, head, _random_rotation(rng), rng.uniform(0.16, 0.22) * np.ones(3), _ff_colors(rng, "saturated"),
        tex_freq(head_depth))
    axis = np.array([rng.uniform(-0.3, 0.3), -1.0, -rng.uniform(0.2, 0.6)])
    axis /= np.linalg.norm(axis)
    r = rng.uniform(0.5, 0.9) * head_depth * _FF_PIXEL
    add(CYLINDER, head + 0.6 * axis, _axis_frame(axis), [r, r, 0.6], _ff_colors(rng, style()), tex_freq(head_depth))
    # 4. leaves
    for _ in range(3):
        depth = rng.uniform(1.6, 3.0)
        size = [rng.uniform(0.12, 0.22) * depth, rng.uniform(0.03, 0.06) * depth, 0.004]
        add(BOX, _ff_point(depth, *rng.uniform(-0.9, 0.9, size=2)), _random_rotation(rng), size,
            _ff_colors(rng, style()), tex_freq(depth))
    # 5. clutter at every depth
    for _ in range(18):
        depth = math.exp(rng.uniform(math.log(1.8), math.log(5.0)))
        centre = _ff_point(depth, *rng.uniform(-1.05, 1.05, size=2))
        if rng.random() < 0.5:
            add(SPHERE, centre, _random_rotation(rng), rng.uniform(0.07, 0.15) * depth * np.ones(3),
                _ff_colors(rng, style()), tex_freq(depth))
        else:
            add(BOX, centre, _random_rotation(rng), rng.uniform(0.05, 0.12, size=3) * depth,
                _ff_colors(rng, style()), tex_freq(depth))
    # 6. stems
    for _ in range(7):
        depth = rng.uniform(1.6, 4.0)
        angle = rng.uniform(-0.5, 0.5) + (0.5 * math.pi if rng.random() < 0.7 else 0.0)
        axis = np.array([math.cos(angle), math.sin(angle), rng.uniform(-0.3, 0.3)])
        r = rng.uniform(0.5, 0.9) * depth * _FF_PIXEL
        half = rng.uniform(0.3, 0.6) * depth * _FF_TAN[0]  # 30-60 % of the frame width long
        add(CYLINDER, _ff_point(depth, *rng.uniform(-0.9, 0.9, size=2)), _axis_frame(axis), [r, r, half],
            _ff_colors(rng, style()), tex_freq(depth))
    return shapes


# ---------------------------------------------------------------- the unbounded layout


def _scaled(shape: Shape, factor: float) -> Shape:
    """``shape`` scaled by ``factor`` about the origin (its texture scaled with it)."""
    return Shape(shape.kind, shape.centre * factor, shape.rot, shape.size * factor, shape.colors, shape.texture,
                 shape.freq / factor, shape.ks, shape.shininess)


def _z_rotation(angle: float) -> np.ndarray:
    """The rotation (3, 3) by ``angle`` radians about +z."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _draw_surroundings(rng: np.random.Generator) -> list[Shape]:
    """The unbounded layout's surroundings: a floor disc in random cells (a flat cylinder, top at UB_FLOOR_Z), 8
    pillars (upright cylinders, radius 0.12-0.3, 1-3.6 high) and 6 blocks (boxes turned about z) standing on it 3-9
    from the centre, and a sky dome in random cells (a sphere of radius UB_DOME_RADIUS, seen from inside, no
    highlight; cells about 1.6 wide, 12-15 across a view)."""
    shapes = [Shape(CYLINDER, np.array([0.0, 0.0, UB_FLOOR_Z - 0.05]), np.eye(3),
                    np.array([UB_FLOOR_RADIUS, UB_FLOOR_RADIUS, 0.05]), _ff_colors(rng, "pastel"), CELLS,
                    float(rng.uniform(2.5, 3.5)), 0.05, 30.0)]
    for i in range(14):
        dist, azimuth = rng.uniform(3.0 if i < 8 else 3.5, 9.0), rng.uniform(0.0, 2.0 * math.pi)
        foot = np.array([dist * math.cos(azimuth), dist * math.sin(azimuth), UB_FLOOR_Z])
        colors, texture = _ff_colors(rng, _STYLES[int(rng.integers(1, 4))]), int(rng.integers(0, 3))
        if i < 8:
            r, h = rng.uniform(0.12, 0.3), rng.uniform(0.5, 1.8)
            shapes.append(Shape(CYLINDER, foot + [0.0, 0.0, h], np.eye(3), np.array([r, r, h]), colors, texture,
                                float(rng.uniform(8.0, 16.0)), float(rng.uniform(0.1, 0.4)), 40.0))
        else:
            size = rng.uniform(0.2, 0.5, size=3)
            shapes.append(Shape(BOX, foot + [0.0, 0.0, size[2]], _z_rotation(rng.uniform(0.0, math.pi)), size,
                                colors, texture, float(rng.uniform(8.0, 16.0)), float(rng.uniform(0.1, 0.4)), 40.0))
    shapes.append(Shape(SPHERE, np.zeros(3), _random_rotation(rng), np.full(3, UB_DOME_RADIUS),
                        _ff_colors(rng, "pastel"), CELLS, float(rng.uniform(1.8, 2.2)), 0.0, 1.0))
    return shapes


def _draw_unbounded(rng: np.random.Generator) -> list[Shape]:
    """Unbounded layout: the orbit layout's objects (the same draws) scaled by UB_OBJECT_SCALE, inside radius 0.91
    of the origin and above the floor, then their surroundings (:func:`_draw_surroundings`)."""
    return [_scaled(s, UB_OBJECT_SCALE) for s in _draw_shapes(rng)] + _draw_surroundings(rng)


# ---------------------------------------------------------------- ray intersection (object space)
# Each takes object-space rays o, d: (..., 3) and sizes (..., 3) (broadcast) and returns the first hit
# distance t: (...) (> EPS; inf on a miss) and the unit outward object-space normal there: (..., 3).


def _hit_sphere(o: torch.Tensor, d: torch.Tensor, size: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ray vs the sphere |p| = r (r = size[..., 0])."""
    r = size[..., 0]
    a = (d * d).sum(-1)
    b = (o * d).sum(-1)
    c = (o * o).sum(-1) - r * r
    disc = b * b - a * c
    root = torch.sqrt(disc.clamp(min=0.0))
    t0, t1 = (-b - root) / a, (-b + root) / a
    t = torch.where(t0 > EPS, t0, t1)
    t = torch.where((disc >= 0) & (t > EPS), t, torch.full_like(t, math.inf))
    p = o + torch.nan_to_num(t, posinf=0.0)[..., None] * d
    return t, p / r[..., None]


def _hit_box(o: torch.Tensor, d: torch.Tensor, size: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ray vs the box |p_i| <= size_i (slab method)."""
    d = torch.where(d.abs() < 1e-12, torch.full_like(d, 1e-12), d)
    t_a, t_b = (-size - o) / d, (size - o) / d
    t_lo, t_hi = torch.minimum(t_a, t_b), torch.maximum(t_a, t_b)
    axis_in, axis_out = t_lo.argmax(-1), t_hi.argmin(-1)  # (Tensor.max(dim) is very slow on CPU under load)
    t_in, t_out = t_lo.gather(-1, axis_in[..., None])[..., 0], t_hi.gather(-1, axis_out[..., None])[..., 0]
    entering = t_in > EPS
    t = torch.where(entering, t_in, t_out)
    t = torch.where((t_out >= t_in) & (t > EPS), t, torch.full_like(t, math.inf))
    axis = torch.where(entering, axis_in, axis_out)
    d_axis = torch.sign(d.gather(-1, axis[..., None]))  # (..., 1)
    normal = torch.zeros_like(d).scatter(-1, axis[..., None], torch.where(entering[..., None], -d_axis, d_axis))
    return t, normal


def _hit_plane(o: torch.Tensor, d: torch.Tensor, size: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ray vs the plane z = 0 (two-sided; the normal is +z on both sides)."""
    dz = torch.where(d[..., 2].abs() < 1e-12, torch.full_like(d[..., 2], 1e-12), d[..., 2])
    t = -o[..., 2] / dz
    t = torch.where(t > EPS, t, torch.full_like(t, math.inf))
    normal = torch.zeros_like(d)
    normal[..., 2] = 1.0
    return t, normal


def _hit_cylinder(o: torch.Tensor, d: torch.Tensor, size: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ray vs the capped cylinder x^2 + y^2 <= r^2, |z| <= h (r = size[..., 0], h = size[..., 2]).

    Candidates: the two roots of the side quadric (valid where |z| <= h) and the two cap planes (valid where
    x^2 + y^2 <= r^2); the hit is the smallest valid one > EPS. Normal: (x, y, 0) / r on the side, (0, 0, +-1)
    on a cap.
    """
    r, h = size[..., 0], size[..., 2]
    inf = torch.full_like(o[..., 0], math.inf)
    a = d[..., 0] ** 2 + d[..., 1] ** 2
    b = o[..., 0] * d[..., 0] + o[..., 1] * d[..., 1]
    c = o[..., 0] ** 2 + o[..., 1] ** 2 - r * r
    disc = b * b - a * c
    side_ok = (a > 1e-12) & (disc >= 0)
    root = torch.sqrt(disc.clamp(min=0.0))
    a_safe = torch.where(side_ok, a, torch.ones_like(a))
    dz = torch.where(d[..., 2].abs() < 1e-12, torch.full_like(d[..., 2], 1e-12), d[..., 2])
    cands = []
    for t in ((-b - root) / a_safe, (-b + root) / a_safe):
        ok = side_ok & (t > EPS) & ((o[..., 2] + t * d[..., 2]).abs() <= h)
        cands.append(torch.where(ok, t, inf))
    for cap in (-h, h):
        t = (cap - o[..., 2]) / dz
        x, y = o[..., 0] + t * d[..., 0], o[..., 1] + t * d[..., 1]
        cands.append(torch.where((t > EPS) & (x * x + y * y <= r * r), t, inf))
    cands = torch.stack(cands, -1)  # (..., 4): side near, side far, cap -h, cap +h
    which = cands.argmin(-1)
    t = cands.gather(-1, which[..., None])[..., 0]
    p = o + torch.nan_to_num(t, posinf=0.0)[..., None] * d
    side = torch.stack([p[..., 0] / r, p[..., 1] / r, torch.zeros_like(r * p[..., 0])], -1)
    cap_z = torch.where(which == 2, -1.0, 1.0)
    cap = torch.stack([torch.zeros_like(cap_z), torch.zeros_like(cap_z), cap_z], -1)
    return t, torch.where((which < 2)[..., None], side, cap)


_HIT = {SPHERE: _hit_sphere, BOX: _hit_box, PLANE: _hit_plane, CYLINDER: _hit_cylinder}


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


def _cell_value(cell: torch.Tensor) -> torch.Tensor:
    """A hash of integer lattice cells: (n, 3) int64 -> (n,) values in [0, 1] (1024 levels), no period."""
    h = (cell[:, 0] * 73856093) ^ (cell[:, 1] * 19349663) ^ (cell[:, 2] * 83492791)
    h = (h ^ (h >> 13)) & 0xFFFFFF
    h = (h * 1274126177) & 0xFFFFFFFF
    return ((h ^ (h >> 16)) & 1023).float() / 1023.0


def _texture(kind: int, freq, q: torch.Tensor) -> torch.Tensor:
    """Mix weight in [0, 1] of a procedural texture at object-space points q: (n, 3). Returns (n,).

    freq: a float or a per-point (n,) tensor (radians per unit; a checker or cell is pi / freq wide). CELLS: a
    random value per cell plus a finer one per cell 2.37x smaller (offset half a cell), weighted 0.6 / 0.4.
    """
    f = torch.as_tensor(freq, dtype=q.dtype)
    if kind == CELLS:
        x = q * (f[..., None] / math.pi)
        return 0.6 * _cell_value(torch.floor(x).long()) + 0.4 * _cell_value(torch.floor(2.37 * x + 0.5).long() + 1000)
    if kind == CHECKER:
        return (torch.floor(q * (f[..., None] / math.pi)).sum(-1) % 2.0).float()
    if kind == STRIPES:
        s = torch.sin(f * (q[:, 0] + 0.5 * q[:, 1]))
        return 0.5 + 0.5 * torch.sign(s) * s.abs().sqrt()
    return 0.5 + 0.5 * torch.sin(f * q[:, 0]) * torch.sin(f * q[:, 1]) * torch.sin(f * q[:, 2] + 0.7)


class BuiltinScene:
    """An analytic procedural scene drawn from ``seed`` (numpy Generator), deterministic.

    layout: ``"orbit"`` (objects near the origin, transparent background; :func:`write_blender`),
    ``"forward_facing"`` (a cluttered scene filling every view of :func:`llff_poses`; :func:`write_llff`) or
    ``"unbounded"`` (the orbit objects with their surroundings, every ray ends on something; :func:`write_unbounded`).
    Intersection is batched over shapes: a ray is tested exactly only against the shapes whose bounding
    sphere it passes through (planes always).
    """

    def __init__(self, seed: int = 0, layout: str = "orbit"):
        if layout not in LAYOUTS:
            raise R2LError(f"built-in scene: layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        rng = np.random.default_rng(seed)
        self.seed, self.layout = seed, layout
        draw = {"orbit": _draw_shapes, "forward_facing": _draw_forward_facing, "unbounded": _draw_unbounded}
        self.shapes = draw[layout](rng)
        self.n_objects = len(self.shapes)
        self.light = torch.tensor(LIGHT_DIR, dtype=torch.float32)
        self.light = self.light / self.light.norm()

        def stack(values) -> torch.Tensor:
            return torch.tensor(np.array(values, dtype=np.float64), dtype=torch.float32)

        self._kind = torch.tensor([s.kind for s in self.shapes])
        self._centre = stack([s.centre for s in self.shapes])  # (N, 3)
        self._rot = stack([s.rot for s in self.shapes])  # (N, 3, 3)
        self._size = stack([s.size for s in self.shapes])  # (N, 3)
        self._colors = stack([s.colors for s in self.shapes])  # (N, 2, 3)
        self._tex = torch.tensor([s.texture for s in self.shapes])
        self._freq = stack([s.freq for s in self.shapes])
        self._ks = stack([s.ks for s in self.shapes])
        self._shininess = stack([s.shininess for s in self.shapes])
        bound = stack([_bound(s) for s in self.shapes])
        self._cull_r2 = (1.01 * bound + 1e-3) ** 2  # squared bounding radius with a margin for rounding (inf: plane)
        self._centre_sq = (self._centre * self._centre).sum(-1)  # (N,)

    def _candidates(self, rays_o: torch.Tensor, rays_d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(ray, shape) index pairs, (m,) each, of rays whose line passes within the shape's bounding sphere."""
        dd = (rays_d * rays_d).sum(-1, keepdim=True)
        b = rays_d @ self._centre.T - (rays_o * rays_d).sum(-1, keepdim=True)  # (c - o) . d: (n, N)
        cc = (rays_o * rays_o).sum(-1, keepdim=True) - 2.0 * (rays_o @ self._centre.T) + self._centre_sq  # |c - o|^2
        pairs = ((cc - b * b / dd) <= self._cull_r2).nonzero()
        return pairs[:, 0], pairs[:, 1]

    def _pair_hits(self, rays_o, rays_d, ray: torch.Tensor, shape: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Hit of ray ``ray[j]`` with shape ``shape[j]``. Returns t: (m,) (inf on a miss), object-space normal: (m, 3)."""
        rot = self._rot[shape]  # (m, 3, 3); world -> object: R^T (x - c)
        o = ((rays_o[ray] - self._centre[shape])[:, :, None] * rot).sum(1)
        d = (rays_d[ray][:, :, None] * rot).sum(1)
        kind, size = self._kind[shape], self._size[shape]
        t, normal = torch.full_like(o[:, 0], math.inf), torch.zeros_like(o)
        for k, hit in _HIT.items():
            sel = (kind == k).nonzero()[:, 0]
            if len(sel):
                t[sel], normal[sel] = hit(o[sel], d[sel], size[sel])
        return t, normal

    def _hit_table(self, rays_o: torch.Tensor, rays_d: torch.Tensor, cull: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Hit distance with every shape, t: (n, N) (inf on a miss), and object-space normals (n, N, 3).

        cull: test only the candidate pairs (exact: a ray outside a bounding sphere misses the shape).
        """
        n, n_shapes = rays_o.shape[0], len(self.shapes)
        if cull:
            ray, shape = self._candidates(rays_o, rays_d)
        else:
            ray = torch.arange(n).repeat_interleave(n_shapes)
            shape = torch.arange(n_shapes).repeat(n)
        t_pairs, n_pairs = self._pair_hits(rays_o, rays_d, ray, shape)
        t = torch.full((n, n_shapes), math.inf)
        t[ray, shape] = t_pairs
        normal = torch.zeros(n, n_shapes, 3)
        normal[ray, shape] = n_pairs
        return t, normal

    def _all_hits(self, rays_o: torch.Tensor, rays_d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Hit distance with every shape (no culling). rays_o, rays_d: (n, 3).

        Returns t: (n, N) (inf on a miss) and unit outward world normals (n, N, 3).
        """
        with _one_thread():
            t, normal = self._hit_table(rays_o.float(), rays_d.float(), cull=False)
            return t, (self._rot * normal[:, :, None, :]).sum(-1)

    def intersect(self, rays_o: torch.Tensor, rays_d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Closest hit. rays_o, rays_d: (n, 3) world, float32.

        Returns ``t: (n,)`` (inf on a miss), ``obj: (n,)`` int64 shape index (-1 on a miss), ``normal: (n, 3)``
        unit outward world normal (zeros on a miss).
        """
        with _one_thread():
            t_all, normals = self._hit_table(rays_o.float(), rays_d.float())
            obj = t_all.argmin(-1)
            t = t_all.gather(1, obj[:, None])[:, 0]
            hit = torch.isfinite(t)
            obj = torch.where(hit, obj, torch.full_like(obj, -1))
            k = obj.clamp(min=0)
            normal = normals[torch.arange(len(k)), k]  # object space
            normal = (self._rot[k] * normal[:, None, :]).sum(-1)
            normal = torch.where(hit[:, None], normal, torch.zeros_like(normal))
        return t, obj, normal

    def hit_count(self, rays_o: torch.Tensor, rays_d: torch.Tensor) -> torch.Tensor:
        """Number of distinct shapes each ray passes through (occlusion probe). rays_o, rays_d: (n, 3). Returns (n,) int64."""
        with _one_thread():
            t_all, _ = self._hit_table(rays_o.float(), rays_d.float())
        return torch.isfinite(t_all).sum(-1)

    def shade(self, pts: torch.Tensor, normal: torch.Tensor, view: torch.Tensor, obj: torch.Tensor) -> torch.Tensor:
        """Surface colour: albedo * (ambient + diffuse) + specular, clamped to [0, 1] (exposure 1).

        pts: (n, 3) world hit points; normal: (n, 3) unit normals; view: (n, 3) directions of travel of the
        incoming rays (any length); obj: (n,) shape index (>= 0). Returns rgb: (n, 3).
        """
        v = -view / view.norm(dim=-1, keepdim=True)
        h = self.light + v
        h = h / h.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        n_dot_l = (normal @ self.light).clamp(min=0.0)
        n_dot_h = (normal * h).sum(-1).clamp(min=0.0)
        q = ((pts - self._centre[obj])[:, :, None] * self._rot[obj]).sum(1)  # object space
        tex, freq = self._tex[obj], self._freq[obj]
        w = torch.zeros_like(n_dot_l)
        for kind in (CHECKER, STRIPES, SINES, CELLS):
            sel = (tex == kind).nonzero()[:, 0]
            if len(sel):
                w[sel] = _texture(kind, freq[sel], q[sel])
        colors = self._colors[obj]
        albedo = (1.0 - w[:, None]) * colors[:, 0] + w[:, None] * colors[:, 1]
        spec = self._ks[obj] * n_dot_h ** self._shininess[obj] * (n_dot_l > 0).float()
        return (albedo * (AMBIENT + DIFFUSE * n_dot_l[:, None]) + spec[:, None]).clamp(0.0, 1.0)

    def _render_chunk(self, rays_o: torch.Tensor, rays_d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Object colour (zeros on a miss), hit mask and hit distance (inf on a miss) of one chunk: (n, 3), (n,), (n,)."""
        t, obj, normal = self.intersect(rays_o, rays_d)
        hit = obj >= 0
        rgb = torch.zeros_like(rays_o)
        if bool(hit.any()):
            pts = rays_o[hit] + t[hit, None] * rays_d[hit]
            rgb[hit] = self.shade(pts, normal[hit], rays_d[hit], obj[hit])
        return rgb, hit, t

    def _render_rays(self, rays_o: torch.Tensor, rays_d: torch.Tensor, background) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`render_rays` plus the hit distance t: (n,) (inf on a miss)."""
        rays_o, rays_d = rays_o.detach().float().cpu(), rays_d.detach().float().cpu()
        bg = torch.tensor(background, dtype=torch.float32)
        if rays_o.shape[0] == 0:
            return torch.zeros(0, 3), torch.zeros(0), torch.zeros(0)

        def shade(o: torch.Tensor, d: torch.Tensor):
            rgb, hit, t = self._render_chunk(o, d)
            return torch.where(hit[:, None], rgb, bg), hit.float(), t

        with _one_thread():
            return chunked(shade, rays_o, rays_d, CHUNK)

    @torch.no_grad()
    def render_rays(self, rays_o: torch.Tensor, rays_d: torch.Tensor, background=(1.0, 1.0, 1.0)) -> tuple[torch.Tensor, torch.Tensor]:
        """Colour of world rays composited on ``background`` (white), and alpha (exposure 1).

        rays_o, rays_d: (n, 3) world-space (directions unnormalised), any device; computed on CPU in chunks.
        Returns ``rgb: (n, 3)`` float32 in [0, 1], ``alpha: (n,)`` float32 (1 on a hit, 0 on a miss).
        """
        rgb, alpha, _ = self._render_rays(rays_o, rays_d, background)
        return rgb, alpha

    @torch.no_grad()
    def render(self, c2w, H: int, W: int, focal: float, spp: int = 2) -> np.ndarray:
        """Supersampled RGBA image with straight (non-premultiplied) alpha (exposure 1).

        c2w: (4, 4) or (3, 4) array/tensor (OpenGL convention). spp: subpixel rays per side (spp^2 per pixel,
        on a regular grid; spp=1 is the pixel centre, identical to :func:`r2l.geometry.rays.get_rays`).
        Returns rgba: (H, W, 4) float32; ``rgb * a + (1 - a)`` is the mean of the white-composited subsamples,
        rgb = 0 where a = 0.
        """
        return self.render_with_depth(c2w, H, W, focal, spp)[0]

    @torch.no_grad()
    def render_with_depth(self, c2w, H: int, W: int, focal: float, spp: int = 2) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`render` and the depth of every subsample ray: (spp^2, H, W) float32, inf on a miss.

        Subsample ``j`` is offset by ``(dx, dy) = (offsets[j % spp], offsets[j // spp])`` from the pixel
        centre, with ``offsets = (arange(spp) + 0.5) / spp - 0.5``.
        """
        c2w = torch.as_tensor(np.asarray(c2w, dtype=np.float32))
        x, y = pixel_centres(H, W)
        offsets = (torch.arange(spp, dtype=torch.float32) + 0.5) / spp - 0.5
        with _one_thread():  # the rotation of many directions is slow with threads on a busy CPU
            dirs = torch.cat([camera_dirs(x + dx, y + dy, H, W, focal) for dy in offsets for dx in offsets])
            rays_o, rays_d = rays_from_dirs(c2w, dirs)
        rgb, alpha, t = self._render_rays(rays_o, rays_d, (0.0, 0.0, 0.0))
        hits = alpha.reshape(spp * spp, H * W).sum(0)
        col_sum = rgb.reshape(spp * spp, H * W, 3).sum(0)
        rgb = col_sum / hits.clamp(min=1.0)[:, None]
        rgba = torch.cat([rgb, (hits / spp**2)[:, None]], -1).reshape(H, W, 4).numpy()
        return rgba, t.reshape(spp * spp, H, W).numpy()

    def as_teacher(self, background=(1.0, 1.0, 1.0)) -> "AnalyticRenderer":
        """This scene as a ray renderer (what the pseudo-data stage asks of a teacher): ``render_rays(rays_o, rays_d)
        -> rgb (n, 3)``, exposure 1."""
        return AnalyticRenderer(self, background)


class AnalyticRenderer:
    """Ray-renderer wrapper of a :class:`BuiltinScene` (world-space rays; exact ground truth at exposure 1).

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

    def render_outputs(self, rays_o: torch.Tensor, rays_d: torch.Tensor) -> dict[str, torch.Tensor]:
        """As a teacher's: ``rgb: (n, 3)``, ``acc: (n,)`` (1 on a hit, 0 on a miss) and ``depth: (n,)`` (the hit's
        distance along ``rays_d``, 0 on a miss), float32 on CPU, for rays_o, rays_d: (n, 3) world rays."""
        rgb, hit, t = self.scene._render_rays(rays_o, rays_d, self.background)
        return {"rgb": rgb, "acc": hit, "depth": torch.where(hit > 0, t, torch.zeros_like(t))}


# ---------------------------------------------------------------- cameras


def look_at(eye, target, up) -> np.ndarray:
    """:func:`r2l.geometry.poses.look_at` in float64: (4, 4) OpenGL c2w at ``eye`` looking at ``target``, ``up`` hints +y."""
    return poses_look_at(eye, target, up, dtype=np.float64)


def sphere_poses(azimuth_deg: np.ndarray, elevation_deg: np.ndarray, radius: float = 4.0) -> np.ndarray:
    """Cameras on a sphere looking at the origin, z-up world. azimuth, elevation: (n,) degrees. Returns (n, 4, 4).

    Not NeRF's ``pose_spherical`` convention: azimuth counts from +x towards +y and a POSITIVE elevation
    is above the xy plane (this equals :func:`r2l.geometry.poses.spherical_poses` at ``(90 - az, -el)``, in float64).
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


def llff_poses(seed: int, n_views: int) -> np.ndarray:
    """Forward-facing cameras: centres jittered on a ~0.5-wide grid at z ~ FF_CAMERA_Z, looking down -z (up +y). Returns (n, 4, 4)."""
    rng = np.random.default_rng([seed, 2000])
    cols = int(math.ceil(math.sqrt(n_views * 4 / 3)))
    idx = np.arange(n_views)
    gx = (idx % cols) / max(cols - 1, 1) - 0.5
    gy = (idx // cols) / max((n_views - 1) // cols, 1) - 0.5
    eyes = np.stack([0.5 * gx, 0.4 * gy, np.full(n_views, FF_CAMERA_Z)], -1) + rng.normal(0.0, [0.03, 0.03, 0.05], (n_views, 3))
    targets = np.stack([0.2 * eyes[:, 0], 0.2 * eyes[:, 1], np.zeros(n_views)], -1) + rng.normal(0.0, 0.05, (n_views, 3))
    return np.stack([look_at(e, t, (0.0, 1.0, 0.0)) for e, t in zip(eyes, targets)])


def llff_exposures(seed: int, n_views: int, hold: int = 8, spread: float = FF_EXPOSURE) -> np.ndarray:
    """Exposure gain of each view written by :func:`write_llff`. Returns (n_views,) float64.

    Uniform in [1 - spread, 1 + spread] from ``seed``, except exactly 1 for the views 0, hold, 2 hold, ...
    (the test views of ``load_scene(..., llff_hold=hold)``), whose images are thus the analytic ground truth.
    """
    gains = np.random.default_rng([seed, 3000]).uniform(1.0 - spread, 1.0 + spread, n_views)
    gains[::hold] = 1.0
    return gains


def walk_around_poses(seed: int, n: int, stream: int, even: bool) -> np.ndarray:
    """Unbounded layout: cameras walking round the object, looking at its centre (moved by N(0, 0.05) per view).

    Azimuths evenly spread with a jitter of +-0.3 of a step when ``even``, else uniform; horizontal distance
    U[UB_CAMERA_RADIUS]; height U[UB_CAMERA_HEIGHT]; drawn from ``(seed, stream)``. Returns (n, 4, 4) float64.
    """
    rng = np.random.default_rng([seed, stream])
    step = 2.0 * math.pi / max(n, 1)
    azimuth = (np.arange(n) + rng.uniform(-0.3, 0.3, n)) * step if even else rng.uniform(0.0, 2.0 * math.pi, n)
    radius, height = rng.uniform(*UB_CAMERA_RADIUS, n), rng.uniform(*UB_CAMERA_HEIGHT, n)
    eyes = np.stack([radius * np.cos(azimuth), radius * np.sin(azimuth), height], -1)
    targets = rng.normal(0.0, 0.05, (n, 3))
    c2w = [look_at(e, t, (0.0, 0.0, 1.0)) for e, t in zip(eyes, targets)]
    return np.stack(c2w) if c2w else np.zeros((0, 4, 4))


def unbounded_split_poses(seed: int, n_train: int, n_val: int, n_test: int) -> dict[str, np.ndarray]:
    """Poses of each split of the unbounded layout (:func:`walk_around_poses`): train evenly round, val at random
    azimuths, test evenly round from its own draws."""
    return {"train": walk_around_poses(seed, n_train, 4000, True), "val": walk_around_poses(seed, n_val, 4001, False),
            "test": walk_around_poses(seed, n_test, 4002, True)}


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


def _write_splits(tmp: Path, poses: dict[str, np.ndarray], camera_angle_x: float,
                  image_of: Callable[[str, int, np.ndarray], np.ndarray]) -> None:
    """The Blender-format files of ``poses`` (split -> (n, 4, 4) camera-to-world) in ``tmp``: each view's
    ``image_of(split, i, c2w)`` ((H, W, 3 or 4) in [0, 1]) as ``{split}/r_{i}.png`` and ``transforms_{split}.json``."""
    bar = progress(sum(len(split_poses) for split_poses in poses.values()), desc="builtin scene")
    for split, split_poses in poses.items():
        (tmp / split).mkdir()
        frames = []
        for i, c2w in enumerate(split_poses):
            iio.imwrite(tmp / split / f"r_{i}.png", to_uint8(image_of(split, i, c2w)))
            frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": c2w.tolist()})
            bar.update(1)
        meta = {"camera_angle_x": camera_angle_x, "frames": frames}
        (tmp / f"transforms_{split}.json").write_text(json.dumps(meta, indent=2))
    bar.close()


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
    """Write the orbit scene of ``seed`` as a NeRF-synthetic folder (square ``resolution`` RGBA PNGs); returns it.

    Raises R2LError if ``out_dir`` exists. The folder appears complete or not at all.
    """
    _check_counts(seed=(seed, 0), resolution=(resolution, 1), n_train=(n_train, 1), n_val=(n_val, 0),
                  n_test=(n_test, 1), spp=(spp, 1))
    scene = BuiltinScene(seed)
    focal = 0.5 * resolution / math.tan(0.5 * camera_angle_x)
    poses = blender_split_poses(seed, n_train, n_val, n_test)

    def fill(tmp: Path) -> None:
        _write_splits(tmp, poses, camera_angle_x, lambda split, i, c2w: scene.render(c2w, resolution, resolution,
                                                                                     focal, spp=spp))

    log.info("writing built-in scene (seed %d, %dx%d) to %s", seed, resolution, resolution, out_dir)
    return _new_folder(out_dir, fill)


def write_unbounded(
    out_dir: str | Path,
    seed: int = 0,
    resolution: int = 64,
    n_train: int = 60,
    n_val: int = 8,
    n_test: int = 16,
    camera_angle_x: float = UB_CAMERA_ANGLE_X,
    spp: int = 2,
) -> Path:
    """Write the unbounded scene of ``seed`` as a walk-around capture (:func:`unbounded_split_poses`) in the Blender
    format: square ``resolution`` opaque RGB PNGs, ``transforms_{train,val,test}.json`` and the marker of
    :mod:`r2l.data.unbounded` (bounds from the training cameras and the nearest depth they see); returns the
    folder, which appears complete or not at all. Raises R2LError if ``out_dir`` exists."""
    _check_counts(seed=(seed, 0), resolution=(resolution, 1), n_train=(n_train, 2), n_val=(n_val, 0),
                  n_test=(n_test, 1), spp=(spp, 1))
    scene = BuiltinScene(seed, layout="unbounded")
    focal = 0.5 * resolution / math.tan(0.5 * camera_angle_x)
    poses = unbounded_split_poses(seed, n_train, n_val, n_test)

    def fill(tmp: Path) -> None:
        nearest = [math.inf]  # the nearest depth a training view sees

        def opaque_rgb(split: str, i: int, c2w: np.ndarray) -> np.ndarray:
            rgba, depth = scene.render_with_depth(c2w, resolution, resolution, focal, spp=spp)
            if float(rgba[..., 3].min()) < 1.0:
                raise R2LError(f"built-in unbounded scene: {split} view {i} has empty pixels")
            if split == "train":
                nearest[0] = min(nearest[0], float(depth.min()))
            return rgba[..., :3]

        _write_splits(tmp, poses, camera_angle_x, opaque_rgb)
        write_marker(tmp, unbounded_bounds(poses["train"], nearest[0]), {"source": "builtin", "seed": seed})

    log.info("writing built-in unbounded scene (seed %d, %dx%d) to %s", seed, resolution, resolution, out_dir)
    return _new_folder(out_dir, fill)


def write_llff(
    out_dir: str | Path,
    seed: int = 0,
    width: int = 64,
    height: int = 48,
    n_views: int = 20,
    spp: int = 2,
    hold: int = 8,
    exposure: float = FF_EXPOSURE,
) -> Path:
    """Write a forward-facing capture of the forward-facing scene of ``seed`` in the LLFF layout; returns it.

    ``images_8/image{i:03d}.png``: opaque RGB (height, width), ``clip(gain_i * rgb)`` with ``rgb`` the
    exposure-1 render (:meth:`BuiltinScene.render`, ``spp``) and ``gain_i = llff_exposures(seed, n_views, hold,
    exposure)[i]`` (1 for the test views 0, hold, ...: pass the ``llff_hold`` the scene is loaded with).
    ``poses_bounds.npy``: (n_views, 17) with hwf stored at LLFF_FACTOR x the image size (as real LLFF data
    describes its full-resolution images) and per-view bounds (0.9 x nearest, 1.1 x farthest) depth over every
    rendered subsample ray. ``exposure.json``: the gains and ``hold``. Raises R2LError if ``out_dir`` exists.
    """
    _check_counts(seed=(seed, 0), width=(width, 1), height=(height, 1), n_views=(n_views, 1), spp=(spp, 1),
                  hold=(hold, 2))
    if isinstance(exposure, bool) or not isinstance(exposure, (int, float)) or not 0.0 <= exposure < 1.0:
        raise R2LError(f"built-in scene: exposure must be a number in [0, 1), got {exposure!r}")
    scene = BuiltinScene(seed, layout="forward_facing")
    focal = LLFF_FOCAL * width
    poses = llff_poses(seed, n_views)
    gains = llff_exposures(seed, n_views, hold, exposure)

    def fill(tmp: Path) -> None:
        img_dir = tmp / f"images_{LLFF_FACTOR}"
        img_dir.mkdir()
        bounds = np.zeros((n_views, 2))
        for i, c2w in enumerate(poses):
            rgba, depth = scene.render_with_depth(c2w, height, width, focal, spp=spp)
            rgb = rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:])
            iio.imwrite(img_dir / f"image{i:03d}.png", to_uint8(gains[i] * rgb))
            depth = depth[np.isfinite(depth)]
            if depth.size == 0:
                raise R2LError(f"built-in scene: forward-facing view {i} sees nothing")
            bounds[i] = 0.9 * depth.min(), 1.1 * depth.max()
        hwf = (LLFF_FACTOR * height, LLFF_FACTOR * width, LLFF_FACTOR * focal)
        np.save(tmp / "poses_bounds.npy", opengl_to_llff(poses, hwf, bounds))
        note = "image i = clip(gains[i] * exposure-1 render); views 0, hold, 2 hold, ... (the test views) have gain 1"
        (tmp / "exposure.json").write_text(json.dumps({"gains": gains.tolist(), "hold": hold, "note": note}, indent=2))

    log.info("writing built-in forward-facing scene (seed %d, %dx%d) to %s", seed, width, height, out_dir)
    return _new_folder(out_dir, fill)
