"""Area resizing: the two-product form against the three-operand contraction and hand-computed cases."""

import numpy as np

import r2l.core.imageio as imageio
from r2l.core.imageio import area_resize, area_weights


def einsum_resize(img: np.ndarray, out_h: int, out_w: int, optimize: bool = False) -> np.ndarray:
    """The reference: one ``ih,hwc,jw->ijc`` contraction of the area weights, in float64 (the former code)."""
    wh, ww = area_weights(img.shape[0], out_h), area_weights(img.shape[1], out_w)
    return np.einsum("ih,hwc,jw->ijc", wh, img.astype(np.float64), ww, optimize=optimize)


def test_area_resize_equals_the_einsum_on_a_non_dividing_size():
    img = np.random.default_rng(0).random((37, 29, 3)).astype(np.float32)
    out = area_resize(img, 11, 7)
    assert out.shape == (11, 7, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, einsum_resize(img, 11, 7), rtol=0, atol=1e-7)
    rgba = np.random.default_rng(1).random((10, 13, 4)).astype(np.float32)  # one axis divides, the other not
    np.testing.assert_allclose(area_resize(rgba, 5, 4), einsum_resize(rgba, 5, 4), rtol=0, atol=1e-7)


def test_area_resize_hand_computed():
    img = np.arange(27, dtype=np.float32).reshape(3, 3, 3)
    np.testing.assert_allclose(area_resize(img, 1, 1), img.mean(axis=(0, 1), keepdims=True), atol=1e-6)
    img = np.arange(16, dtype=np.float32).reshape(4, 4, 1)  # 2x2 block means: (0+1+4+5)/4, ...
    np.testing.assert_allclose(area_resize(img, 2, 2)[..., 0], [[2.5, 4.5], [10.5, 12.5]], atol=1e-6)
    col = np.array([0.0, 3.0, 6.0], np.float32).reshape(3, 1, 1)  # 3 -> 2: boxes of 1.5 pixels
    np.testing.assert_allclose(area_resize(col, 2, 1).ravel(), [(0 + 3 / 2) / 1.5, (3 / 2 + 6) / 1.5], atol=1e-6)


def test_area_resize_does_not_use_the_unoptimised_einsum(monkeypatch):
    """The three-operand einsum took ~8 s for 504x378 -> 63x47 (and ~2 min at 1008x756): never call it."""
    def refuse(*args, **kwargs):
        raise AssertionError("np.einsum called")

    monkeypatch.setattr(imageio.np, "einsum", refuse)
    img = np.random.default_rng(2).random((378, 504, 3)).astype(np.float32)
    out = area_resize(img, 47, 63)
    monkeypatch.undo()
    np.testing.assert_allclose(out, einsum_resize(img, 47, 63, optimize=True), rtol=0, atol=1e-6)
