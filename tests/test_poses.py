"""Random pose samplers: conventions, ranges and distributions (r2l.geometry.poses)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from r2l.core.errors import R2LError
from r2l.geometry.poses import (
    blender_radius_from_cameras,
    look_at,
    sample_blender_poses,
    sample_llff_poses,
    spherical_poses,
)
from r2l.geometry.rays import project


def _reference_pose_spherical(theta: float, phi: float, radius: float) -> np.ndarray:
    """nerf-pytorch's pose_spherical as the composition of its matrices (translate, tilt, turn, swap axes)."""
    th, ph = np.deg2rad(theta), np.deg2rad(phi)
    trans = np.eye(4)
    trans[2, 3] = radius
    tilt = np.array([[1, 0, 0, 0], [0, np.cos(ph), -np.sin(ph), 0], [0, np.sin(ph), np.cos(ph), 0], [0, 0, 0, 1]])
    turn = np.array([[np.cos(th), 0, -np.sin(th), 0], [0, 1, 0, 0], [np.sin(th), 0, np.cos(th), 0], [0, 0, 0, 1]])
    swap = np.array([[-1, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]])
    return swap @ turn @ tilt @ trans


def _check_rotations(poses: np.ndarray) -> None:
    R = poses[:, :3, :3].astype(np.float64)
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape), atol=1e-5)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-5)
    np.testing.assert_array_equal(poses[:, 3], np.broadcast_to([0, 0, 0, 1], (len(poses), 4)))


def test_spherical_matches_nerf_pytorch_composition():
    for theta, phi in [(0, -90), (90, 0), (-135, -30), (33.3, -71.2), (179.9, -0.1)]:
        np.testing.assert_allclose(spherical_poses([theta], [phi], 4.0)[0], _reference_pose_spherical(theta, phi, 4.0), atol=1e-6)


def test_spherical_hand_values():
    top = spherical_poses([0.0], [-90.0], 4.0)[0]  # straight above, looking down
    np.testing.assert_allclose(top, [[-1, 0, 0, 0], [0, -1, 0, 0], [0, 0, 1, 4], [0, 0, 0, 1]], atol=1e-6)
    side = spherical_poses([90.0], [0.0], 4.0)[0]  # on +x, horizontal, z up
    np.testing.assert_allclose(side, [[0, 0, 1, 4], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]], atol=1e-6)


def test_look_at_hand_values_and_errors():
    np.testing.assert_allclose(look_at([4, 0, 0], [0, 0, 0], [0, 0, 1]), spherical_poses([90.0], [0.0], 4.0)[0], atol=1e-6)
    c2w = look_at([1, 2, 3], [1, 2, -5], [0, 1, 0])  # looking down -z: identity rotation
    np.testing.assert_allclose(c2w[:3, :3], np.eye(3), atol=1e-7)
    np.testing.assert_allclose(c2w[:3, 3], [1, 2, 3])
    with pytest.raises(R2LError):
        look_at([0, 0, 4], [0, 0, 0], [0, 0, 1])
    with pytest.raises(R2LError):
        look_at([1, 1, 1], [1, 1, 1], [0, 0, 1])


def test_look_at_agrees_with_spherical_off_the_pole():
    rng = np.random.default_rng(3)
    for theta, phi in zip(rng.uniform(-180, 180, 20), rng.uniform(-89, -1, 20)):
        pose = spherical_poses([theta], [phi], 2.5)[0]
        np.testing.assert_allclose(look_at(pose[:3, 3], [0, 0, 0], [0, 0, 1]), pose, atol=1e-5)


@pytest.fixture(scope="module")
def blender_sample():
    return sample_blender_poses(20_000, np.random.default_rng(0), radius=4.0, focal=555.0)


def test_blender_poses_geometry(blender_sample):
    poses, focals = blender_sample
    assert poses.shape == (20_000, 4, 4) and poses.dtype == np.float32
    assert focals.shape == (20_000,) and focals.dtype == np.float32
    _check_rotations(poses)
    c = poses[:, :3, 3].astype(np.float64)
    z = poses[:, :3, 2].astype(np.float64)
    np.testing.assert_allclose(np.linalg.norm(c, axis=-1), 4.0, atol=1e-5)
    assert (c[:, 2] >= 0).all()  # upper hemisphere, like the NeRF-synthetic training cameras
    # the viewing axis (-z) through the centre hits the origin, in front of the camera
    t = (c * z).sum(-1)
    assert (t > 0).all()
    np.testing.assert_allclose(c - t[:, None] * z, 0.0, atol=1e-5)
    assert (poses[:, 2, 1] >= -1e-6).all()  # camera up has a non-negative world-z component


def test_blender_origin_projects_to_image_centre(blender_sample):
    poses, focals = blender_sample
    for i in range(0, 20_000, 2_000):
        xy = project(torch.zeros(1, 3), torch.from_numpy(poses[i]), 400, 400, float(focals[i]))
        np.testing.assert_allclose(xy.numpy(), [[200.0, 200.0]], atol=1e-3)


def test_blender_angle_distributions(blender_sample):
    poses, focals = blender_sample
    c = poses[:, :3, 3].astype(np.float64)
    elevation = -np.rad2deg(np.arcsin(np.clip(c[:, 2] / 4.0, -1, 1)))  # nerf-pytorch phi
    azimuth = np.rad2deg(np.arctan2(c[:, 0], c[:, 1]))  # nerf-pytorch theta
    assert elevation.min() >= -90.0 and elevation.max() <= 0.0
    assert azimuth.min() >= -180.0 and azimuth.max() <= 180.0
    assert abs(elevation.mean() + 45.0) < 0.6  # standard error 0.18 deg
    assert abs(azimuth.mean()) < 2.5  # standard error 0.73 deg
    q = np.linspace(0.05, 0.95, 19)
    np.testing.assert_allclose(np.quantile(elevation, q), -90.0 + 90.0 * q, atol=1.5)
    np.testing.assert_allclose(np.quantile(azimuth, q), -180.0 + 360.0 * q, atol=3.0)
    factor = focals.astype(np.float64) / 555.0
    assert factor.min() >= 1.0 - 1e-6 and factor.max() < 2.0
    assert abs(factor.mean() - 1.5) < 0.01
    np.testing.assert_allclose(np.quantile(factor, q), 1.0 + q, atol=0.02)


def test_blender_options_and_prefix_stability():
    poses, focals = sample_blender_poses(50, np.random.default_rng(7), radius=2.0, focal=100.0, focal_scale=None)
    np.testing.assert_array_equal(focals, np.full(50, 100.0, dtype=np.float32))
    np.testing.assert_allclose(np.linalg.norm(poses[:, :3, 3], axis=-1), 2.0, atol=1e-6)
    # the first k views of a larger run are the views of a run with k views (resume / extend safely)
    p10, f10 = sample_blender_poses(10, np.random.default_rng(1), focal=50.0)
    p4, f4 = sample_blender_poses(4, np.random.default_rng(1), focal=50.0)
    np.testing.assert_array_equal(p10[:4], p4)
    np.testing.assert_array_equal(f10[:4], f4)
    p4b, _ = sample_blender_poses(4, np.random.default_rng(2), focal=50.0)
    assert not np.allclose(p4, p4b)


def test_blender_radius_from_cameras():
    poses = np.tile(np.eye(4, dtype=np.float32), (3, 1, 1))
    poses[:, :3, 3] = [[3, 4, 0], [0, 0, 2], [1, 2, 2]]  # distances 5, 2, 3
    assert blender_radius_from_cameras(poses) == pytest.approx(10.0 / 3.0)
    with pytest.raises(R2LError):
        blender_radius_from_cameras(np.zeros((0, 4, 4)))


def _forward_facing_train(m: int = 15, seed: int = 0) -> np.ndarray:
    """Training cameras of a forward-facing capture: centres near the origin, looking roughly down -z."""
    rng = np.random.default_rng(seed)
    poses = []
    for _ in range(m):
        eye = rng.uniform([-1.0, -0.5, -0.2], [1.0, 0.5, 0.2])
        target = rng.uniform([-0.5, -0.5, -10.0], [0.5, 0.5, -8.0])
        poses.append(look_at(eye, target, [0.1 * rng.normal(), 1.0, 0.0]))
    return np.stack(poses)


def test_llff_poses_ranges():
    train = _forward_facing_train()
    poses = sample_llff_poses(train, 3_000, np.random.default_rng(0))
    assert poses.shape == (3_000, 4, 4) and poses.dtype == np.float32
    _check_rotations(poses)
    lo, hi = train[:, :3, 3].min(0), train[:, :3, 3].max(0)
    big_lo, big_hi = lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo)  # 1.1x about the box centre
    c = poses[:, :3, 3]
    assert (c >= big_lo - 1e-6).all() and (c <= big_hi + 1e-6).all()
    np.testing.assert_allclose(c.min(0), big_lo, atol=0.01 * (hi - lo).max())  # fills the enlarged box
    np.testing.assert_allclose(c.max(0), big_hi, atol=0.01 * (hi - lo).max())
    z = poses[:, :3, 2].astype(np.float64)
    np.testing.assert_allclose(np.linalg.norm(z, axis=-1), 1.0, atol=1e-6)
    up = train[:, :3, 1].mean(0)
    np.testing.assert_allclose(poses[:, :3, 0] @ up, 0.0, atol=1e-5)  # x is perpendicular to the mean up
    assert (poses[:, :3, 1] @ up > 0).all()  # y leans towards the mean up
    assert (z[:, 2] > 0.9).all()  # still looking roughly down -z like the training views


def test_llff_poses_exact_construction():
    train = _forward_facing_train(seed=4)
    poses = sample_llff_poses(train, 5, np.random.default_rng(11))
    u = np.random.default_rng(11).random((5, 6))
    c_lo, c_hi = train[:, :3, 3].min(0).astype(np.float64), train[:, :3, 3].max(0).astype(np.float64)
    mid, half = (c_lo + c_hi) / 2, (c_hi - c_lo) / 2 * 1.1
    centres = mid - half + 2 * half * u[:, :3]
    z_lo, z_hi = train[:, :3, 2].min(0).astype(np.float64), train[:, :3, 2].max(0).astype(np.float64)
    z_mid, z_half = (z_lo + z_hi) / 2, (z_hi - z_lo) / 2 * 1.1  # the axes' box is enlarged 1.1x too
    z = z_mid - z_half + 2 * z_half * u[:, 3:]
    z /= np.linalg.norm(z, axis=-1, keepdims=True)
    np.testing.assert_allclose(poses[:, :3, 3], centres, atol=1e-6)
    np.testing.assert_allclose(poses[:, :3, 2], z, atol=1e-6)
    # prefix stability as for the Blender sampler
    np.testing.assert_array_equal(sample_llff_poses(train, 2, np.random.default_rng(11)), poses[:2])


def test_llff_bad_input():
    with pytest.raises(R2LError):
        sample_llff_poses(np.zeros((0, 4, 4)), 3, np.random.default_rng(0))
