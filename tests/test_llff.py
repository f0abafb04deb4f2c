"""LLFF loader: NeRF's reorder / scale / recentre / spiral conventions on synthetic folders, and bad input."""

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from r2l.core.errors import DataError, R2LError
from r2l.data.llff import load_llff, poses_avg, split_indices, write_poses_bounds
from r2l.data.registry import load_scene

H, W, FACTOR = 6, 8, 8


def _image(k: int, h: int = H, w: int = W) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = 10 * k
    img[..., 1] = np.arange(w, dtype=np.uint8)[None, :] * 20
    img[..., 2] = 255
    return img


def _write_images(folder: Path, n: int, h: int = H, w: int = W, ext: str = "png") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        iio.imwrite(folder / f"img_{k:03d}.{ext}", _image(k, h, w))


def _random_rotation(rng, scale: float) -> np.ndarray:
    """A rotation near the identity (axis-angle with angle ~ scale)."""
    w = rng.normal(size=3) * scale
    K = np.array([[0, -w[2], w[1]], [w[2], 0, -w[0]], [-w[1], w[0], 0]])
    theta = np.linalg.norm(w)
    return np.eye(3) + np.sin(theta) / theta * K + (1 - np.cos(theta)) / theta**2 * K @ K


def _forward_facing_poses(n: int, seed: int = 0) -> np.ndarray:
    """(n, 4, 4) OpenGL poses of a forward-facing rig, placed with an arbitrary global rigid transform."""
    rng = np.random.default_rng(seed)
    G = np.eye(4)
    G[:3, :3] = _random_rotation(rng, 1.0)
    G[:3, 3] = (3.0, -1.0, 2.0)
    poses = np.tile(np.eye(4), (n, 1, 1))
    for i in range(n):
        poses[i, :3, :3] = _random_rotation(rng, 0.1)
        poses[i, :3, 3] = (rng.uniform(-1, 1), rng.uniform(-0.7, 0.7), rng.uniform(-0.2, 0.2))
    return G @ poses


def make_llff(root: Path, n: int = 10, seed: int = 0, focal: float = 5.0):
    """A synthetic LLFF folder: poses_bounds.npy (full-res hwf = 8x) + images_8/*.png. Returns poses, bounds."""
    poses = _forward_facing_poses(n, seed)
    bounds = np.stack([np.linspace(2.0, 3.0, n), np.linspace(20.0, 30.0, n)], axis=1)
    root.mkdir(parents=True, exist_ok=True)
    write_poses_bounds(root, poses, (H * FACTOR, W * FACTOR, focal * FACTOR), bounds)
    _write_images(root / f"images_{FACTOR}", n)
    return poses, bounds


def _is_rotation(R: np.ndarray, atol: float = 1e-5) -> bool:
    return np.allclose(R.T @ R, np.eye(3), atol=atol) and abs(np.linalg.det(R) - 1.0) < atol


# ----------------------------------------------------------------------------------------------
# Conventions
# ----------------------------------------------------------------------------------------------


def test_hand_computed_reorder_scale_recentre(tmp_path):
    """Two cameras with stored axes [down, right, back] = identity, at world x = 0 and x = 2."""
    rows = np.zeros((2, 17))
    for i, (x, bounds) in enumerate([(0.0, (1.0, 10.0)), (2.0, (2.0, 20.0))]):
        m = np.zeros((3, 5))
        m[:, :3] = np.eye(3)
        m[:, 3] = (x, 0.0, 0.0)
        m[:, 4] = (16.0, 16.0, 40.0)  # full-res 16x16 at factor 8 -> 2x2, focal 5
        rows[i] = np.concatenate([m.reshape(-1), bounds])
    np.save(tmp_path / "poses_bounds.npy", rows)
    _write_images(tmp_path / "images_8", 2, 2, 2)
    scene = load_llff(tmp_path, "hand", factor=8, hold=8)
    assert (scene.H, scene.W, scene.focal) == (2, 2, 5.0)
    # OpenGL axes: right = stored y, up = -stored x, back = z. Scale 1 / (1 * 0.75) = 4/3: centres (0,0,0),
    # (8/3,0,0); average pose centre (4/3,0,0) with axes right (0,1,0), up (-1,0,0), back (0,0,1).
    # Recentred: rotations identity, centres R_avg^T (c - avg) = (0, 4/3, 0) and (0, -4/3, 0).
    expected = np.tile(np.eye(4), (2, 1, 1))
    expected[0, 1, 3], expected[1, 1, 3] = 4 / 3, -4 / 3
    np.testing.assert_allclose(scene.poses, expected, atol=1e-6)
    np.testing.assert_allclose(scene.bounds, [[4 / 3, 40 / 3], [8 / 3, 80 / 3]], rtol=1e-6)
    assert {k: v.tolist() for k, v in scene.splits.items()} == {"train": [1], "val": [1], "test": [0]}
    # Spiral radii: 90th percentile of |t| = (0, 4/3, 0); centres stay in the x = z = 0 line, |y| <= 4/3.
    path = scene.render_poses
    assert path.shape == (120, 4, 4)
    np.testing.assert_allclose(path[:, [0, 2], 3], 0.0, atol=1e-6)
    assert np.abs(path[:, 1, 3]).max() == pytest.approx(4 / 3, rel=1e-3)
    np.testing.assert_allclose(path[0], np.eye(4), atol=1e-6)  # theta = 0: at the centre, looking ahead


def test_synthetic_scene(tmp_path):
    poses_gl, bounds = make_llff(tmp_path, n=10)
    scene = load_llff(tmp_path, "synth")
    assert scene.format == "llff" and scene.name == "synth"
    assert (scene.ndc, scene.ndc_near, scene.near, scene.far) == (True, 1.0, 0.0, 1.0)
    assert (scene.H, scene.W) == (H, W) and scene.focal == pytest.approx(5.0)  # 40 / factor 8
    assert scene.images.shape == (10, H, W, 3) and scene.images.dtype == np.float32
    np.testing.assert_allclose(scene.images[3, 2, 4], [30 / 255, 80 / 255, 1.0], atol=1e-6)
    assert scene.files[0].endswith("images_8/img_000.png")
    # Scale: nearest bound -> 1 / 0.75.
    sc = 1.0 / (0.75 * bounds.min())
    assert scene.bounds.min() == pytest.approx(4 / 3, rel=1e-6)
    np.testing.assert_allclose(scene.bounds, bounds * sc, rtol=1e-5)
    # Recentre: the average pose of the loaded poses is the identity.
    np.testing.assert_allclose(poses_avg(scene.poses.astype(np.float64)), np.eye(4)[:3], atol=1e-5)
    # Round trip: loaded = M @ scaled(original) for ONE rigid M (the inverse average pose).
    scaled = poses_gl.copy()
    scaled[:, :3, 3] *= sc
    M = scene.poses[0] @ np.linalg.inv(scaled[0])
    assert _is_rotation(M[:3, :3]) and np.allclose(M[3], [0, 0, 0, 1], atol=1e-6)
    np.testing.assert_allclose(scene.poses, M @ scaled, atol=1e-5)
    # Relative geometry is kept: distances between cameras scale by sc.
    d_old = np.linalg.norm(poses_gl[:, None, :3, 3] - poses_gl[None, :, :3, 3], axis=-1)
    d_new = np.linalg.norm(scene.poses[:, None, :3, 3] - scene.poses[None, :, :3, 3], axis=-1)
    np.testing.assert_allclose(d_new, d_old * sc, atol=1e-5)


def test_write_poses_bounds_column_order(tmp_path):
    c2w = np.eye(4)[None].copy()
    c2w[0, :3, 3] = (1.0, 2.0, 3.0)
    file = write_poses_bounds(tmp_path / "pb.npy", c2w, (30, 40, 50), [[1.0, 9.0]])
    arr = np.load(file)
    assert arr.shape == (1, 17) and not (tmp_path / "pb.npy.tmp").exists()
    m = arr[0, :15].reshape(3, 5)
    # stored [down, right, back] = [-up, right, back] = [-y, x, z]
    np.testing.assert_allclose(m[:, :3], [[0, 1, 0], [-1, 0, 0], [0, 0, 1]])
    np.testing.assert_allclose(m[:, 3], [1, 2, 3])
    np.testing.assert_allclose(m[:, 4], [30, 40, 50])
    np.testing.assert_allclose(arr[0, 15:], [1, 9])


def test_spiral_path(tmp_path):
    make_llff(tmp_path, n=12, seed=3)
    scene = load_llff(tmp_path, "synth")
    path = scene.render_poses
    assert path.shape == (120, 4, 4) and path.dtype == np.float32
    for pose in path:
        assert _is_rotation(pose[:3, :3].astype(np.float64))
        np.testing.assert_allclose(pose[3], [0, 0, 0, 1])
    # Spiral radii are the 90th percentile of |t| of the recentred poses, per axis.
    rads = np.percentile(np.abs(scene.poses[:, :3, 3]), 90, axis=0)
    assert np.all(np.abs(path[:, :3, 3]) <= rads + 1e-5)
    assert np.abs(path[:, 0, 3]).max() == pytest.approx(rads[0], rel=1e-3)
    # Forward facing: every camera looks down -z of the average pose, at one focus point ahead.
    assert np.all(path[:, 2, 2] > 0.9)
    b = scene.bounds
    focus = 1.0 / (0.25 / (0.9 * b.min()) + 0.75 / (5.0 * b.max()))
    t = (path[:, 2, 3] + focus) / path[:, 2, 2]  # march along -back from the centre to z = -focus
    hit = path[:, :3, 3] - t[:, None] * path[:, :3, 2]
    np.testing.assert_allclose(hit, np.tile([0.0, 0.0, -focus], (120, 1)), atol=1e-4)


def test_holdout_indices():
    s = split_indices(20, 8)
    assert s["test"].tolist() == [0, 8, 16]
    assert s["train"].tolist() == [i for i in range(20) if i not in (0, 8, 16)]
    assert s["val"].tolist() == [1, 10, 19]  # every 8th train view; these are training views too
    assert all(v.dtype == np.int64 for v in s.values())
    assert split_indices(3, 8)["val"].tolist() == [1]


def test_load_scene_dispatch_and_hold(tmp_path):
    make_llff(tmp_path, n=9)
    scene = load_scene("llff", tmp_path, factor=8, llff_hold=4)
    assert scene.splits["test"].tolist() == [0, 4, 8] and scene.ndc


def test_resize_from_full_images(tmp_path):
    """Without images_2/, images/ is shrunk by 2 with area averaging."""
    poses = _forward_facing_poses(3)
    write_poses_bounds(tmp_path, poses, (2 * H, 2 * W, 10.0), np.tile([2.0, 10.0], (3, 1)))
    (tmp_path / "images").mkdir()
    big = [np.random.default_rng(k).integers(0, 256, (2 * H, 2 * W, 3)).astype(np.uint8) for k in range(3)]
    for k, img in enumerate(big):
        iio.imwrite(tmp_path / "images" / f"IMG_{k}.PNG", img)
    scene = load_llff(tmp_path, "full", factor=2)
    assert scene.images.shape == (3, H, W, 3) and scene.focal == pytest.approx(5.0)
    expected = big[1].astype(np.float64).reshape(H, 2, W, 2, 3).mean(axis=(1, 3)) / 255
    np.testing.assert_allclose(scene.images[1], expected, atol=1e-6)


def test_jpg_and_factor_1(tmp_path):
    poses = _forward_facing_poses(2)
    write_poses_bounds(tmp_path, poses, (H, W, 7.0), np.tile([2.0, 10.0], (2, 1)))
    _write_images(tmp_path / "images", 2, ext="JPG")
    scene = load_llff(tmp_path, "jpg", factor=1)
    assert scene.images.shape == (2, H, W, 3) and scene.focal == pytest.approx(7.0)
    np.testing.assert_allclose(scene.images[:, :, :, 2], 1.0, atol=6 / 255)  # lossy, but the blue stays


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------


def _break(kind: str, root: Path) -> str:
    """Break a 10-view scene one way; returns text the DataError message must contain."""
    npy, folder = root / "poses_bounds.npy", root / "images_8"
    if kind == "missing_npy":
        npy.unlink()
        return "poses_bounds.npy: poses file not found"
    if kind == "wrong_shape":
        np.save(npy, np.load(npy)[:, :15])
        return "poses_bounds.npy: expected an (N, 17) numeric array with N >= 1, got float64 (10, 15)"
    if kind == "empty":
        np.save(npy, np.zeros((0, 17)))
        return "poses_bounds.npy: expected an (N, 17)"
    if kind == "corrupt_npy":
        npy.write_bytes(b"not numpy at all")
        return "poses_bounds.npy: not a .npy file"
    if kind == "nan":
        arr = np.load(npy)
        arr[2, 3] = np.nan
        np.save(npy, arr)
        return "poses_bounds.npy: contains NaN"
    if kind == "bad_bounds":
        arr = np.load(npy)
        arr[4, 15] = -1.0
        np.save(npy, arr)
        return "poses_bounds.npy: bounds"
    if kind == "count_mismatch":
        (folder / "img_009.png").unlink()
        return f"images_8: has 9 images but {npy} has 10 poses"
    if kind == "missing_folder":
        for f in folder.iterdir():
            f.unlink()
        folder.rmdir()
        return "images_8: image folder not found. Make it by shrinking images/ by 8, e.g. with ImageMagick: `cp"
    if kind == "indivisible_images":
        folder.rename(root / "images")
        return "images_8: image folder not found. Make it by shrinking images/ by 8"
    if kind == "empty_folder":
        for f in folder.iterdir():
            f.unlink()
        return "images_8: contains no .png/.jpg images"
    if kind == "size_mismatch":
        iio.imwrite(folder / "img_005.png", np.zeros((H, W + 2, 3), np.uint8))
        return f"img_005.png: image is {W + 2}x{H} but"
    if kind == "corrupt_image":
        (folder / "img_007.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
        return "img_007.png: cannot decode the image"
    if kind == "wrong_factor":
        arr = np.load(npy)
        arr[:, [4, 9]] /= 2  # stored H, W of images half as big as they should be
        np.save(npy, arr)
        return "poses_bounds.npy: poses are for 32x24 images, i.e. 4x3 at factor 8, but the images"
    raise AssertionError(kind)


BAD_KINDS = ["missing_npy", "wrong_shape", "empty", "corrupt_npy", "nan", "bad_bounds", "count_mismatch",
             "missing_folder", "indivisible_images", "empty_folder", "size_mismatch", "corrupt_image", "wrong_factor"]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_input_raises_data_error(tmp_path, kind):
    root = tmp_path / "scene"
    make_llff(root, n=10)
    expected = _break(kind, root)
    with pytest.raises(DataError) as info:
        load_llff(root, "bad")
    msg = str(info.value)
    assert expected in msg, msg
    assert str(root) in msg and "\n" not in msg


def test_bad_options(tmp_path):
    make_llff(tmp_path, n=4)
    for bad in (0, 2.0, True):
        with pytest.raises(R2LError, match="factor must be a positive integer"):
            load_llff(tmp_path, "x", factor=bad)
    with pytest.raises(R2LError, match="hold must be an integer >= 2"):
        load_llff(tmp_path, "x", hold=1)
    with pytest.raises(DataError, match="scene folder not found"):
        load_llff(tmp_path / "nowhere", "x")


def test_a_degenerate_pose_row_is_an_error_naming_it(tmp_path):
    make_llff(tmp_path)
    npy = tmp_path / "poses_bounds.npy"
    arr = np.load(npy)
    arr[3, :15] = 0.0  # an all-zero pose (hwf zero too)
    np.save(npy, arr)
    with pytest.raises(DataError, match=r"poses_bounds.npy: row 3 is not a camera pose \(rotation part is not orthonormal"):
        load_scene("llff", tmp_path, factor=8)
