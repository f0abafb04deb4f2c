"""Image reading, area resizing and alpha compositing shared by the scene loaders.

Names: ``img: (H, W, C)`` float32 in [0, 1] with ``C`` 3 (RGB) or 4 (RGBA).
Every reading problem becomes a :class:`r2l.core.errors.DataError` that names the file.
"""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np

from r2l.core.atomic import atomic_write
from r2l.core.errors import DataError
from r2l.core.imagefiles import list_images  # noqa: F401  (re-exported: the scene loaders import it from here)

# What decoders raise on a corrupt, truncated or non-image file.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, RuntimeError)


def read_image(path: str | Path) -> np.ndarray:
    """Read an 8- or 16-bit image file as float32 in [0, 1].

    Returns ``img: (H, W, 3)`` or ``(H, W, 4)`` (grey is replicated to RGB, grey+alpha to RGBA).
    Raises DataError naming the file if it is missing, unreadable or of an unsupported layout.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "image file not found")
    try:
        raw = iio.imread(path)
    except _DECODE_ERRORS as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(path, f"cannot decode the image (corrupt, truncated or not an image): {reason}") from None
    return _to_float_channels(path, np.asarray(raw))


def _to_float_channels(path: Path, raw: np.ndarray) -> np.ndarray:
    """raw: (H, W) or (H, W, C) integer/float pixels -> (H, W, 3|4) float32 in [0, 1]."""
    if raw.dtype == np.uint8:
        img = raw.astype(np.float32) / 255.0
    elif raw.dtype == np.uint16:
        img = raw.astype(np.float32) / 65535.0
    elif raw.dtype.kind == "f":
        img = raw.astype(np.float32)
    else:
        raise DataError(path, f"unsupported pixel type {raw.dtype} (expected 8- or 16-bit)")
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3 or img.shape[2] not in (1, 2, 3, 4) or min(img.shape[:2]) < 1:
        raise DataError(path, f"unsupported image layout {raw.shape} (expected H x W x 1..4 channels)")
    if img.shape[2] in (1, 2):  # grey (+ alpha) -> RGB (+ alpha)
        img = np.concatenate([np.repeat(img[:, :, :1], 3, axis=2), img[:, :, 1:]], axis=2)
    return np.ascontiguousarray(img)


def composite(img: np.ndarray, background=(1.0, 1.0, 1.0)) -> np.ndarray:
    """Alpha-composite over a constant background: ``rgb * a + bg * (1 - a)``.

    img: (H, W, 3|4) float32. Returns (H, W, 3) float32; RGB input is returned unchanged.
    """
    if img.shape[-1] == 3:
        return img.astype(np.float32, copy=False)
    bg = np.asarray(background, dtype=np.float32)
    out = img[..., :3] - bg
    out *= img[..., 3:4]
    out += bg  # bg + a * (rgb - bg) = rgb * a + bg * (1 - a)
    return out


def area_weights(n_in: int, n_out: int) -> np.ndarray:
    """Area-resampling matrix ``(n_out, n_in)`` along one axis.

    Output sample ``i`` covers input interval ``[i * s, (i + 1) * s)`` with ``s = n_in / n_out``;
    its weight on input sample ``j`` is the overlap of that interval with ``[j, j + 1)`` divided by ``s``
    (rows sum to 1: a box filter of width ``s``).
    """
    s = n_in / n_out
    lo = np.arange(n_out)[:, None] * s
    hi = lo + s
    j = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(hi, j + 1) - np.maximum(lo, j), 0.0, None)
    return (overlap / s).astype(np.float64)


def area_resize(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Resize by area averaging (box filter), like OpenCV's INTER_AREA when shrinking.

    img: (H, W, C) float32. Returns (out_h, out_w, C) float32. Integer factors use an exact
    block mean; other sizes use the overlap-weighted average of :func:`area_weights`, applied as two
    float64 matrix products (rows, then columns) instead of one three-operand contraction.
    """
    H, W, C = img.shape
    if (out_h, out_w) == (H, W):
        return img
    if H % out_h == 0 and W % out_w == 0:
        return _block_mean(img.astype(np.float32, copy=False), H // out_h, W // out_w)
    wh, ww = area_weights(H, out_h), area_weights(W, out_w)  # (out_h, H), (out_w, W)
    rows = np.tensordot(wh, img.astype(np.float64), axes=(1, 0))  # (out_h, W, C): rows first
    return np.matmul(ww, rows).astype(np.float32)  # (out_h, out_w, C): then columns, per row and channel


def _block_mean(img: np.ndarray, fh: int, fw: int) -> np.ndarray:
    """Mean over ``fh x fw`` blocks of ``img: (H, W, C)``; sums whole rows (contiguous, fast)."""
    H, W, C = img.shape
    rows = img.reshape(H // fh, fh, W * C)
    acc = rows[:, 0].copy()
    for i in range(1, fh):
        acc += rows[:, i]
    cols = acc.reshape(H // fh, W // fw, fw, C)
    out = cols[:, :, 0].copy()
    for j in range(1, fw):
        out += cols[:, :, j]
    out *= np.float32(1.0 / (fh * fw))
    return out


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Float image in [0, 1] (any shape) -> uint8, clipped and rounded half up."""
    return (np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def save_png(img, path: str | Path) -> None:
    """Write ``img: (H, W, 3)`` float in [0, 1] as an 8-bit PNG, atomically (temp file + rename)."""
    arr = to_uint8(img)
    atomic_write(path, lambda tmp: iio.imwrite(tmp, arr, extension=".png"), suffix=Path(path).suffix)
