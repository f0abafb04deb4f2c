"""Undoing the radial distortion COLMAP fits to photos (its SIMPLE_RADIAL camera), so r2l's pinhole rays fit them.

COLMAP's SIMPLE_RADIAL camera ``(f, cx, cy, k)`` puts a point at normalised image coordinates ``(x, y) = (X/Z, Y/Z)``
on the pixel ``(f x (1 + k r^2) + cx, f y (1 + k r^2) + cy)``, ``r^2 = x^2 + y^2``, pixel centres at ``+0.5``.
:func:`undistort_image` resamples a photo into the pinhole image of the same size and principal point: every pixel
bilinearly read where the lens put its ray. With ``k < 0`` (barrel) every such place is inside the photo and the
focal stays; with ``k > 0`` (pincushion) the border's rays land outside, so the focal grows until they do not
(:func:`undistorted_focal`, the image then shows a little less).
"""

from __future__ import annotations

import numpy as np

FOCAL_SEARCH_STEPS = 60  # bisection steps for the pincushion focal (relative precision 2^-60)
ROWS_PER_BLOCK = 256  # rows of the undistorted image computed at a time


def _sources(f: float, cx: float, cy: float, k: float, f_out: float, rows: np.ndarray,
             cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where pixels (rows, cols) (...) of the pinhole image of focal ``f_out`` read the photo: its pixel-centre
    coordinates (u, v) (...), 0 at the first pixel's centre."""
    x, y = (cols + 0.5 - cx) / f_out, (rows + 0.5 - cy) / f_out
    scale = 1.0 + k * (x * x + y * y)
    return f * x * scale + cx - 0.5, f * y * scale + cy - 0.5


def undistorted_focal(f: float, cx: float, cy: float, k: float, H: int, W: int) -> float:
    """The pinhole focal of an (H, W) photo's undistorted image: ``f`` when ``k <= 0``, else the smallest focal at
    which every border pixel reads inside the photo (within its outer pixel centres)."""
    if k <= 0.0:
        return f
    rows = np.concatenate([np.arange(H), np.arange(H), np.zeros(W), np.full(W, H - 1)]).astype(np.float64)
    cols = np.concatenate([np.zeros(H), np.full(H, W - 1), np.arange(W), np.arange(W)]).astype(np.float64)

    def inside(f_out: float) -> bool:
        u, v = _sources(f, cx, cy, k, f_out, rows, cols)
        return bool((u >= 0).all() and (u <= W - 1).all() and (v >= 0).all() and (v <= H - 1).all())

    lo, hi = f, f
    while not inside(hi):
        lo, hi = hi, 2.0 * hi
    for _ in range(FOCAL_SEARCH_STEPS):
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if inside(mid) else (mid, hi)
    return hi


def undistort_image(image: np.ndarray, f: float, cx: float, cy: float, k: float, f_out: float) -> np.ndarray:
    """image: (H, W, C) float photo of the SIMPLE_RADIAL camera ``(f, cx, cy, k)`` (pixels of this image) -> the
    (H, W, C) float32 pinhole image of focal ``f_out`` (:func:`undistorted_focal`) and the same principal point,
    read bilinearly (clamped at the border), :data:`ROWS_PER_BLOCK` rows at a time (a 12-megapixel photo stays
    within a few hundred MB)."""
    H, W = image.shape[:2]
    out = np.empty(image.shape, dtype=np.float32)
    cols = np.arange(W, dtype=np.float64)
    for start in range(0, H, ROWS_PER_BLOCK):
        rows, c = np.meshgrid(np.arange(start, min(start + ROWS_PER_BLOCK, H), dtype=np.float64), cols, indexing="ij")
        u, v = _sources(f, cx, cy, k, f_out, rows, c)
        out[start : start + rows.shape[0]] = _bilinear(image, np.clip(u, 0.0, W - 1.0), np.clip(v, 0.0, H - 1.0))
    return out


def _bilinear(image: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """image: (H, W, C) read at pixel-centre coordinates u, v (...) inside it. Returns (..., C) float64."""
    H, W = image.shape[:2]
    u0, v0 = np.minimum(np.floor(u).astype(np.int64), W - 2), np.minimum(np.floor(v).astype(np.int64), H - 2)
    a, b = (u - u0)[..., None], (v - v0)[..., None]
    top = image[v0, u0] * (1 - a) + image[v0, u0 + 1] * a
    bottom = image[v0 + 1, u0] * (1 - a) + image[v0 + 1, u0 + 1] * a
    return top * (1 - b) + bottom * b
