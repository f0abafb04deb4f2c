"""Blender (NeRF-synthetic) loader and pose helpers: tiny hand-made scenes, bad inputs, real lego."""

import json
import logging
import math
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from r2l.core.errors import DataError, R2LError
from r2l.core.imageio import area_resize, area_weights
from r2l.data.blender import load_blender, look_at, orbit_poses, spherical_pose
from r2l.data.registry import load_scene
from r2l.geometry.rays import project

ANGLE = 2 * math.atan(0.5)  # tan(angle / 2) = 0.5, so focal = 0.5 * W / 0.5 = W


def _rgba(k: int, size: int = 8) -> np.ndarray:
    """Image k: even columns opaque red-ish (255, 20k, 0), odd columns transparent blue, row 0 alpha 51."""
    img = np.zeros((size, size, 4), np.uint8)
    img[:, 0::2] = (255, 20 * k, 0, 255)
    img[:, 1::2] = (0, 0, 255, 0)
    img[0, :, 3] = 51  # alpha 0.2 on the top row
    return img


def _pose(k: int) -> list:
    m = np.eye(4)
    m[:3, 3] = (k, 0.5 * k, 4.0)
    return m.tolist()


def make_scene(root: Path, counts=(2, 1, 3), size=8, with_ext=False) -> Path:
    """Write a Blender scene with counts = (train, val, test) images; image k of the whole scene is _rgba(k)."""
    k = 0
    for split, n in zip(("train", "val", "test"), counts):
        if n is None:
            continue
        (root / split).mkdir(parents=True, exist_ok=True)
        frames = []
        for i in range(n):
            iio.imwrite(root / split / f"r_{i}.png", _rgba(k, size))
            rel = f"./{split}/r_{i}" + (".png" if with_ext else "")
            frames.append({"file_path": rel, "rotation": 0.0, "transform_matrix": _pose(k)})
            k += 1
        (root / f"transforms_{split}.json").write_text(json.dumps({"camera_angle_x": ANGLE, "frames": frames}))
    return root


# ----------------------------------------------------------------------------------------------
# Loading a tiny scene
# ----------------------------------------------------------------------------------------------


def test_composite_focal_splits(tmp_path):
    scene = load_blender(make_scene(tmp_path), "tiny")
    assert scene.images.shape == (6, 8, 8, 3) and scene.images.dtype == np.float32
    assert (scene.H, scene.W) == (8, 8)
    assert scene.focal == pytest.approx(8.0)  # 0.5 * 8 / tan(0.5 * angle) = 0.5 * 8 / 0.5
    assert (scene.near, scene.far, scene.ndc, scene.format) == (2.0, 6.0, False, "blender")
    assert {k: v.tolist() for k, v in scene.splits.items()} == {"train": [0, 1], "val": [2], "test": [3, 4, 5]}
    assert all(v.dtype == np.int64 for v in scene.splits.values())
    img = scene.images[4]  # image k = 4: opaque pixels (255, 80, 0)
    np.testing.assert_allclose(img[3, 0], [1.0, 80 / 255, 0.0], atol=1e-6)  # opaque: its own colour
    np.testing.assert_allclose(img[3, 1], [1.0, 1.0, 1.0], atol=1e-6)  # transparent: white
    a = 51 / 255  # top row: rgb * 0.2 + 1 * 0.8
    np.testing.assert_allclose(img[0, 0], [1.0, 80 / 255 * a + 1 - a, 1 - a], atol=1e-6)
    np.testing.assert_allclose(img[0, 1], [1 - a, 1 - a, 1.0], atol=1e-6)
    np.testing.assert_allclose(scene.poses[4][:3, 3], [4.0, 2.0, 4.0])
    assert scene.files[4].endswith("test/r_1.png") and len(scene.files) == 6
    assert scene.bounds is None and scene.render_poses.shape == (40, 4, 4)


def test_black_background(tmp_path):
    scene = load_blender(make_scene(tmp_path), "tiny", background=(0.0, 0.0, 0.0))
    np.testing.assert_allclose(scene.images[0, 3, 1], [0.0, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(scene.images[0, 0, 0], [0.2, 0.0, 0.0], atol=1e-6)


def test_area_resize_8_to_4(tmp_path):
    scene = load_blender(make_scene(tmp_path), "tiny", resolution=4)
    assert scene.images.shape == (6, 4, 4, 3)
    assert scene.focal == pytest.approx(4.0)
    g = 20 * 2 / 255  # image k = 2 (the val image)
    # Block below the top row: 2 opaque (1, g, 0) + 2 white pixels. Composite first, then average
    # (= premultiplied averaging): (1, (g + 1) / 2, 0.5). Straight RGBA averaging would give 0.75 in red.
    np.testing.assert_allclose(scene.images[2, 1, 0], [1.0, (g + 1) / 2, 0.5], atol=1e-6)
    a = 51 / 255  # top-left block: one pixel of each kind from row 0 and one from row 1
    top = [np.array([1, g * a + 1 - a, 1 - a]), np.array([1 - a, 1 - a, 1]), np.array([1, g, 0]), np.ones(3)]
    np.testing.assert_allclose(scene.images[2, 0, 0], np.mean(top, axis=0), atol=1e-6)


def test_area_resize_general_factor():
    w = area_weights(8, 3)  # output pixel 0 covers [0, 8/3): weights 3/8, 3/8, 2/8
    np.testing.assert_allclose(w[0, :3], [3 / 8, 3 / 8, 2 / 8])
    np.testing.assert_allclose(w[1, 2:6], [1 / 8, 3 / 8, 3 / 8, 1 / 8])
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    img = np.random.default_rng(0).random((8, 8, 3)).astype(np.float32)
    small = area_resize(img, 3, 3)
    assert small.shape == (3, 3, 3)
    assert small.mean() == pytest.approx(img.mean(), abs=1e-6)  # area averaging keeps the mean
    np.testing.assert_allclose(area_resize(img, 4, 2), img.reshape(4, 2, 2, 4, 3).mean(axis=(1, 3)), atol=1e-6)
    # pixels valued 0..7: output 0 = (0 + 1 + 2 * 2/3) / (8/3), output 2 = (5 * 2/3 + 6 + 7) / (8/3)
    np.testing.assert_allclose(w @ np.arange(8.0), [0.875, 3.5, 6.125])


def test_test_skip_no_val_and_extensions(tmp_path):
    scene = load_blender(make_scene(tmp_path, counts=(2, None, 5), with_ext=True), "tiny", test_skip=2)
    assert "val" not in scene.splits
    assert {k: v.tolist() for k, v in scene.splits.items()} == {"train": [0, 1], "test": [2, 3, 4]}
    # kept test frames are 0, 2, 4 of the test json = scene images k = 2, 4, 6
    np.testing.assert_allclose(scene.poses[scene.splits["test"]][:, 0, 3], [2.0, 4.0, 6.0])
    np.testing.assert_allclose(scene.images[3, 3, 0], [1.0, 80 / 255, 0.0], atol=1e-6)


def test_one_rgb_image_among_rgba_ones_is_an_error_naming_it(tmp_path):
    root = make_scene(tmp_path)
    iio.imwrite(root / "train" / "r_1.png", np.full((8, 8, 3), 100, np.uint8))
    with pytest.raises(DataError, match=r"r_1.png: r_1.png has no alpha channel while r_0.png has one"):
        load_scene("blender", root, resolution=4)


def test_rgb_images_without_alpha_are_used_as_they_are_with_a_warning(tmp_path, caplog):
    root = make_scene(tmp_path)
    for split in ("train", "val", "test"):
        for png in (root / split).glob("*.png"):
            iio.imwrite(png, np.full((8, 8, 3), 100, np.uint8))
    with caplog.at_level(logging.WARNING, logger="r2l"):
        scene = load_scene("blender", root, resolution=4)
    assert scene.name == tmp_path.name and "no alpha channel" in caplog.text
    np.testing.assert_allclose(scene.images, 100 / 255, atol=1e-6)


@pytest.mark.parametrize("matrix, problem", [
    (np.zeros((4, 4)), "not orthonormal"),
    (np.diag([1.0, 1.0, -1.0, 1.0]), "reflection"),
    (np.diag([2.0, 2.0, 2.0, 1.0]), "not orthonormal"),
    (np.vstack([np.eye(4)[:3], [0, 0, 1, 1]]), "last row"),
])
def test_degenerate_poses_are_errors_naming_the_frame(tmp_path, matrix, problem):
    root = make_scene(tmp_path)
    _edit_json(root, "train", lambda meta: meta["frames"][1].update(transform_matrix=matrix.tolist()))
    with pytest.raises(DataError, match=rf"transforms_train.json: frame 1: 'transform_matrix' is not a camera pose .*{problem}"):
        load_scene("blender", root, resolution=4)


# ----------------------------------------------------------------------------------------------
# Bad input: every problem is a one-line DataError naming the file
# ----------------------------------------------------------------------------------------------


def _edit_json(root: Path, split: str, edit) -> None:
    path = root / f"transforms_{split}.json"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


def _bad(kind: str, root: Path) -> str:
    """Break the tiny scene in one way; returns a string the error message must contain."""
    if kind == "missing_train":
        (root / "transforms_train.json").unlink()
        return "transforms_train.json"
    if kind == "missing_test":
        (root / "transforms_test.json").unlink()
        return "transforms_test.json"
    if kind == "malformed":
        (root / "transforms_val.json").write_text('{\n  "camera_angle_x": 0.5,\n  "frames": [,]\n}')
        return "transforms_val.json: malformed JSON at line 3 column"
    if kind == "no_angle":
        _edit_json(root, "train", lambda m: m.pop("camera_angle_x"))
        return "transforms_train.json: missing key 'camera_angle_x'"
    if kind == "no_matrix":
        _edit_json(root, "test", lambda m: m["frames"][1].pop("transform_matrix"))
        return "transforms_test.json: frame 1 is missing key 'transform_matrix'"
    if kind == "matrix_3x4":
        _edit_json(root, "train", lambda m: m["frames"][0].__setitem__("transform_matrix", _pose(0)[:3]))
        return "transforms_train.json: frame 0: 'transform_matrix' must be 4x4"
    if kind == "matrix_text":
        _edit_json(root, "train", lambda m: m["frames"][1]["transform_matrix"][2].__setitem__(1, "x"))
        return "transforms_train.json: frame 1: 'transform_matrix' must be 4x4"
    if kind == "missing_image":
        (root / "test" / "r_2.png").unlink()
        return "test/r_2.png: image file not found (frame 2 of transforms_test.json"
    if kind == "corrupt_image":
        (root / "train" / "r_1.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
        return "train/r_1.png: cannot decode the image"
    if kind == "truncated_image":
        data = (root / "val" / "r_0.png").read_bytes()
        (root / "val" / "r_0.png").write_bytes(data[:45])
        return "val/r_0.png: cannot decode the image"
    if kind == "size_mismatch":
        iio.imwrite(root / "test" / "r_1.png", np.zeros((8, 6, 4), np.uint8))
        return "test/r_1.png: image is 6x8 but"
    if kind == "angle_mismatch":
        _edit_json(root, "test", lambda m: m.__setitem__("camera_angle_x", 0.3))
        return "transforms_test.json: camera_angle_x 0.3 differs"
    raise AssertionError(kind)


BAD_KINDS = ["missing_train", "missing_test", "malformed", "no_angle", "no_matrix", "matrix_3x4", "matrix_text",
             "missing_image", "corrupt_image", "truncated_image", "size_mismatch", "angle_mismatch"]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_input_raises_data_error(tmp_path, kind):
    root = make_scene(tmp_path / "scene")
    expected = _bad(kind, root)
    with pytest.raises(DataError) as info:
        load_blender(root, "tiny")
    msg = str(info.value)
    assert expected in msg, msg
    assert str(root) in msg and "\n" not in msg
    if kind == "size_mismatch":
        assert "train/r_0.png is 8x8" in msg


def test_bad_resolution(tmp_path):
    root = make_scene(tmp_path)
    with pytest.raises(DataError, match=r"r_0.png: resolution 16 is larger than the images \(8x8\)"):
        load_blender(root, "tiny", resolution=16)
    for bad in (0, -4, 2.5, True):
        with pytest.raises(R2LError, match="resolution must be a positive integer"):
            load_blender(root, "tiny", resolution=bad)
    with pytest.raises(R2LError, match="test_skip"):
        load_blender(root, "tiny", test_skip=0)
    for split in ("train", "val", "test"):  # non-square images: resolution is the width
        for f in (root / split).iterdir():
            iio.imwrite(f, np.zeros((4, 8, 4), np.uint8))
    assert load_blender(root, "tiny", resolution=2).images.shape == (6, 1, 2, 3)
    with pytest.raises(DataError, match="resolution 3 does not keep the 8x4 aspect ratio"):
        load_blender(root, "tiny", resolution=3)
    with pytest.raises(DataError, match="scene folder not found"):
        load_blender(tmp_path / "nowhere", "x")


# ----------------------------------------------------------------------------------------------
# Pose helpers
# ----------------------------------------------------------------------------------------------


def _nerf_pose_spherical(theta_deg: float, phi_deg: float, radius: float) -> np.ndarray:
    """NeRF's Blender render pose written out as its matrix product (translate, tilt, spin, axis swap)."""
    th, ph = math.radians(theta_deg), math.radians(phi_deg)
    trans = np.eye(4)
    trans[2, 3] = radius
    rot_phi = np.array([[1, 0, 0, 0], [0, math.cos(ph), -math.sin(ph), 0],
                        [0, math.sin(ph), math.cos(ph), 0], [0, 0, 0, 1]])
    rot_theta = np.array([[math.cos(th), 0, -math.sin(th), 0], [0, 1, 0, 0],
                          [math.sin(th), 0, math.cos(th), 0], [0, 0, 0, 1]])
    swap = np.array([[-1, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]])
    return swap @ rot_theta @ rot_phi @ trans


@pytest.mark.parametrize("az, el", [(0, -30), (-180, -30), (73, -10), (200, -89), (45, -90), (10, 20)])
def test_spherical_pose_matches_nerf(az, el):
    np.testing.assert_allclose(spherical_pose(az, el, 4.0), _nerf_pose_spherical(az, el, 4.0), atol=1e-6)


def test_look_at_and_orbit():
    eye = np.array([1.0, -2.0, 3.0])
    c2w = look_at(eye, (0.5, 0.5, 0.0))
    R = c2w[:3, :3]
    np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-6)
    assert np.linalg.det(R) == pytest.approx(1.0, abs=1e-6)
    assert abs(R[2, 0]) < 1e-7  # right axis horizontal (z-up world)
    xy = project(torch.tensor([[0.5, 0.5, 0.0]]), torch.as_tensor(c2w), 10, 20, 7.0)
    torch.testing.assert_close(xy, torch.tensor([[10.0, 5.0]]))  # the target is at the image centre
    with pytest.raises(R2LError, match="parallel"):
        look_at((0, 0, 3), (0, 0, 0), (0, 0, 1))
    orbit = orbit_poses(40, 4.0, -30.0)
    assert orbit.shape == (40, 4, 4) and orbit.dtype == np.float32
    centres = orbit[:, :3, 3]
    np.testing.assert_allclose(np.linalg.norm(centres, axis=1), 4.0, atol=1e-5)
    np.testing.assert_allclose(centres[:, 2], 2.0, atol=1e-5)  # elevation -30 is 30 degrees ABOVE
    for pose in orbit[::7]:
        np.testing.assert_allclose(pose, look_at(pose[:3, 3], (0, 0, 0), (0, 0, 1)), atol=1e-6)
    np.testing.assert_allclose(orbit[0], spherical_pose(-180.0, -30.0, 4.0), atol=1e-6)
    np.testing.assert_allclose(orbit[20], spherical_pose(0.0, -30.0, 4.0), atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Real data
# ----------------------------------------------------------------------------------------------


def test_lego_100(lego_100):
    scene = load_blender(lego_100, "lego")
    assert {k: len(v) for k, v in scene.splits.items()} == {"train": 100, "val": 100, "test": 200}
    assert scene.images.shape == (400, 100, 100, 3)
    angle = json.loads((lego_100 / "transforms_train.json").read_text())["camera_angle_x"]
    assert scene.focal == pytest.approx(0.5 * 100 / math.tan(0.5 * angle))
    assert scene.focal == pytest.approx(138.8889, abs=1e-3)
    assert 0.0 <= scene.images.min() and scene.images.max() <= 1.0
    corners = scene.images[:, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert corners.min() > 0.99  # empty background composited on white
    assert scene.images.mean() < 0.95  # ...but the object is there
    radii = np.linalg.norm(scene.poses[:, :3, 3], axis=1)
    np.testing.assert_allclose(radii, 4.031, atol=0.01)  # lego cameras sit on a sphere of radius ~4.03
    # Each camera looks at (near) the origin: the origin projects close to the image centre.
    for i in (0, 150, 399):
        xy = project(torch.zeros(1, 3), torch.as_tensor(scene.poses[i]), 100, 100, scene.focal)
        assert torch.all((xy - 50).abs() < 5)


def test_lego_400_at_100_matches_lego_100(lego_100, lego_400):
    """Both copies are box filters of the 800x800 originals; only 8-bit rounding separates them."""
    small = load_blender(lego_100, "lego")
    big = load_blender(lego_400, "lego", resolution=100)
    assert big.images.shape == small.images.shape and big.focal == pytest.approx(small.focal)
    np.testing.assert_array_equal(big.poses, small.poses)
    err = np.abs(big.images - small.images)
    # measured: max 2.46/255, mean 0.13/255 (PSNR 59 dB); straight-alpha resizing would give 52/255
    assert err.max() < 2.5 / 255
    assert err.mean() < 0.15 / 255


def test_resize_orders_against_a_hand_computed_2x2_example(tmp_path):
    """One opaque red pixel and three transparent black ones, 2x2 -> 1x1, on white.

    premultiplied (composite, then average): red (1, 0, 0) and three white (1, 1, 1) -> (1, 3/4, 3/4).
    authors (average the straight RGBA, then composite): rgb (1/4, 0, 0), alpha 1/4 ->
    (1/4 * 1/4 + 3/4, 3/4, 3/4) = (13/16, 3/4, 3/4).
    """
    root = make_scene(tmp_path, size=2)
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = [255, 0, 0, 255]
    for split in ("train", "val", "test"):
        for png in (root / split).glob("*.png"):
            iio.imwrite(png, rgba)
    right = load_scene("blender", root, resolution=1)
    theirs = load_scene("blender", root, resolution=1, resize_order="authors")
    np.testing.assert_allclose(right.images[0, 0, 0], [1.0, 0.75, 0.75], atol=1e-6)
    np.testing.assert_allclose(theirs.images[0, 0, 0], [13 / 16, 0.75, 0.75], atol=1e-6)
    with pytest.raises(R2LError, match="resize_order must be one of premultiplied, authors"):
        load_scene("blender", root, resolution=1, resize_order="sideways")


def test_the_paper_presets_use_the_authors_ground_truth():
    import yaml

    root = Path(__file__).resolve().parents[1] / "config"
    assert yaml.safe_load((root / "config.yaml").read_text())["scene_defaults"]["resize_order"] == "premultiplied"
    for preset in ("paper.yaml", "lego_fast.yaml"):
        assert yaml.safe_load((root / preset).read_text())["scene_defaults"]["resize_order"] == "authors"
