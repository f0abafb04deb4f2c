"""Undoing COLMAP's SIMPLE_RADIAL distortion: photos of an analytic pattern taken through a distorting lens come back
as the pinhole images of the same pattern; the pincushion focal by hand; the colmap writers' use of it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from r2l.data.colmap import SparseModel, scene_files, scene_photo, with_undistortion
from r2l.data import undistort
from r2l.data.undistort import undistort_image, undistorted_focal

H, W, F = 60, 80, 70.0
CX, CY = W / 2, H / 2


def pattern(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A smooth colour (..., 3) of normalised image coordinates: what the scene shows along each ray."""
    return np.stack([0.5 + 0.4 * np.sin(4 * x) * np.cos(3 * y), 0.5 + 0.4 * np.cos(5 * x + y), 0.5 + 0.3 * x], -1)


def distorted_photo(k: float) -> np.ndarray:
    """The (H, W, 3) photo of :func:`pattern` through the SIMPLE_RADIAL camera (F, CX, CY, k): each pixel shows the
    ray whose distorted coordinates are its centre (the distortion inverted by fixed-point iteration)."""
    rows, cols = np.meshgrid(np.arange(H) + 0.5, np.arange(W) + 0.5, indexing="ij")
    xd, yd = (cols - CX) / F, (rows - CY) / F
    x, y = xd.copy(), yd.copy()
    for _ in range(100):
        scale = 1.0 + k * (x * x + y * y)
        x, y = xd / scale, yd / scale
    return pattern(x, y)


def pinhole(f: float) -> np.ndarray:
    """The (H, W, 3) pinhole image of :func:`pattern` at focal ``f``."""
    rows, cols = np.meshgrid(np.arange(H) + 0.5, np.arange(W) + 0.5, indexing="ij")
    return pattern((cols - CX) / f, (rows - CY) / f)


@pytest.mark.parametrize("k", [-0.08, 0.06])
def test_a_distorted_photo_comes_back_as_the_pinhole_image(k, monkeypatch):
    monkeypatch.setattr(undistort, "ROWS_PER_BLOCK", 7)  # blocks of rows, the last one short
    f_out = undistorted_focal(F, CX, CY, k, H, W)
    got = undistort_image(distorted_photo(k), F, CX, CY, k, f_out)
    want = pinhole(f_out)
    assert got.shape == (H, W, 3) and got.dtype == np.float32
    error = np.abs(got - want).max()
    assert error < 1e-3  # bilinear reads of a smooth pattern (measured 3.2e-4, 2.1e-4)
    assert np.abs(distorted_photo(k) - pinhole(F)).max() > 20 * error  # not undone: far off


def test_the_focal_stays_for_barrel_and_grows_just_enough_for_pincushion():
    assert undistorted_focal(F, CX, CY, -0.1, H, W) == F and undistorted_focal(F, CX, CY, 0.0, H, W) == F
    k = 0.06
    f_out = undistorted_focal(F, CX, CY, k, H, W)
    # the corner pixel's ray lands on the photo's outermost pixel centres: by hand, its normalised coordinates
    x, y = (W - 0.5 - CX) / f_out, (H - 0.5 - CY) / f_out
    scale = 1.0 + k * (x * x + y * y)
    u, v = F * x * scale + CX - 0.5, F * y * scale + CY - 0.5
    assert f_out > F and max(u - (W - 1), v - (H - 1)) == pytest.approx(0.0, abs=1e-9)
    assert u <= W - 1 + 1e-9 and v <= H - 1 + 1e-9


def sparse_model(model: str, params: list[float], names=("a.jpg", "b.jpg", "c.jpg")) -> SparseModel:
    return SparseModel(names=list(names), w2c=np.zeros((len(names), 3, 4)), points=np.zeros((0, 3)),
                       obs_image=np.zeros(0, dtype=np.int64), obs_point=np.zeros(0, dtype=np.int64),
                       camera={"model": model, "params": params, "width": 2 * W, "height": 2 * H},
                       focal=float(params[0]), mean_reprojection_error=0.5)


def test_which_cameras_are_undistorted_and_their_files(tmp_path):
    for unchanged in (sparse_model("SIMPLE_PINHOLE", [2 * F, 2 * CX, 2 * CY]),
                      sparse_model("SIMPLE_RADIAL", [2 * F, 2 * CX, 2 * CY, 0.0])):
        assert with_undistortion(unchanged, (H, W)) is unchanged
        assert scene_files(unchanged) == ["a.jpg", "b.jpg", "c.jpg"]
    radial = with_undistortion(sparse_model("SIMPLE_RADIAL", [2 * F, 2 * CX, 2 * CY, -0.08]), (H, W))
    assert radial.undistort == {"f": F, "cx": CX, "cy": CY, "k": -0.08, "f_out": F}  # scaled to the photos' size
    assert radial.focal == F and scene_files(radial) == ["a.png", "b.png", "c.png"]
    clash = dataclasses.replace(radial, names=["a.jpg", "a.png", "b.jpg"])
    assert scene_files(clash) == ["a.jpg.png", "a.png.png", "b.jpg.png"]
    import imageio.v3 as iio

    iio.imwrite(tmp_path / "a.jpg", (distorted_photo(-0.08) * 255).round().astype(np.uint8), quality=100)
    got = scene_photo(tmp_path, "a.jpg", radial)
    assert np.abs(got - pinhole(F)).mean() < 0.01  # JPEG and 8 bits on top of the bilinear reads
