"""Loader for forward-facing LLFF scenes (``poses_bounds.npy`` + ``images_{factor}/``), NeRF conventions.

``poses_bounds.npy`` is ``(N, 17)`` float: per image a row-major ``3 x 5`` matrix ``[R | t | hwf]``
(columns of R: camera down, right, back in world coordinates; ``hwf`` = height, width, focal of the
full-resolution images) followed by the near and far scene depths. Loading does what NeRF's
``load_llff_data`` does (bd_factor 0.75, recentre, spiral path) re-implemented here:

1. H, W from the ``images_{factor}`` files, focal divided by ``factor``;
2. axes reordered to OpenGL ``[right, up, back]`` = stored ``[col1, -col0, col2]``;
3. scaled by ``sc = 1 / (0.75 * min(bounds))`` (translations and bounds), so the nearest bound is 4/3;
4. recentred: every pose left-multiplied by the inverse of the average pose (:func:`poses_avg`);
5. a 120-frame, 2-turn spiral render path (:func:`spiral_path`).

The scene is rendered in NDC with the near plane at depth 1 (``ndc=True``, near 0, far 1). Rays that
end with transmittance left show a black background, as in nerf-pytorch (``white_bkgd`` is off for LLFF:
a real capture fills the frame, so a trained field leaves almost nothing to the background).
"""

from __future__ import annotations

import logging
import tokenize
from pathlib import Path

import numpy as np

from r2l.core.atomic import atomic_write_stream
from r2l.core.errors import DataError, R2LError
from r2l.core.imageio import area_resize, list_images, read_image
from r2l.core.log import progress
from r2l.data.scene import Scene
from r2l.geometry.poses import llff_to_opengl, opengl_to_llff, pose_problem

log = logging.getLogger("r2l")

BD_FACTOR = 0.75  # nearest bound maps to 1 / 0.75 (NeRF's bd_factor)
POSES_FILE = "poses_bounds.npy"


# ----------------------------------------------------------------------------------------------
# Pose maths (NeRF's poses_avg / viewmatrix / recenter_poses / render_path_spiral)
# ----------------------------------------------------------------------------------------------


def _normalize(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def viewmatrix(z: np.ndarray, up: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Pose (3, 4) with back axis along ``z``, up axis as close to ``up`` as possible, centre ``pos``."""
    back = _normalize(z)
    right = _normalize(np.cross(up, back))
    return np.stack([right, np.cross(back, right), back, pos], axis=1)


def poses_avg(poses: np.ndarray) -> np.ndarray:
    """Average pose (3, 4) of ``poses: (N, 3|4, 4)``: mean centre, summed back and up axes."""
    centre = poses[:, :3, 3].mean(axis=0)
    return viewmatrix(poses[:, :3, 2].sum(axis=0), poses[:, :3, 1].sum(axis=0), centre)


def _homogeneous(m: np.ndarray) -> np.ndarray:
    """(..., 3, 4) -> (..., 4, 4) with bottom row [0, 0, 0, 1]."""
    out = np.zeros(m.shape[:-2] + (4, 4), dtype=m.dtype)
    out[..., :3, :] = m[..., :3, :4]
    out[..., 3, 3] = 1.0
    return out


def recenter(poses: np.ndarray) -> np.ndarray:
    """Left-multiply ``poses: (N, 3|4, 4)`` by the inverse average pose. Returns (N, 4, 4)."""
    inv_avg = np.linalg.inv(_homogeneous(poses_avg(poses)))
    return inv_avg @ _homogeneous(poses)


def spiral_path(
    poses: np.ndarray, bounds: np.ndarray, n_frames: int = 120, n_rots: int = 2, zrate: float = 0.5
) -> np.ndarray:
    """NeRF's forward-facing spiral video path around the average pose.

    poses: (N, 4, 4) recentred poses; bounds: (N, 2) scaled near/far. The cameras look at a focus
    depth ``1 / (0.25 / (0.9 * near_min) + 0.75 / (5 * far_max))``; spiral radii are the 90th
    percentile of |translation| per axis. Returns (n_frames, 4, 4) float64.
    """
    c2w = poses_avg(poses)
    up = _normalize(poses[:, :3, 1].sum(axis=0))
    close_depth, inf_depth, dt = bounds.min() * 0.9, bounds.max() * 5.0, 0.75
    focus = 1.0 / ((1.0 - dt) / close_depth + dt / inf_depth)
    rads = np.append(np.percentile(np.abs(poses[:, :3, 3]), 90, axis=0), 1.0)
    target = c2w @ np.array([0.0, 0.0, -focus, 1.0])
    out = []
    for theta in np.linspace(0.0, 2.0 * np.pi * n_rots, n_frames + 1)[:-1]:
        offset = np.array([np.cos(theta), -np.sin(theta), -np.sin(theta * zrate), 1.0]) * rads
        centre = c2w @ offset
        out.append(viewmatrix(centre - target, up, centre))
    return _homogeneous(np.stack(out))


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------


def _read_poses_bounds(file: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OpenGL c2w (N, 4, 4) (stored as [down, right, back, t]), hwf (N, 3) and bounds (N, 2), float64."""
    if not file.is_file():
        raise DataError(file, "poses file not found (an LLFF scene needs poses_bounds.npy)")
    with open(file, "rb") as f:
        magic = f.read(6)
    if magic != b"\x93NUMPY":
        raise DataError(file, "not a .npy file (it does not start with NumPy's magic bytes; saved as text?)")
    try:
        arr = np.load(file, allow_pickle=False)
    except (OSError, ValueError, EOFError, SyntaxError, tokenize.TokenError) as err:  # a garbled header or body
        raise DataError(file, f"cannot read the .npy file ({type(err).__name__}: {err})") from None
    if arr.ndim != 2 or arr.shape[1] != 17 or arr.shape[0] == 0 or arr.dtype.kind not in "fiu":
        raise DataError(file, f"expected an (N, 17) numeric array with N >= 1, got {arr.dtype} {arr.shape}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise DataError(file, "contains NaN or infinite values")
    c2w, hwf, bounds = llff_to_opengl(arr)
    for i, pose in enumerate(c2w):
        problem = pose_problem(pose[:3, :3])
        if problem:
            raise DataError(file, f"row {i} is not a camera pose ({problem})")
    if bounds.min() <= 0 or (bounds[:, 1] < bounds[:, 0]).any():
        raise DataError(file, "bounds (last two columns) must be positive with near <= far")
    return c2w, hwf, bounds


def _missing_folder_error(folder: Path, factor: int) -> DataError:
    pct = 100.0 / factor
    return DataError(
        folder,
        f"image folder not found. Make it by shrinking images/ by {factor}, e.g. with ImageMagick: "
        f"`cp -r images {folder.name} && mogrify -resize {pct:g}% {folder.name}/*` "
        "(or LLFF's imgs2poses.py / NeRF's _minify, which do the same)",
    )


def _image_files(root: Path, factor: int) -> tuple[list[Path], int]:
    """Files to load and the extra shrink factor to apply (1 if ``images_{factor}`` exists)."""
    folder = root / f"images_{factor}"
    if factor == 1 and not folder.is_dir():
        folder = root / "images"
    if folder.is_dir():
        src, shrink = folder, 1
    elif (root / "images").is_dir():
        src, shrink = root / "images", factor
    elif factor == 1:
        raise DataError(folder, "image folder not found")
    else:
        raise _missing_folder_error(folder, factor)
    files = list_images(src)
    if not files:
        raise DataError(src, "contains no .png/.jpg images")
    return files, shrink


def _load_llff_images(files: list[Path], shrink: int, factor: int) -> np.ndarray:
    """Read RGB images (alpha dropped), shrinking by ``shrink`` with area averaging. (N, H, W, 3)."""
    first = read_image(files[0])[..., :3]
    H, W = first.shape[:2]
    if shrink > 1 and (H % shrink or W % shrink):
        raise _missing_folder_error(files[0].parent.parent / f"images_{factor}", factor)
    if shrink > 1:
        log.warning("%s missing: shrinking %s by %d with area averaging", f"images_{factor}", files[0].parent, shrink)
    images = np.empty((len(files), H // shrink, W // shrink, 3), dtype=np.float32)
    bar = progress(len(files), desc="load images") if len(files) > 50 or shrink > 1 else None
    for i, path in enumerate(files):
        img = first if i == 0 else read_image(path)[..., :3]
        if img.shape[:2] != (H, W):
            raise DataError(
                path,
                f"image is {img.shape[1]}x{img.shape[0]} but {files[0]} is {W}x{H}; "
                "all images of a scene must have the same size",
            )
        images[i] = area_resize(img, H // shrink, W // shrink)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return images


def _check_hwf(file: Path, hwf: np.ndarray, H: int, W: int, factor: int, folder: Path) -> None:
    """The stored full-resolution size divided by ``factor`` must match the images (to 1 pixel)."""
    h0, w0 = hwf[0, 0], hwf[0, 1]
    if abs(h0 / factor - H) > 1.01 or abs(w0 / factor - W) > 1.01:
        raise DataError(
            file,
            f"poses are for {w0:g}x{h0:g} images, i.e. {w0 / factor:g}x{h0 / factor:g} at factor {factor}, "
            f"but the images in {folder} are {W}x{H}; is the factor right?",
        )


def split_indices(n: int, hold: int) -> dict[str, np.ndarray]:
    """test: every ``hold``-th view (0, hold, ...); train: the rest; val: every 8th train view (>= 1)."""
    idx = np.arange(n, dtype=np.int64)
    test = idx[::hold]
    train = np.setdiff1d(idx, test)
    return {"train": train, "val": train[::8].copy(), "test": test}


# ----------------------------------------------------------------------------------------------
# Loader and writer
# ----------------------------------------------------------------------------------------------


def load_llff(path: str | Path, name: str, factor: int = 8, hold: int = 8) -> Scene:
    """Load an LLFF scene folder into a :class:`r2l.data.scene.Scene` (NeRF's conventions, see module doc).

    factor: read ``images_{factor}/`` (``images/`` for 1; if missing, ``images/`` is shrunk by area
    averaging when its size divides by ``factor``). hold: every hold-th view (0, hold, ...) is test.
    Splits: ``train`` = every non-test view; ``val`` = every 8th train view. LLFF has no separate
    validation views, so the val views ARE training views (used only to select student finetuning
    checkpoints without touching the test views). poses (N, 4, 4) OpenGL, scaled and recentred;
    bounds (N, 2) scaled; images (N, H, W, 3) float32 in [0, 1]; ndc=True, near 0, far 1, ndc_near 1.
    """
    root = Path(path)
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise R2LError(f"LLFF factor must be a positive integer, got {factor!r}")
    if isinstance(hold, bool) or not isinstance(hold, int) or hold < 2:
        raise R2LError(f"LLFF hold must be an integer >= 2 (every hold-th image is a test view), got {hold!r}")
    if not root.is_dir():
        raise DataError(root, "scene folder not found")
    file = root / POSES_FILE
    poses, hwf, bounds = _read_poses_bounds(file)
    files, shrink = _image_files(root, factor)
    if len(files) != len(poses):
        raise DataError(files[0].parent, f"has {len(files)} images but {file} has {len(poses)} poses")
    if len(poses) < 2:
        raise DataError(file, "an LLFF scene needs at least 2 views (train and test)")
    images = _load_llff_images(files, shrink, factor)
    H, W = images.shape[1:3]
    _check_hwf(file, hwf, H, W, factor, files[0].parent)
    focal = float(hwf[0, 2]) / factor
    sc = 1.0 / (bounds.min() * BD_FACTOR)
    poses[:, :3, 3] *= sc
    bounds = bounds * sc
    poses = recenter(poses)
    log.info("loaded LLFF scene %s: %d views at %dx%d, focal %.3f, scale %.4g", name, len(files), W, H, focal, sc)
    return Scene(
        name=name, format="llff", images=images, poses=poses.astype(np.float32), H=int(H), W=int(W),
        focal=focal, near=0.0, far=1.0, splits=split_indices(len(files), hold), ndc=True, ndc_near=1.0,
        background=(0.0, 0.0, 0.0),
        render_poses=spiral_path(poses, bounds).astype(np.float32), bounds=bounds.astype(np.float32),
        files=[str(f) for f in files], pose_files=[str(file)],
    )


def write_poses_bounds(path: str | Path, c2w, hwf, bounds) -> Path:
    """Write ``poses_bounds.npy`` for OpenGL poses (the inverse of the reading step, before scaling).

    path: the .npy file, or an existing folder to write ``poses_bounds.npy`` in.
    c2w: (N, 4, 4) or (N, 3, 4) camera-to-world, OpenGL [right, up, back]; stored as [down, right, back].
    hwf: (H, W, focal) of the FULL-resolution images: :func:`load_llff` divides focal by ``factor``
    and checks H / factor, W / factor against the ``images_{factor}`` files.
    bounds: (N, 2) positive near/far depths. Written atomically (temp file, then rename). Returns the file.
    """
    c2w = np.asarray(c2w, dtype=np.float64)
    bounds = np.asarray(bounds, dtype=np.float64)
    if c2w.ndim != 3 or c2w.shape[1:] not in ((4, 4), (3, 4)) or bounds.shape != (len(c2w), 2):
        raise R2LError(f"write_poses_bounds: expected c2w (N,4,4) and bounds (N,2), got {c2w.shape}, {bounds.shape}")
    path = Path(path)
    if path.is_dir():
        path = path / POSES_FILE
    arr = opengl_to_llff(c2w, hwf, bounds)
    return atomic_write_stream(path, lambda fh: np.save(fh, arr))
