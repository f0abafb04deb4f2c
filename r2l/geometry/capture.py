"""Walk-around captures: where the cameras went, as smooth functions of their azimuth about the up axis.

An unbounded scene's world is normalised (:mod:`r2l.data.unbounded`) with the object of interest at the origin
and up along +z. The registered cameras of a walk-around then sit at some azimuth ``theta`` about the z axis,
at a horizontal distance ``r`` from it and a height ``z``. :class:`CaptureProfile` smooths ``r`` and ``z`` over the
azimuth (a Gaussian kernel of :data:`BANDWIDTH_DEG`, on the circle) and finds the arc the cameras cover: the whole
circle, or, when the capture leaves a gap wider than :data:`MAX_GAP_DEG`, the arc outside that gap.

- :func:`capture_path`: the video path of an unbounded scene, a smoothed loop through the cameras (or back and
  forth along the covered arc), every frame looking at the point the cameras look at.
- :func:`sample_capture_poses`: pseudo-data cameras drawn around the cameras' path and heights (not the
  Blender upper hemisphere), so a student is trained where users will look.

Poses are OpenGL camera-to-world ``(n, 4, 4)`` (:mod:`r2l.geometry.rays`), float32 on return.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from r2l.core.errors import R2LError
from r2l.geometry.poses import _frame

BANDWIDTH_DEG = 25.0  # the kernel that smooths radius and height over the azimuth
MAX_GAP_DEG = 90.0  # a capture whose widest azimuth gap is wider than this is an arc, not a loop
UP = np.array([0.0, 0.0, 1.0])


def _wrap(a: np.ndarray) -> np.ndarray:
    """Angles (radians) wrapped into [-pi, pi)."""
    return (np.asarray(a) + np.pi) % (2.0 * np.pi) - np.pi


@dataclass
class CaptureProfile:
    """The cameras of a walk-around: ``theta, r, z: (m,)`` their azimuths (radians), horizontal distances from
    the z axis and heights; ``target: (3,)`` the point on the z axis they look at (median); ``start, span``: the
    covered arc ``[start, start + span]`` (radians; span ``2 pi`` for a full loop)."""

    theta: np.ndarray
    r: np.ndarray
    z: np.ndarray
    target: np.ndarray
    start: float
    span: float

    @property
    def loop(self) -> bool:
        """Whether the cameras go all the way round."""
        return self.span >= 2.0 * np.pi - 1e-9

    def smooth(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Kernel-smoothed radius and height at azimuths ``theta: (n,)``. Returns ``r, z``: (n,) each."""
        d = _wrap(np.asarray(theta, dtype=np.float64)[:, None] - self.theta[None, :])
        w = np.exp(-0.5 * (d / np.radians(BANDWIDTH_DEG)) ** 2) + 1e-12
        w = w / w.sum(axis=1, keepdims=True)
        return w @ self.r, w @ self.z


def _target_height(c2w: np.ndarray) -> float:
    """Median height at which the viewing axes of ``c2w: (m, 4, 4)`` pass closest to the z axis."""
    c, v = c2w[:, :3, 3], -c2w[:, :3, 2]
    horizontal = (v[:, :2] ** 2).sum(axis=1)
    s = -(c[:, :2] * v[:, :2]).sum(axis=1) / np.maximum(horizontal, 1e-12)
    return float(np.median(c[:, 2] + s * v[:, 2]))


def _covered_arc(theta: np.ndarray) -> tuple[float, float]:
    """``(start, span)`` of the arc the azimuths ``theta: (m,)`` cover (the whole circle when no gap is wider
    than MAX_GAP_DEG)."""
    order = np.sort(_wrap(theta))
    gaps = np.diff(np.concatenate([order, order[:1] + 2.0 * np.pi]))
    k = int(gaps.argmax())
    if gaps[k] <= np.radians(MAX_GAP_DEG):
        return float(order[0]), 2.0 * np.pi
    start = order[(k + 1) % len(order)]
    return float(start), float(2.0 * np.pi - gaps[k])


def capture_profile(train_poses) -> CaptureProfile:
    """The :class:`CaptureProfile` of the cameras ``train_poses: (m, 4, 4)`` (m >= 2, centres off the z axis)."""
    c2w = np.asarray(train_poses, dtype=np.float64)
    if c2w.ndim != 3 or c2w.shape[0] < 2 or c2w.shape[1:] not in ((4, 4), (3, 4)):
        raise R2LError(f"need at least 2 training poses of shape (m, 4, 4), got shape {c2w.shape}")
    c = c2w[:, :3, 3]
    r = np.linalg.norm(c[:, :2], axis=1)
    if np.any(r < 1e-6):
        raise R2LError("a camera stands on the up axis through the object: not a walk-around capture")
    theta = np.arctan2(c[:, 1], c[:, 0])
    start, span = _covered_arc(theta)
    return CaptureProfile(theta, r, c[:, 2].copy(), np.array([0.0, 0.0, _target_height(c2w)]), start, span)


def _look_at_target(eyes: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """c2w (n, 4, 4) float32 of cameras at ``eyes: (n, 3)`` looking at ``targets: (n, 3)``, up +z."""
    z = eyes - targets
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    return _frame(z, UP, eyes).astype(np.float32)


def capture_path(train_poses, n_frames: int = 60) -> np.ndarray:
    """A smoothed loop through the cameras ``train_poses: (m, 4, 4)``: ``n_frames`` poses at even azimuths all
    round (or back and forth along the covered arc, slowing at its ends), at the smoothed radius and height of
    :class:`CaptureProfile`, looking at its target. Returns (n_frames, 4, 4) float32."""
    prof = capture_profile(train_poses)
    u = np.arange(n_frames) / n_frames
    if prof.loop:
        theta = prof.start + 2.0 * np.pi * u
    else:
        theta = prof.start + prof.span * 0.5 * (1.0 - np.cos(2.0 * np.pi * u))
    r, z = prof.smooth(theta)
    eyes = np.stack([r * np.cos(theta), r * np.sin(theta), z], axis=1)
    return _look_at_target(eyes, np.broadcast_to(prof.target, eyes.shape))


def sample_capture_poses(
    train_poses,
    n: int,
    rng: np.random.Generator,
    focal: float = 1.0,
    focal_scale: tuple[float, float] | None = (1.0, 2.0),
    radius_jitter: float = 0.15,
    target_jitter: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """Random cameras around a walk-around capture's path, for pseudo-data.

    train_poses: (m, 4, 4) the training cameras. Per view: an azimuth uniform over the covered arc (widened by
    half a kernel width each side when it is not a loop); the smoothed radius times ``U[1 - radius_jitter,
    1 + radius_jitter)``; the smoothed height plus ``U[-1, 1)`` times the spread of the camera heights (their
    standard deviation, at least 5% of the mean radius); looking at the profile's target moved by
    ``U[-1, 1)^3`` times ``target_jitter`` times the mean radius; up +z. The focal is ``focal`` times a factor
    ``U[focal_scale)`` (None: none). Each view draws its own row of 8 uniforms, so the first k poses of a run
    with n > k views are those of a run with k. Returns ``poses: (n, 4, 4)`` float32, ``focals: (n,)`` float32.
    """
    prof = capture_profile(train_poses)
    u = rng.random((n, 8))
    widen = 0.0 if prof.loop else np.radians(BANDWIDTH_DEG)
    theta = prof.start - 0.5 * widen + (prof.span + widen) * u[:, 0]
    r, z = prof.smooth(theta)
    r = r * (1.0 - radius_jitter + 2.0 * radius_jitter * u[:, 1])
    mean_r = float(prof.r.mean())
    z = z + (2.0 * u[:, 2] - 1.0) * max(float(prof.z.std()), 0.05 * mean_r)
    eyes = np.stack([r * np.cos(theta), r * np.sin(theta), z], axis=1)
    targets = prof.target + (2.0 * u[:, 3:6] - 1.0) * target_jitter * mean_r
    factor = np.ones(n) if focal_scale is None else focal_scale[0] + (focal_scale[1] - focal_scale[0]) * u[:, 6]
    return _look_at_target(eyes, targets), (focal * factor).astype(np.float32)
