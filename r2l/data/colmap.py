"""Camera poses for the user's own photos: COLMAP (through ``pycolmap``), written as an LLFF or Blender scene.

:func:`photos_to_scene` runs COLMAP on a folder of JPG/PNG photos (one camera, one image size) on the CPU:
SIFT feature extraction with a single shared camera, exhaustive or sequential matching, incremental mapping.
It then writes a scene folder that the ordinary loaders read:

- ``layout: forward_facing`` (LLFF): ``poses_bounds.npy`` (``hwf`` of the FULL-resolution photos, the
  shared camera's focal, per-image near/far bounds as LLFF's ``imgs2poses.py``: the 0.1 and 99.9
  percentiles of the depths of the sparse points the image sees) and ``images_{factor}/image{i:04d}.png``
  (the registered photos area-averaged to ``(H // factor, W // factor)``).
- ``layout: object`` (Blender / NeRF-synthetic): ``transforms_{train,val,test}.json`` and ``images/``
  (copies of the registered photos). The world is normalised as NeRF-synthetic's: the origin at the point
  nearest to every optical axis, the capture's up direction (the one perpendicular to the cameras' level
  x axes) rotated onto +z (cameras above the object look down at it, as r2l's Blender pseudo-data and
  orbit video expect), scaled so the mean camera distance from the origin is 4.0 (so Blender's near 2 /
  far 6 hold). Every ``hold``-th photo is a test
  view; every 8th training view is also written as a validation view (as LLFF scenes do).
- ``layout: unbounded`` (a walk-around capture of an object with its surroundings): the Blender files as for an
  object, in the world of :func:`normalise_unbounded` (the object of interest in the unit ball), with the marker
  of :mod:`r2l.data.unbounded` (near, far, where the sample spacing turns to disparity); its fields contract
  the far background (:mod:`r2l.geometry.contraction`).
- ``layout: auto`` picks forward-facing when every camera's viewing axis is within
  ``forward_facing_max_angle`` degrees of the mean axis; else unbounded when more than ``unbounded_share`` of
  the sparse points lie farther than ``unbounded_radius`` times the mean camera distance from the point the
  cameras look at (:func:`far_point_share`), else object. The decision and its numbers are logged.

Either way the folder also holds ``r2l_colmap.json`` (the chosen layout and loader format, the photo each
image came from, the camera, the counts and the settings; :func:`scene_format` reads it) and the sparse
model in COLMAP's binary format under ``sparse/0``. Photos that do not register are left out with a warning.

Conventions. COLMAP gives per image ``cam_from_world`` = ``[R | t]`` (3, 4), world-to-camera in the OpenCV
camera convention (x right, y down, z forward): ``x_cam = R @ x_world + t``. So the camera centre is
``C = -R.T @ t``, the columns of ``R.T`` are the camera's x, y, z axes in the world, and a point's depth in
the image is ``(R @ X + t)[2]`` (positive in front). r2l's poses are OpenGL camera-to-world (x right, y up,
looking down -z): ``c2w = [R.T[:, 0], -R.T[:, 1], -R.T[:, 2], C]`` (:func:`opencv_w2c_to_opengl_c2w`).
With a SIMPLE_RADIAL camera (the default) the photos are undistorted before they are written
(:mod:`r2l.data.undistort`: the pinhole images r2l's rays fit; :func:`with_undistortion`); ``camera_model:
SIMPLE_PINHOLE`` or ``PINHOLE`` fits a distortion-free camera and the photos are copied as they are.

``pycolmap`` is imported only when COLMAP runs (``pip install pycolmap``; tested with 4.2.1); everything
else here is NumPy.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from r2l.core.atomic import atomic_folder
from r2l.core.config import from_dict
from r2l.core.errors import DataError, R2LError
from r2l.core.imageio import area_resize, list_images, read_image, to_uint8
from r2l.data.llff import split_indices, write_poses_bounds
from r2l.data.undistort import undistort_image, undistorted_focal
from r2l.data.unbounded import unbounded_bounds, write_marker

log = logging.getLogger("r2l")

MARKER = "r2l_colmap.json"  # written into every photos scene folder; says which loader reads it
MIN_PHOTOS = 3  # fewer is a user error: COLMAP needs two to start, r2l a training and a test view
LAYOUTS = ("auto", "forward_facing", "object", "unbounded")
MATCHERS = ("exhaustive", "sequential")
CAMERA_MODELS = ("SIMPLE_RADIAL", "SIMPLE_PINHOLE", "PINHOLE")
BLENDER_RADIUS = 4.0  # mean camera distance of NeRF-synthetic scenes (Blender near 2 / far 6)
BOUNDS_PERCENTILES = (0.1, 99.9)  # LLFF imgs2poses: near/far from these percentiles of the point depths
UNBOUNDED_CAMERA_RADIUS = (1.5, 3.0)  # normalise_unbounded: the mean camera distance stays within these
UNBOUNDED_OBJECT_RADIUS = 0.8  # normalise_unbounded: the median distance of the object's points goes to this


@dataclass
class ColmapConfig:
    """COLMAP settings of the ``colmap:`` config section (per scene overridable)."""

    matcher: str = "exhaustive"  # exhaustive: every pair of photos; sequential: neighbours in file-name order
    sequential_overlap: int = 10  # sequential: each photo is matched with this many following photos
    camera_model: str = "SIMPLE_RADIAL"  # one camera shared by all photos: SIMPLE_RADIAL, SIMPLE_PINHOLE, PINHOLE
    max_image_size: int = 1600  # photos are shrunk to this longest side for feature extraction only
    max_num_features: int = 8192  # SIFT features kept per photo
    init_min_tri_angle: float = 4.0  # degrees; COLMAP's 16 finds no initial pair on small-baseline captures
    min_registered: float = 0.5  # fewer registered photos than this fraction is an error
    min_points: int = 100  # fewer triangulated 3-D points than this is an error
    forward_facing_max_angle: float = 45.0  # layout auto: forward-facing if every axis is this close to the mean
    unbounded_radius: float = 1.5  # layout auto: a point is far beyond this times the mean camera distance ...
    unbounded_share: float = 0.2  # ... and the capture unbounded when more than this share of the points is far
    seed: int = 0  # COLMAP's random seed (RANSAC, mapper); threaded runs still differ a little from run to run
    trials: int = 2  # mapping attempts (seed, seed + 1, ...) while fewer than min_registered photos register


def colmap_config_from_dict(d: dict) -> ColmapConfig:
    """Build a :class:`ColmapConfig` from a (possibly partial) dict; unknown keys or values raise R2LError."""
    cfg = from_dict(ColmapConfig, dict(d), "colmap")
    if cfg.matcher not in MATCHERS:
        raise R2LError(f"colmap: matcher must be one of {', '.join(MATCHERS)}, got {cfg.matcher!r}")
    if cfg.camera_model not in CAMERA_MODELS:
        raise R2LError(f"colmap: camera_model must be one of {', '.join(CAMERA_MODELS)}, got {cfg.camera_model!r}")
    if not 0.0 <= cfg.min_registered <= 1.0:
        raise R2LError(f"colmap: min_registered is a fraction in [0, 1], got {cfg.min_registered!r}")
    if cfg.trials < 1:
        raise R2LError(f"colmap: trials must be >= 1, got {cfg.trials!r}")
    return cfg


def _pycolmap():
    """The pycolmap module, or an R2LError saying how to install it."""
    try:
        import pycolmap
    except ImportError as err:
        raise R2LError(
            f"photos scenes need COLMAP's Python bindings: `pip install pycolmap` "
            f"(or `pip install 'r2l[photos]'`) ({err})"
        ) from None
    return pycolmap


# ----------------------------------------------------------------------------------------------
# Pose and geometry maths (NumPy only)
# ----------------------------------------------------------------------------------------------


def opencv_w2c_to_opengl_c2w(w2c: np.ndarray) -> np.ndarray:
    """COLMAP world-to-camera ``[R | t]`` (n, 3, 4), OpenCV axes -> OpenGL camera-to-world (n, 4, 4) float64.

    ``c2w[:, :3, :3] = R.T @ diag(1, -1, -1)`` (y down -> up, z forward -> back), centre ``-R.T @ t``.
    """
    w2c = np.asarray(w2c, dtype=np.float64)
    rt = np.swapaxes(w2c[:, :3, :3], 1, 2)
    c2w = np.zeros((len(w2c), 4, 4))
    c2w[:, :3, :3] = rt * np.array([1.0, -1.0, -1.0])
    c2w[:, :3, 3] = -(rt @ w2c[:, :3, 3:4])[..., 0]
    c2w[:, 3, 3] = 1.0
    return c2w


def point_depths(w2c: np.ndarray, points: np.ndarray, obs_image: np.ndarray, obs_point: np.ndarray) -> np.ndarray:
    """Depth along the viewing axis of each observation: ``(R_i @ X_j + t_i)[2]``.

    w2c: (n, 3, 4) OpenCV world-to-camera; points: (m, 3); obs_image, obs_point: (k,) indices of the image
    and the point of each observation. Returns (k,) float64 (positive in front of the camera).
    """
    w2c = np.asarray(w2c, dtype=np.float64)
    rows = w2c[obs_image, 2, :]  # (k, 4): the z row [r_z | t_z] of each observation's camera
    return np.einsum("kj,kj->k", rows[:, :3], np.asarray(points, dtype=np.float64)[obs_point]) + rows[:, 3]


def llff_bounds(w2c: np.ndarray, points: np.ndarray, obs_image: np.ndarray, obs_point: np.ndarray) -> np.ndarray:
    """Per-image near/far as LLFF's imgs2poses: percentiles 0.1 and 99.9 of the depths of the points it sees.

    Shapes as :func:`point_depths`. Returns (n, 2) float64. Raises R2LError if an image sees no point in
    front of it (it could not have been registered).
    """
    depths = point_depths(w2c, points, obs_image, obs_point)
    bounds = np.zeros((len(w2c), 2))
    for i in range(len(w2c)):
        z = depths[(obs_image == i) & (depths > 0)]
        if z.size == 0:
            raise R2LError(f"image {i} sees no sparse point in front of it: cannot bound its depths")
        bounds[i] = np.percentile(z, BOUNDS_PERCENTILES)
    return bounds


def viewing_axes(c2w: np.ndarray) -> np.ndarray:
    """Unit viewing directions (n, 3) of OpenGL ``c2w`` (n, 4, 4): the cameras look down -z."""
    d = -np.asarray(c2w, dtype=np.float64)[:, :3, 2]
    return d / np.linalg.norm(d, axis=-1, keepdims=True)


def axis_spread_deg(c2w: np.ndarray) -> float:
    """Largest angle (degrees) between a camera's viewing axis and the mean axis; 180 if they cancel out."""
    d = viewing_axes(c2w)
    mean = d.mean(axis=0)
    if np.linalg.norm(mean) < 1e-6:
        return 180.0
    cos = np.clip(d @ (mean / np.linalg.norm(mean)), -1.0, 1.0)
    return float(np.degrees(np.arccos(cos.min())))


def far_point_share(c2w: np.ndarray, points: np.ndarray, radius: float = 1.5) -> float:
    """Share of the sparse ``points: (m, 3)`` farther than ``radius`` times the mean camera distance from the point
    the cameras of ``c2w: (n, 4, 4)`` look at (:func:`nearest_point_to_axes`; the mean camera centre when their
    axes are nearly parallel). 0 without points."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if len(points) == 0:
        return 0.0
    c2w = np.asarray(c2w, dtype=np.float64)
    try:
        centre = nearest_point_to_axes(c2w[:, :3, 3], viewing_axes(c2w))
    except R2LError:
        centre = c2w[:, :3, 3].mean(axis=0)
    distance = float(np.linalg.norm(c2w[:, :3, 3] - centre, axis=-1).mean())
    return float((np.linalg.norm(points - centre, axis=-1) > radius * distance).mean())


def choose_layout(c2w: np.ndarray, layout: str = "auto", max_angle: float = 45.0, points: np.ndarray | None = None,
                  far_radius: float = 1.5, far_share: float = 0.2) -> tuple[str, float]:
    """``(layout, spread)``: ``layout`` itself unless auto; auto is forward_facing if spread <= max_angle, else
    unbounded if :func:`far_point_share` of ``points: (m, 3)`` (None: no points, never unbounded) at ``far_radius``
    exceeds ``far_share``, else object.

    c2w: (n, 4, 4) OpenGL; spread: :func:`axis_spread_deg`. The decision and its numbers are logged.
    """
    if layout not in LAYOUTS:
        raise R2LError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    spread = axis_spread_deg(c2w)
    if layout != "auto":
        log.info("layout %s (set in the config); viewing axes within %.1f deg of their mean", layout, spread)
        return layout, spread
    if spread <= max_angle:
        log.info("layout auto -> forward_facing: every viewing axis is within %.1f deg of the mean axis "
                 "(forward-facing up to %g)", spread, max_angle)
        return "forward_facing", spread
    share = None if points is None else far_point_share(c2w, points, far_radius)
    chosen = "unbounded" if share is not None and share > far_share else "object"
    seen = "no sparse points given" if share is None else (
        f"{100 * share:.1f}% of the sparse points lie farther than {far_radius:g} x the mean camera distance from "
        f"the point the cameras look at (unbounded above {100 * far_share:g}%)")
    log.info("layout auto -> %s: viewing axes spread over %.1f deg (forward-facing up to %g); %s", chosen, spread,
             max_angle, seen)
    return chosen, spread


def nearest_point_to_axes(centres: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """The point (3,) with the least summed squared distance to the lines ``centres[i] + s * dirs[i]``.

    centres, dirs: (n, 3) (dirs need not be unit). Solves ``sum_i P_i p = sum_i P_i c_i`` with
    ``P_i = I - d_i d_i^T``. Raises R2LError when the axes are (nearly) parallel: no such point exists.
    """
    d = np.asarray(dirs, dtype=np.float64)
    d = d / np.linalg.norm(d, axis=-1, keepdims=True)
    proj = np.eye(3)[None] - d[:, :, None] * d[:, None, :]  # (n, 3, 3)
    A = proj.sum(axis=0)
    if np.linalg.eigvalsh(A)[0] < 0.01 * len(d):
        raise R2LError("the cameras' viewing axes are nearly parallel (a forward-facing capture): "
                       "there is no object centre they all look at; use layout: forward_facing")
    return np.linalg.solve(A, (proj @ np.asarray(centres, dtype=np.float64)[:, :, None]).sum(axis=0))[:, 0]


def rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The rotation (3, 3) taking unit direction ``a`` onto unit direction ``b`` (about their common normal)."""
    a, b = (np.asarray(v, dtype=np.float64) / np.linalg.norm(v) for v in (a, b))
    v, c = np.cross(a, b), float(a @ b)
    if c < -1.0 + 1e-9:  # opposite: half a turn about any axis perpendicular to a
        axis = np.cross(a, [1.0, 0.0, 0.0] if abs(a[0]) < 0.9 else [0.0, 1.0, 0.0])
        axis /= np.linalg.norm(axis)
        return 2.0 * np.outer(axis, axis) - np.eye(3)
    vx = np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])
    return np.eye(3) + vx + vx @ vx / (1.0 + c)


def world_up(c2w: np.ndarray, level_tol_deg: float = 5.0, max_pairs: int = 20000) -> np.ndarray:
    """The capture's up direction (3,): the direction perpendicular to the x (right) axes of most cameras.

    Photographers (and NeRF-synthetic's renders) keep the horizon level, so the x axes are horizontal even
    where the cameras look up or down; the mean camera up (+y) axis leans towards the cameras' side of the
    object when they do not surround it evenly. A consensus: each pair of distinct x axes proposes their
    normal; the one that leaves the most x axes within ``level_tol_deg`` of level wins, and is refined as
    the direction least seen by those x axes (so a few mis-registered or rolled views do not tilt it). The
    sign follows the mean camera up, which is returned itself when the x axes are all nearly parallel.
    c2w: (n, 4, 4) OpenGL. At most ``max_pairs`` pairs (drawn with a fixed seed) are tried.
    """
    c2w = np.asarray(c2w, dtype=np.float64)
    mean_up, x = c2w[:, :3, 1].mean(axis=0), c2w[:, :3, 0]
    i, j = np.triu_indices(len(x), k=1)
    if len(i) > max_pairs:
        keep = np.random.default_rng(0).choice(len(i), max_pairs, replace=False)
        i, j = i[keep], j[keep]
    normals = np.cross(x[i], x[j])
    length = np.linalg.norm(normals, axis=-1)
    normals = normals[length > 0.1] / length[length > 0.1, None]  # x axes at least ~6 degrees apart
    if len(normals) == 0:
        return mean_up / np.linalg.norm(mean_up)
    level = np.abs(normals @ x.T) < np.sin(np.radians(level_tol_deg))  # (pairs, n)
    inliers = x[level[level.sum(axis=1).argmax()]]
    up = np.linalg.eigh(inliers.T @ inliers)[1][:, 0]  # the direction the level x axes see least
    return up if up @ mean_up >= 0 else -up


def normalise_object(c2w: np.ndarray, radius: float = BLENDER_RADIUS) -> tuple[np.ndarray, dict]:
    """Move an object-centric capture into NeRF-synthetic's frame: ``x' = scale * rot @ (x - centre)``.

    c2w: (n, 4, 4) OpenGL. centre: :func:`nearest_point_to_axes` of the optical axes; rot: the capture's up
    (:func:`world_up`) onto world +z; scale: mean camera distance from the centre -> ``radius``.
    Returns the new c2w (n, 4, 4) float64 and ``{"centre", "rotation", "scale"}`` (lists, for the marker).
    """
    c2w = np.asarray(c2w, dtype=np.float64)
    centre = nearest_point_to_axes(c2w[:, :3, 3], viewing_axes(c2w))
    rot = rotation_between(world_up(c2w), np.array([0.0, 0.0, 1.0]))
    scale = radius / float(np.linalg.norm(c2w[:, :3, 3] - centre, axis=-1).mean())
    out = c2w.copy()
    out[:, :3, :3] = rot @ c2w[:, :3, :3]
    out[:, :3, 3] = scale * (c2w[:, :3, 3] - centre) @ rot.T
    return out, {"centre": centre.tolist(), "rotation": rot.tolist(), "scale": scale}


def unbounded_scale(c2w: np.ndarray, centre: np.ndarray, points: np.ndarray) -> float:
    """The scale of :func:`normalise_unbounded`: the object's points (those within 0.75 of the mean camera distance
    ``D`` of ``centre``; at least 20 of them) put their median distance ``m`` at UNBOUNDED_OBJECT_RADIUS, i.e. the
    cameras at ``0.8 D / m``, kept within UNBOUNDED_CAMERA_RADIUS (its middle without enough points).
    c2w: (n, 4, 4); centre: (3,); points: (m, 3). Returns the factor world units are multiplied by."""
    distance = float(np.linalg.norm(c2w[:, :3, 3] - centre, axis=-1).mean())
    d = np.linalg.norm(np.asarray(points, dtype=np.float64).reshape(-1, 3) - centre, axis=-1)
    inside = d[d < 0.75 * distance]
    lo, hi = UNBOUNDED_CAMERA_RADIUS
    target = 0.5 * (lo + hi) if len(inside) < 20 else UNBOUNDED_OBJECT_RADIUS * distance / max(np.median(inside), 1e-9)
    return float(np.clip(target, lo, hi)) / distance


def normalise_unbounded(c2w: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, dict]:
    """Move a walk-around capture into an unbounded scene's world: ``x' = scale * rot @ (x - centre)``.

    As :func:`normalise_object` (centre: the point nearest to every optical axis; rot: the capture's up onto +z)
    but scaled by :func:`unbounded_scale`, so the object of interest sits in the unit ball and the cameras 1.5 to
    3 from its centre. c2w: (n, 4, 4) OpenGL; points: (m, 3) the sparse points. Returns the new c2w (n, 4, 4)
    float64 and ``{"centre", "rotation", "scale"}``.
    """
    c2w = np.asarray(c2w, dtype=np.float64)
    centre = nearest_point_to_axes(c2w[:, :3, 3], viewing_axes(c2w))
    rot = rotation_between(world_up(c2w), np.array([0.0, 0.0, 1.0]))
    scale = unbounded_scale(c2w, centre, points)
    out = c2w.copy()
    out[:, :3, :3] = rot @ c2w[:, :3, :3]
    out[:, :3, 3] = scale * (c2w[:, :3, 3] - centre) @ rot.T
    return out, {"centre": centre.tolist(), "rotation": rot.tolist(), "scale": scale}


# ----------------------------------------------------------------------------------------------
# The photos
# ----------------------------------------------------------------------------------------------


def check_photos(folder: str | Path) -> tuple[list[Path], tuple[int, int]]:
    """The photos of ``folder`` (sorted by name) and their common size ``(H, W)``.

    Every photo is decoded once, so a corrupt file is reported before COLMAP runs. Raises DataError for a
    missing folder, fewer than :data:`MIN_PHOTOS` photos, an unreadable photo or photos of different sizes.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "photo folder not found (a `format: photos` scene needs `path:` to a folder of photos)")
    files = list_images(folder)
    if len(files) < MIN_PHOTOS:
        found = "contains no .png/.jpg photos" if not files else f"has only {len(files)} photo(s)"
        raise DataError(folder, f"{found}; COLMAP needs at least {MIN_PHOTOS} (a good capture has 20 or more)")
    size = None
    for path in files:
        shape = read_image(path).shape[:2]
        if size is not None and shape != size:
            raise DataError(path, f"photo is {shape[1]}x{shape[0]} but {files[0].name} is {size[1]}x{size[0]}; "
                                  "all photos must come from one camera at one size (COLMAP fits one shared camera)")
        size = shape
    log.info("%s: %d photos of %dx%d", folder, len(files), size[1], size[0])
    return files, size


@contextlib.contextmanager
def _native_stderr_to_python_stderr():
    """Send what C++ writes to file descriptor 2 (COLMAP's log lines) to ``sys.stderr`` (the rule's log)."""
    try:
        target = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # pytest's capture, StringIO: leave fd 2 alone
        target = 2
    if target == 2:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(target, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


# ----------------------------------------------------------------------------------------------
# Running COLMAP
# ----------------------------------------------------------------------------------------------


@dataclass
class SparseModel:
    """What r2l keeps of a COLMAP reconstruction (registered photos only, sorted by name).

    names: (n,) photo file names; w2c: (n, 3, 4) cam_from_world [R | t], OpenCV axes; points: (m, 3);
    obs_image, obs_point: (k,) int, image and point index of each observation; camera: the shared camera
    (model, params, width, height); focal: its focal in pixels at full resolution (mean of fx, fy), the pinhole
    focal of the undistorted photos when ``undistort`` is set (:func:`with_undistortion`).
    """

    names: list[str]
    w2c: np.ndarray
    points: np.ndarray
    obs_image: np.ndarray
    obs_point: np.ndarray
    camera: dict
    focal: float
    mean_reprojection_error: float
    undistort: dict | None = None  # SIMPLE_RADIAL: f, cx, cy, k (photo pixels) and the pinhole focal f_out


def _extract_and_match(pc, db: Path, folder: Path, names: list[str], cfg: ColmapConfig, threads: int) -> None:
    """SIFT features of ``names`` (one shared camera) and verified matches, into the database ``db``."""
    reader = pc.ImageReaderOptions()
    reader.camera_model = cfg.camera_model
    extraction = pc.FeatureExtractionOptions()
    extraction.num_threads, extraction.max_image_size, extraction.use_gpu = threads, cfg.max_image_size, False
    extraction.sift.max_num_features = cfg.max_num_features
    t0 = time.perf_counter()
    pc.extract_features(db, folder, image_names=names, camera_mode=pc.CameraMode.SINGLE,
                        reader_options=reader, extraction_options=extraction, device=pc.Device.cpu)
    log.info("COLMAP: features of %d photos extracted in %.1f s", len(names), time.perf_counter() - t0)
    matching = pc.FeatureMatchingOptions()
    matching.num_threads, matching.use_gpu = threads, False
    t0 = time.perf_counter()
    if cfg.matcher == "sequential":
        pairing = pc.SequentialPairingOptions()
        pairing.overlap = cfg.sequential_overlap
        pc.match_sequential(db, matching_options=matching, pairing_options=pairing, device=pc.Device.cpu)
    else:
        pc.match_exhaustive(db, matching_options=matching, device=pc.Device.cpu)
    log.info("COLMAP: %s matching done in %.1f s", cfg.matcher, time.perf_counter() - t0)


def _map(pc, db: Path, folder: Path, out: Path, cfg: ColmapConfig, threads: int, seed: int):
    """One incremental mapping run; returns the reconstruction with most registered photos, or None."""
    options = pc.IncrementalPipelineOptions()
    options.num_threads, options.random_seed = threads, seed
    options.multiple_models, options.extract_colors = True, False  # keeps trying initial pairs; largest wins
    options.mapper.init_min_tri_angle = cfg.init_min_tri_angle
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    models = pc.incremental_mapping(db, folder, out, options=options)
    best = max(models.values(), key=lambda r: r.num_reg_images(), default=None)
    n = 0 if best is None else best.num_reg_images()
    log.info("COLMAP: mapping (seed %d) registered %d photos in %.1f s", seed, n, time.perf_counter() - t0)
    return best


def _needed(n_photos: int, cfg: ColmapConfig) -> int:
    """Registered photos needed: ``min_registered`` of them, and never fewer than MIN_PHOTOS."""
    return max(MIN_PHOTOS, math.ceil(cfg.min_registered * n_photos - 1e-9))


def run_colmap(folder: Path, names: list[str], work: Path, cfg: ColmapConfig, threads: int = 1):
    """Extract, match and map ``names`` (photo file names in ``folder``) with the database etc. in ``work``.

    Mapping is tried with seeds ``cfg.seed, cfg.seed + 1, ...`` (``cfg.trials`` in all) until enough photos
    register (:func:`_needed`); the best run is returned (a pycolmap Reconstruction, or None if none).
    """
    pc = _pycolmap()
    pc.set_random_seed(cfg.seed)
    db = work / "database.db"
    with _native_stderr_to_python_stderr():
        _extract_and_match(pc, db, folder, names, cfg, threads)
        best = None
        for trial in range(cfg.trials):
            rec = _map(pc, db, folder, work / f"sparse_{trial}", cfg, threads, cfg.seed + trial)
            if rec is not None and (best is None or rec.num_reg_images() > best.num_reg_images()):
                best = rec
            if best is not None and best.num_reg_images() >= _needed(len(names), cfg):
                break
    return best


def sparse_model(rec) -> SparseModel:
    """The registered photos (sorted by name), the points and their observations of a Reconstruction."""
    ids = sorted(rec.reg_image_ids(), key=lambda i: rec.image(i).name)
    index = {image_id: k for k, image_id in enumerate(ids)}
    w2c = np.stack([rec.image(i).cam_from_world().matrix() for i in ids])
    points, obs_image, obs_point = [], [], []
    for j, point in enumerate(rec.points3D.values()):
        points.append(point.xyz)
        for element in point.track.elements:
            obs_image.append(index[element.image_id])
            obs_point.append(j)
    cam = rec.camera(rec.image(ids[0]).camera_id)
    focals = [float(cam.params[k]) for k in cam.focal_length_idxs()]
    camera = {"model": cam.model_name, "params": [float(p) for p in cam.params], "width": int(cam.width),
              "height": int(cam.height)}
    return SparseModel(
        names=[rec.image(i).name for i in ids], w2c=w2c, points=np.asarray(points, dtype=np.float64).reshape(-1, 3),
        obs_image=np.asarray(obs_image, dtype=np.int64), obs_point=np.asarray(obs_point, dtype=np.int64),
        camera=camera, focal=float(np.mean(focals)),
        mean_reprojection_error=float(rec.compute_mean_reprojection_error()),
    )


def _registration_hint(cfg: ColmapConfig) -> str:
    """What may help when COLMAP registers too few photos (advice that fits the matcher in use)."""
    if cfg.matcher == "sequential":
        matcher = (f"a larger colmap.sequential_overlap (now {cfg.sequential_overlap}) may help, or colmap: "
                   "{matcher: exhaustive} when the photos are not in capture order")
    else:  # exhaustive already matches every pair
        matcher = ("for video frames, colmap: {matcher: sequential} with a larger colmap.sequential_overlap "
                   f"(default {ColmapConfig.sequential_overlap}) may help")
    return ("the photos must show the scene from different positions (identical or near-identical photos, or a "
            "camera that only turns, give no 3-D), overlap enough and be sharp and textured; take more photos, "
            f"moving between shots, or try a smaller colmap.init_min_tri_angle; {matcher}")


def check_registration(rec, folder: Path, names: list[str], cfg: ColmapConfig) -> SparseModel:
    """The SparseModel of ``rec``, or DataError when too few photos registered or too few points exist.

    Photos that did not register are named in a warning.
    """
    n, need = len(names), _needed(len(names), cfg)
    hint = _registration_hint(cfg)
    if rec is None or rec.num_reg_images() == 0:
        raise DataError(folder, f"COLMAP registered none of the {n} photos (no initial image pair found); {hint}")
    if rec.num_reg_images() < need:
        raise DataError(folder, f"COLMAP registered only {rec.num_reg_images()} of {n} photos (need {need}: "
                                f"colmap.min_registered {cfg.min_registered:g}); {hint}")
    if rec.num_points3D() < cfg.min_points:
        raise DataError(folder, f"COLMAP triangulated only {rec.num_points3D()} 3-D points from {n} photos "
                                f"(need colmap.min_points {cfg.min_points}); {hint}")
    sparse = sparse_model(rec)
    left_out = sorted(set(names) - set(sparse.names))
    if left_out:
        log.warning("COLMAP registered %d of %d photos; left out: %s", len(sparse.names), n, ", ".join(left_out))
    else:
        log.info("COLMAP registered all %d photos", n)
    log.info("COLMAP: %d 3-D points, mean reprojection error %.3f px; camera %s %s", len(sparse.points),
             sparse.mean_reprojection_error, sparse.camera["model"], [round(p, 4) for p in sparse.camera["params"]])
    return sparse


def with_undistortion(sparse: SparseModel, size: tuple[int, int]) -> SparseModel:
    """``sparse`` with ``undistort`` set when its camera is SIMPLE_RADIAL with k != 0 (params scaled to the photos'
    ``size`` (H, W)) and ``focal`` the undistorted photos' pinhole focal; unchanged otherwise."""
    cam = sparse.camera
    if cam["model"] != "SIMPLE_RADIAL" or cam["params"][3] == 0.0:
        return sparse
    H, W = size
    sx, sy = W / cam["width"], H / cam["height"]
    f, cx, cy, k = cam["params"][0] * sx, cam["params"][1] * sx, cam["params"][2] * sy, cam["params"][3]
    f_out = undistorted_focal(f, cx, cy, k, H, W)
    log.info("undoing the radial distortion k = %.4g: the photos are resampled into pinhole images, focal %.2f -> "
             "%.2f px", k, f, f_out)
    return replace(sparse, focal=f_out, undistort={"f": f, "cx": cx, "cy": cy, "k": k, "f_out": f_out})


def scene_photo(folder: Path, name: str, sparse: SparseModel) -> np.ndarray:
    """The photo ``name`` as the scene stores it: (H, W, C) float32, undistorted when ``sparse.undistort`` says."""
    image = read_image(folder / name)
    u = sparse.undistort
    return image if u is None else undistort_image(image, u["f"], u["cx"], u["cy"], u["k"], u["f_out"])


# ----------------------------------------------------------------------------------------------
# Writing the scene
# ----------------------------------------------------------------------------------------------


def write_llff(out: Path, sparse: SparseModel, folder: Path, size: tuple[int, int], factor: int) -> dict:
    """``poses_bounds.npy`` + ``images_{factor}/image{i:04d}.png`` of the registered photos; returns name map.

    size: (H, W) of the full-resolution photos (stored as hwf with the shared camera's focal); the images are
    area-averaged to ``(H // factor, W // factor)`` (RGB, alpha dropped).
    """
    H, W = size
    c2w = opencv_w2c_to_opengl_c2w(sparse.w2c)
    bounds = llff_bounds(sparse.w2c, sparse.points, sparse.obs_image, sparse.obs_point)
    img_dir = out / f"images_{factor}"
    img_dir.mkdir(parents=True)
    h, w = max(1, H // factor), max(1, W // factor)
    names = {}
    for i, name in enumerate(sparse.names):
        names[f"image{i:04d}.png"] = name
        image = area_resize(scene_photo(folder, name, sparse)[..., :3], h, w)
        iio.imwrite(img_dir / f"image{i:04d}.png", to_uint8(image))
    write_poses_bounds(out, c2w, (H, W, sparse.focal), bounds)
    log.info("wrote an LLFF scene: %d views, images_%d at %dx%d, bounds %.3g .. %.3g (COLMAP units)",
             len(names), factor, w, h, bounds[:, 0].min(), bounds[:, 1].max())
    return names


def _write_transforms(out: Path, sparse: SparseModel, folder: Path, W: int, hold: int, c2w: np.ndarray) -> float:
    """``transforms_{train,val,test}.json`` with the poses ``c2w: (n, 4, 4)`` + ``images/`` (copies of the
    registered photos, or their undistorted PNGs: :func:`scene_files`); returns camera_angle_x. The val views are
    training views (:func:`r2l.data.llff.split_indices`)."""
    (out / "images").mkdir(parents=True)
    files = scene_files(sparse)
    for name, file in zip(sparse.names, files, strict=True):
        if sparse.undistort is None:
            shutil.copy2(folder / name, out / "images" / file)
        else:
            iio.imwrite(out / "images" / file, to_uint8(scene_photo(folder, name, sparse)))
    angle = 2.0 * math.atan(0.5 * W / sparse.focal)
    for split, idx in split_indices(len(sparse.names), hold).items():
        frames = [{"file_path": f"./images/{files[i]}", "transform_matrix": c2w[i].tolist()} for i in idx]
        (out / f"transforms_{split}.json").write_text(json.dumps({"camera_angle_x": angle, "frames": frames}, indent=2))
    return angle


def scene_files(sparse: SparseModel) -> list[str]:
    """The scene's image file of each registered photo: its own name, or with ``.png`` for an undistorted one
    (appended when two photos share a stem)."""
    if sparse.undistort is None:
        return list(sparse.names)
    stems = [Path(name).stem for name in sparse.names]
    unique = len(set(stems)) == len(stems)
    return [f"{stem}.png" if unique else f"{name}.png" for stem, name in zip(stems, sparse.names, strict=True)]


def write_blender(out: Path, sparse: SparseModel, folder: Path, size: tuple[int, int], hold: int) -> dict:
    """``transforms_{train,val,test}.json`` + ``images/`` (copies of the registered photos); returns the
    normalisation (:func:`normalise_object`). The val views are training views (:func:`r2l.data.llff.split_indices`)."""
    c2w, transform = normalise_object(opencv_w2c_to_opengl_c2w(sparse.w2c))
    angle = _write_transforms(out, sparse, folder, size[1], hold, c2w)
    pts = transform["scale"] * np.linalg.norm(sparse.points - np.asarray(transform["centre"]), axis=-1)
    log.info("wrote a Blender scene: %d views, camera distance 4, camera_angle_x %.4f; half of the sparse points "
             "lie within %.2f of the centre, 90%% within %.2f", len(sparse.names), angle,
             np.percentile(pts, 50), np.percentile(pts, 90))
    return transform


def nearest_depth(sparse: SparseModel) -> float:
    """The smallest of the images' near bounds (:func:`llff_bounds`: 0.1 percentile of the depths they see)."""
    return float(llff_bounds(sparse.w2c, sparse.points, sparse.obs_image, sparse.obs_point)[:, 0].min())


def write_unbounded(out: Path, sparse: SparseModel, folder: Path, size: tuple[int, int], hold: int) -> dict:
    """An unbounded scene: the files of :func:`write_blender` in the world of :func:`normalise_unbounded` and the
    marker of :mod:`r2l.data.unbounded` (its near from the nearest depth the photos see); returns the
    normalisation with the bounds."""
    c2w, transform = normalise_unbounded(opencv_w2c_to_opengl_c2w(sparse.w2c), sparse.points)
    angle = _write_transforms(out, sparse, folder, size[1], hold, c2w)
    bounds = unbounded_bounds(c2w, transform["scale"] * nearest_depth(sparse))
    write_marker(out, bounds, {"source": "colmap", "normalisation": transform})
    pts = transform["scale"] * np.linalg.norm(sparse.points - np.asarray(transform["centre"]), axis=-1)
    log.info("wrote an unbounded scene: %d views, cameras %.2f from the centre on average, camera_angle_x %.4f; "
             "half of the sparse points lie within %.2f of the centre, 90%% within %.2f (contracted beyond 1)",
             len(sparse.names), float(np.linalg.norm(c2w[:, :3, 3], axis=-1).mean()), angle,
             np.percentile(pts, 50), np.percentile(pts, 90))
    return {**transform, **bounds}


def _write_sparse(rec, out: Path) -> None:
    """The registered model in COLMAP's binary format under ``out/sparse/0``."""
    (out / "sparse" / "0").mkdir(parents=True)
    rec.write(out / "sparse" / "0")


def _write_layout(out: Path, layout: str, sparse: SparseModel, folder: Path, size: tuple[int, int], factor: int,
                  hold: int) -> dict:
    """The scene files of ``layout`` (:func:`write_llff`, :func:`write_unbounded` or :func:`write_blender`); returns
    what the marker records of them (``images`` or ``normalisation``)."""
    if layout == "forward_facing":
        return {"images": write_llff(out, sparse, folder, size, factor)}
    writer = write_unbounded if layout == "unbounded" else write_blender
    return {"normalisation": writer(out, sparse, folder, size, hold)}


def photos_to_scene(
    photos: str | Path,
    dest: str | Path,
    cfg: ColmapConfig | None = None,
    layout: str = "auto",
    factor: int = 8,
    hold: int = 8,
    threads: int | None = None,
) -> Path:
    """Run COLMAP on the photos in ``photos`` and write the scene folder ``dest`` (complete or not at all).

    layout: auto | forward_facing (LLFF, ``images_{factor}``) | object (Blender, every ``hold``-th photo a
    test view) | unbounded (Blender files with the marker of :mod:`r2l.data.unbounded`). threads: CPU threads for COLMAP (None: all cores). Returns ``dest``. User errors (no or too
    few photos, unreadable photos, too few registered photos or 3-D points) raise DataError naming the folder.
    """
    cfg = cfg or ColmapConfig()
    photos = Path(photos)
    if layout not in LAYOUTS:
        raise R2LError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    threads = threads or os.cpu_count() or 1
    files, size = check_photos(photos)
    names = [f.name for f in files]

    def fill(scratch: Path) -> Path:
        t0 = time.perf_counter()
        (scratch / "colmap").mkdir()
        rec = run_colmap(photos, names, scratch / "colmap", cfg, threads)
        sparse = with_undistortion(check_registration(rec, photos, names, cfg), size)
        c2w = opencv_w2c_to_opengl_c2w(sparse.w2c)
        chosen, spread = choose_layout(c2w, layout, cfg.forward_facing_max_angle, sparse.points, cfg.unbounded_radius,
                                       cfg.unbounded_share)
        out = scratch / "scene"
        out.mkdir()
        marker = {"layout": chosen, "format": "llff" if chosen == "forward_facing" else "blender",
                  "axis_spread_deg": spread, "photos": str(photos), "n_photos": len(names),
                  "registered": sparse.names, "camera": sparse.camera, "focal": sparse.focal,
                  "undistorted": sparse.undistort,
                  "n_points": len(sparse.points), "mean_reprojection_error": sparse.mean_reprojection_error,
                  "settings": asdict(cfg), "pycolmap": getattr(_pycolmap(), "__version__", "unknown"),
                  "minutes": (time.perf_counter() - t0) / 60.0}
        if chosen != "forward_facing":
            marker["far_point_share"] = far_point_share(c2w, sparse.points, cfg.unbounded_radius)
        marker.update(_write_layout(out, chosen, sparse, photos, size, factor, hold))
        _write_sparse(rec, out)
        (out / MARKER).write_text(json.dumps(marker, indent=2))
        return out

    return atomic_folder(dest, fill)


def scene_format(folder: str | Path) -> str:
    """The loader format (``llff`` or ``blender``) of a scene folder written by :func:`photos_to_scene`."""
    path = Path(folder) / MARKER
    if not path.is_file():
        raise DataError(path, "not found: a photos scene folder is written by the colmap rule "
                              "(r2l.data.colmap.photos_to_scene)")
    try:
        fmt = json.loads(path.read_text())["format"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(path, f"cannot read the scene format ({type(err).__name__}: {err})") from None
    if fmt not in ("llff", "blender"):
        raise DataError(path, f"unknown format {fmt!r} (expected llff or blender)")
    return fmt
