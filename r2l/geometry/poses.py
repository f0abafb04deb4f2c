"""Camera pose helpers shared by every module, and random camera poses for pseudo-data.

Helpers: :func:`look_at`, :func:`spherical_poses` (nerf-pytorch's ``pose_spherical``), and the packing
of OpenGL poses as LLFF ``poses_bounds.npy`` rows and back (:func:`opengl_to_llff`, :func:`llff_to_opengl`).

Random poses as R2L's ``--create_data rand`` draws them. Two samplers, both driven by a ``numpy.random.Generator`` so a seed fixes every pose:

- :func:`sample_blender_poses` (360-degree Blender scenes): cameras on a sphere around the origin,
  azimuth uniform in [-180, 180) deg and elevation uniform in [-90, 0) deg in nerf-pytorch's
  ``pose_spherical(theta, phi, radius)`` convention, in which phi < 0 puts the camera ABOVE the object
  (z = radius * sin(-phi) >= 0 in Blender's z-up world, the upper hemisphere where the NeRF-synthetic
  training cameras are). Every camera looks at the origin; the focal length is scaled by a factor
  uniform in [1, 2) (R2L's default random focal).
- :func:`sample_llff_poses` (forward-facing scenes): centres uniform in the training centres' bounding
  box enlarged 1.1x, viewing axes uniform in the training z axes' bounding box enlarged 1.1x (as the
  authors do both), up = mean training up.

Each view draws its own row of uniforms, so the first k poses of a run with n > k views equal the poses
of a run with k views: a resumed or extended run renders the same views.
Poses are camera-to-world ``(4, 4)`` float32 in the OpenGL convention of :mod:`r2l.geometry.rays` (look_at can
return float64, and the LLFF packing works in float64).
"""

from __future__ import annotations

import numpy as np

from r2l.core.errors import R2LError


def _normalize(v: np.ndarray) -> np.ndarray:
    """Unit vectors along the last axis of ``v: (..., 3)``."""
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _frame(z: np.ndarray, up: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """c2w ``(n, 4, 4)`` float64 from camera z axes ``z: (n, 3)`` (unit; the camera looks down -z),
    an up hint ``up: (n, 3) or (3,)`` and centres ``centre: (n, 3)``."""
    x = np.cross(np.broadcast_to(up, z.shape), z)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    if np.any(norm < 1e-9):
        raise R2LError("cannot build a camera frame: the up vector is parallel to the viewing axis")
    x = x / norm
    y = np.cross(z, x)
    c2w = np.zeros((z.shape[0], 4, 4))
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2], c2w[:, :3, 3] = x, y, z, centre
    c2w[:, 3, 3] = 1.0
    return c2w


def look_at(eye, target=(0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0), dtype=np.float32) -> np.ndarray:
    """OpenGL camera-to-world ``(4, 4)`` at ``eye: (3,)`` looking at ``target: (3,)`` (default the origin).

    The camera's -z axis points at the target, x is horizontal (perpendicular to ``up: (3,)``, default
    world +z) and y is the part of ``up`` orthogonal to the viewing axis. Computed in float64 and
    returned as ``dtype``. Raises R2LError when eye and target coincide or ``up`` is parallel to the axis.
    """
    eye, target, up = (np.asarray(a, dtype=np.float64).reshape(3) for a in (eye, target, up))
    if np.linalg.norm(eye - target) < 1e-12:
        raise R2LError("look_at: eye and target coincide")
    z = _normalize(eye - target)[None]
    return _frame(z, up, eye[None])[0].astype(dtype)


def spherical_poses(azimuth_deg, elevation_deg, radius: float) -> np.ndarray:
    """nerf-pytorch ``pose_spherical(theta, phi, radius)`` for arrays of angles, looking at the origin.

    azimuth_deg, elevation_deg: (n,) angles theta and phi in degrees. Returns c2w ``(n, 4, 4)`` float32 with
    centre ``radius * (sin th cos phi, cos th cos phi, -sin phi)`` (phi < 0: above the object),
    x axis ``(-cos th, sin th, 0)`` (always horizontal, so phi = -90 is not degenerate) and y axis
    ``(sin phi sin th, sin phi cos th, cos phi)``.
    """
    th = np.deg2rad(np.asarray(azimuth_deg, dtype=np.float64).reshape(-1))
    ph = np.deg2rad(np.asarray(elevation_deg, dtype=np.float64).reshape(-1))
    z = np.stack([np.sin(th) * np.cos(ph), np.cos(th) * np.cos(ph), -np.sin(ph)], axis=-1)
    x = np.stack([-np.cos(th), np.sin(th), np.zeros_like(th)], axis=-1)
    c2w = np.zeros((th.shape[0], 4, 4))
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2] = x, np.cross(z, x), z
    c2w[:, :3, 3] = radius * z
    c2w[:, 3, 3] = 1.0
    return c2w.astype(np.float32)


def opengl_to_llff(c2w, hwf, bounds) -> np.ndarray:
    """Pack OpenGL poses as the rows of an LLFF ``poses_bounds.npy``.

    c2w: (n, 4, 4) or (n, 3, 4) OpenGL camera-to-world [right, up, back]; hwf: (H, W, focal); bounds:
    (n, 2) near/far depths. Returns (n, 17) float64: a row-major 3x5 ``[-y | x | z | centre | hwf]``
    (LLFF's [down, right, back] axes) followed by the bounds.
    """
    c2w = np.asarray(c2w, dtype=np.float64)
    R, t = c2w[:, :3, :3], c2w[:, :3, 3]
    mat = np.concatenate([-R[:, :, 1:2], R[:, :, 0:1], R[:, :, 2:3], t[:, :, None]], -1)
    hwf_col = np.broadcast_to(np.asarray(hwf, dtype=np.float64).reshape(1, 3, 1), (len(c2w), 3, 1))
    mat = np.concatenate([mat, hwf_col], -1)
    return np.concatenate([mat.reshape(-1, 15), np.asarray(bounds, dtype=np.float64)], -1)


def llff_to_opengl(poses_bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of :func:`opengl_to_llff`. poses_bounds: (n, 17). Returns c2w (n, 4, 4), hwf (n, 3), bounds (n, 2)."""
    mat = poses_bounds[:, :15].reshape(-1, 3, 5)
    c2w = np.tile(np.eye(4), (len(mat), 1, 1))
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2] = mat[:, :, 1], -mat[:, :, 0], mat[:, :, 2]
    c2w[:, :3, 3] = mat[:, :, 3]
    return c2w, mat[:, :, 4], poses_bounds[:, 15:17]


def sample_blender_poses(
    n: int,
    rng: np.random.Generator,
    radius: float = 4.0,
    focal: float = 1.0,
    focal_scale: tuple[float, float] | None = (1.0, 2.0),
) -> tuple[np.ndarray, np.ndarray]:
    """Random cameras around a 360-degree scene, as R2L's Blender pseudo-data.

    Azimuth ~ U[-180, 180) deg, elevation ~ U[-90, 0) deg (nerf-pytorch convention: the camera is in the
    upper hemisphere, centre z = radius * sin(-elevation) >= 0, like the NeRF-synthetic training views),
    distance ``radius`` from the origin, looking at the origin. The focal is ``focal`` (pixels; the
    default 1.0 returns the bare factors) times a factor ~ U[focal_scale) (None: no scaling).
    Returns ``poses: (n, 4, 4)`` float32 and ``focals: (n,)`` float32.
    """
    u = rng.random((n, 3))  # one row per view: azimuth, elevation, focal factor
    poses = spherical_poses(-180.0 + 360.0 * u[:, 0], -90.0 + 90.0 * u[:, 1], radius)
    factor = np.ones(n) if focal_scale is None else focal_scale[0] + (focal_scale[1] - focal_scale[0]) * u[:, 2]
    return poses, (focal * factor).astype(np.float32)


def blender_radius_from_cameras(poses) -> float:
    """Mean distance of the camera centres of ``poses: (m, 4, 4)`` from the origin (for scenes other
    than NeRF-synthetic, whose radius is not 4)."""
    poses = np.asarray(poses, dtype=np.float64)
    if poses.ndim != 3 or poses.shape[0] == 0:
        raise R2LError(f"need a non-empty (m, 4, 4) array of training poses, got shape {poses.shape}")
    return float(np.linalg.norm(poses[:, :3, 3], axis=-1).mean())


def _enlarged_box(v: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Bounding box of ``v: (m, 3)`` scaled by ``scale`` about its centre: ``(lo, hi)`` each (3,)."""
    lo, hi = v.min(axis=0), v.max(axis=0)
    centre, half = 0.5 * (lo + hi), 0.5 * (hi - lo) * scale
    return centre - half, centre + half


def sample_llff_poses(train_poses, n: int, rng: np.random.Generator, enlarge: float = 1.1) -> np.ndarray:
    """Random cameras for a forward-facing scene, as R2L's LLFF pseudo-data.

    train_poses: (m, 4, 4) or (m, 3, 4) OpenGL c2w of the training views.
    Centres ~ uniform in the bounding box of the training centres enlarged ``enlarge`` times about its
    centre; camera z axes (the camera looks down -z) ~ uniform in the bounding box of the training z
    axes enlarged ``enlarge`` times likewise, then normalised (the authors enlarge both boxes by 1.1); up
    hint = mean of the training y axes, orthonormalised against z (x = up x z, y = z x x). No focal
    scaling. Returns ``poses: (n, 4, 4)`` float32.

    The boxes come from the TRAINING poses only. The authors build them from all poses, test views
    included, which tells the pseudo-data where the test cameras are; r2l does not, on purpose.
    """
    train = np.asarray(train_poses, dtype=np.float64)
    if train.ndim != 3 or train.shape[0] == 0 or train.shape[1:] not in ((4, 4), (3, 4)):
        raise R2LError(f"need a non-empty (m, 4, 4) array of training poses, got shape {train.shape}")
    c_lo, c_hi = _enlarged_box(train[:, :3, 3], enlarge)
    z_lo, z_hi = _enlarged_box(train[:, :3, 2], enlarge)
    u = rng.random((n, 6))  # one row per view: centre, z axis
    centres = c_lo + (c_hi - c_lo) * u[:, :3]
    z = z_lo + (z_hi - z_lo) * u[:, 3:]
    if np.any(np.linalg.norm(z, axis=-1) < 1e-9):
        raise R2LError("training z axes span the origin: cannot sample viewing axes")
    up = train[:, :3, 1].mean(axis=0)
    return _frame(_normalize(z), up, centres).astype(np.float32)


def pose_problem(rotation: np.ndarray, tol: float = 1e-2) -> str:
    """Why ``rotation: (3, 3)`` is not a camera rotation ('' when it is): not orthonormal, or a reflection.

    The columns must be unit length and orthogonal to within ``tol`` (poses in files are rounded) and the
    determinant +1.
    """
    r = np.asarray(rotation, dtype=np.float64)
    if not np.isfinite(r).all():
        return "non-finite entries"
    err = np.abs(r.T @ r - np.eye(3)).max()
    if err > tol:
        return f"rotation part is not orthonormal (|R^T R - I| up to {err:.3g})"
    if np.linalg.det(r) < 0:
        return "rotation part is a reflection (determinant -1)"
    return ""
