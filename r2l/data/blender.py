"""Loader for the NeRF-synthetic ("Blender") scene format, and camera pose helpers.

Format: ``transforms_{train,val,test}.json`` with ``camera_angle_x`` (horizontal field of view, radians)
and ``frames``, each with ``file_path`` (relative to the scene folder, usually without the ``.png``
extension, e.g. ``"./train/r_0"``) and ``transform_matrix`` (4x4 camera-to-world, OpenGL convention,
z-up world). Images are RGBA PNGs; they are composited on the background and then area-averaged
(box filter) to the working resolution. Compositing first is the same as averaging premultiplied
RGBA and compositing after; it matches how the reduced reference copies (lego_400, lego_100) were
made. Averaging straight (un-premultiplied) RGBA would bleed the colour of transparent pixels into
edges: loading lego_400 at 100 that way differs from lego_100 by up to 52/255, compared with 2/255 this way.

Pose helpers: :func:`orbit_poses` (the render path) and :func:`spherical_pose` (one pose of
:func:`r2l.geometry.poses.spherical_poses`); :func:`r2l.geometry.poses.look_at` is importable from here too. All poses
are ``(4, 4)`` float32 camera-to-world.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np

from r2l.core.errors import DataError, R2LError
from r2l.core.imageio import area_resize, composite, read_image
from r2l.core.log import progress
from r2l.data.scene import Scene
from r2l.geometry.poses import look_at as look_at  # re-exported: callers of r2l.data.blender use it
from r2l.geometry.poses import pose_problem, spherical_poses

log = logging.getLogger("r2l")

# How an RGBA image becomes the RGB ground truth at a smaller resolution:
# - "premultiplied": composite on the background, then area-average. Averaging the composited colours is
#   averaging premultiplied colour (rgb * a) and coverage together, which is what a camera with larger
#   pixels would see: the physically right order, and r2l's default.
# - "authors": area-average the straight (not premultiplied) RGBA, then composite, as the R2L authors' data
#   loader does (cv2.resize with INTER_AREA, then rgb * a + bg * (1 - a)). At object edges a pixel's colour is
#   then averaged without its coverage (measured on lego 400 -> 200, all 400 views: up to 45/255 apart, 1.7% of
#   pixels more than 1/255). The paper presets use it so that test PSNRs compare with the published ones.
RESIZE_ORDERS = ("premultiplied", "authors")
SPLITS = ("train", "val", "test")
REQUIRED_SPLITS = ("train", "test")
NEAR, FAR = 2.0, 6.0  # sampling depths of the Blender scenes (NeRF / R2L)


# ----------------------------------------------------------------------------------------------
# Pose helpers
# ----------------------------------------------------------------------------------------------


def spherical_pose(azimuth_deg: float, elevation_deg: float, radius: float) -> np.ndarray:
    """One pose (4, 4) float32 of :func:`r2l.geometry.poses.spherical_poses` (NeRF's ``pose_spherical``, z-up world).

    NeRF's sign convention: a NEGATIVE elevation puts the camera ABOVE the ground plane (elevation -30
    looks down at 30 degrees; -90 is straight above); every elevation, including +-90, is well defined.
    """
    return spherical_poses([azimuth_deg], [elevation_deg], radius)[0]


def orbit_poses(n: int = 40, radius: float = 4.0, elevation_deg: float = -30.0) -> np.ndarray:
    """Video path: ``n`` poses at azimuths -180 .. 180 (end excluded), as NeRF's Blender render path.

    Elevation uses the :func:`spherical_pose` convention (negative = above). Returns (n, 4, 4) float32.
    """
    azimuths = np.linspace(-180.0, 180.0, n + 1)[:-1]
    return spherical_poses(azimuths, np.full(n, elevation_deg), radius)


# ----------------------------------------------------------------------------------------------
# transforms_*.json parsing
# ----------------------------------------------------------------------------------------------


def _read_transforms(json_path: Path) -> dict:
    """Parse one transforms json; a missing or malformed file raises DataError."""
    if not json_path.is_file():
        raise DataError(json_path, "transforms file not found")
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(json_path, f"malformed JSON at line {err.lineno} column {err.colno}: {err.msg}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(json_path, f"cannot read the file: {err}") from None
    if not isinstance(meta, dict):
        raise DataError(json_path, "expected a JSON object with 'camera_angle_x' and 'frames'")
    for key in ("camera_angle_x", "frames"):
        if key not in meta:
            raise DataError(json_path, f"missing key {key!r}")
    angle = meta["camera_angle_x"]
    if not _is_number(angle) or not 0.0 < angle < math.pi:
        raise DataError(json_path, f"'camera_angle_x' must be a number in (0, pi) radians, got {angle!r}")
    if not isinstance(meta["frames"], list) or not meta["frames"]:
        raise DataError(json_path, "'frames' must be a non-empty list")
    return meta


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _frame_matrix(json_path: Path, i: int, frame) -> np.ndarray:
    """The 4x4 ``transform_matrix`` of frame ``i`` as float32; DataError if absent or malformed."""
    if not isinstance(frame, dict):
        raise DataError(json_path, f"frame {i} is not a JSON object")
    for key in ("file_path", "transform_matrix"):
        if key not in frame:
            raise DataError(json_path, f"frame {i} is missing key {key!r}")
    m = frame["transform_matrix"]
    ok = isinstance(m, list) and len(m) == 4
    ok = ok and all(isinstance(r, list) and len(r) == 4 and all(_is_number(x) for x in r) for r in m)
    if not ok:
        raise DataError(json_path, f"frame {i}: 'transform_matrix' must be 4x4 finite numbers, got {m!r:.80}")
    m = np.asarray(m, dtype=np.float32)
    problem = pose_problem(m[:3, :3]) or ("" if np.allclose(m[3], [0, 0, 0, 1], atol=1e-6) else "last row is not 0 0 0 1")
    if problem:
        raise DataError(json_path, f"frame {i}: 'transform_matrix' is not a camera pose ({problem})")
    return m


def _frame_file(root: Path, json_path: Path, i: int, rel) -> Path:
    """Image file of frame ``i``: ``root / file_path``, with ``.png`` appended when that exists."""
    if not isinstance(rel, str) or not rel:
        raise DataError(json_path, f"frame {i}: 'file_path' must be a non-empty string, got {rel!r}")
    path = root / rel
    with_png = path.parent / (path.name + ".png")
    if path.is_file():
        return path
    if with_png.is_file():
        return with_png
    missing = path if path.suffix.lower() == ".png" else with_png
    raise DataError(missing, f"image file not found (frame {i} of {json_path.name}, file_path {rel!r})")


def _read_split(root: Path, split: str, skip: int) -> tuple[float, list[Path], np.ndarray]:
    """camera_angle_x, image files and poses (n, 4, 4) of one split (every ``skip``-th frame)."""
    json_path = root / f"transforms_{split}.json"
    meta = _read_transforms(json_path)
    frames = meta["frames"]
    poses = [_frame_matrix(json_path, i, f) for i, f in enumerate(frames)]  # validate every frame
    keep = range(0, len(frames), skip)
    files = [_frame_file(root, json_path, i, frames[i]["file_path"]) for i in keep]
    return float(meta["camera_angle_x"]), files, np.stack([poses[i] for i in keep])


# ----------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------


def _target_size(resolution: int | None, first: Path, H: int, W: int) -> tuple[int, int]:
    """Working (h, w): ``resolution`` is the width; the height keeps the aspect ratio exactly."""
    if resolution is None:
        return H, W
    if resolution > W:
        raise DataError(first, f"resolution {resolution} is larger than the images ({W}x{H}); r2l only shrinks")
    if (H * resolution) % W:
        raise DataError(
            first, f"resolution {resolution} does not keep the {W}x{H} aspect ratio at a whole number of rows"
        )
    return H * resolution // W, resolution


def _check_alpha(path: Path, img: np.ndarray, first: Path, first_has_alpha: bool) -> None:
    """Every image has an alpha channel or none does (else the background would differ between views)."""
    if (img.shape[-1] == 4) != first_has_alpha:
        has, lacks = (first, path) if first_has_alpha else (path, first)
        raise DataError(path, f"{lacks.name} has no alpha channel while {has.name} has one: give every image of "
                              "the scene an alpha channel (RGBA) or none (RGB)")


def _load_images(files: list[Path], resolution: int | None, background, resize_order: str) -> np.ndarray:
    """Read, check sizes and alpha, composite, then area-resize. Returns (n, h, w, 3) float32."""
    first = read_image(files[0])
    if first.shape[-1] == 3:
        log.warning("%s: the images have no alpha channel; used as they are (the background setting has no effect)",
                    files[0].parent)
    H, W = first.shape[:2]
    h, w = _target_size(resolution, files[0], H, W)
    images = np.empty((len(files), h, w, 3), dtype=np.float32)
    bar = progress(len(files), desc="load images") if len(files) > 50 else None
    for i, path in enumerate(files):
        img = first if i == 0 else read_image(path)
        _check_alpha(path, img, files[0], first.shape[-1] == 4)
        if img.shape[:2] != (H, W):
            raise DataError(
                path,
                f"image is {img.shape[1]}x{img.shape[0]} but {files[0]} is {W}x{H}; "
                "all images of a scene must have the same size",
            )
        if resize_order == "authors":
            images[i] = composite(area_resize(img, h, w), background)
        else:
            images[i] = area_resize(composite(img, background), h, w)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return images


def _check_options(resolution, background, test_skip) -> None:
    if resolution is not None and (isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1):
        raise R2LError(f"resolution must be a positive integer or None, got {resolution!r}")
    if isinstance(test_skip, bool) or not isinstance(test_skip, int) or test_skip < 1:
        raise R2LError(f"test_skip must be a positive integer, got {test_skip!r}")
    if len(background) != 3 or not all(_is_number(c) and 0.0 <= c <= 1.0 for c in background):
        raise R2LError(f"background must be three numbers in [0, 1], got {background!r}")


# ----------------------------------------------------------------------------------------------
# Loader
# ----------------------------------------------------------------------------------------------


def load_blender(
    path: str | Path,
    name: str,
    resolution: int | None = None,
    background: tuple[float, float, float] = (1.0, 1.0, 1.0),
    test_skip: int = 1,
    resize_order: str = "premultiplied",
) -> Scene:
    """Load a NeRF-synthetic scene folder into a :class:`r2l.data.scene.Scene`.

    resolution: working width in pixels (height keeps the aspect ratio; square scenes give
    resolution x resolution); images are composited on ``background``, then area-averaged (box
    filter). None keeps the files' size. test_skip keeps every n-th test view. resize_order: see
    :data:`RESIZE_ORDERS`.
    Splits: ``train`` and ``test`` are required, ``val`` is optional (no key when its json is absent);
    views are concatenated train, val, test. focal = 0.5 * W / tan(0.5 * camera_angle_x) at the
    working W; near = 2, far = 6; render_poses is a 40-view orbit (radius 4, 30 degrees above).
    Every problem with the files raises DataError naming the file, before anything is returned.
    """
    root = Path(path)
    _check_options(resolution, background, test_skip)
    if resize_order not in RESIZE_ORDERS:
        raise R2LError(f"resize_order must be one of {', '.join(RESIZE_ORDERS)}, got {resize_order!r}")
    if not root.is_dir():
        raise DataError(root, "scene folder not found")
    angles, files, poses, splits = {}, [], [], {}
    for split in SPLITS:
        json_path = root / f"transforms_{split}.json"
        if split not in REQUIRED_SPLITS and not json_path.exists():
            continue
        angle, split_files, split_poses = _read_split(root, split, test_skip if split == "test" else 1)
        angles[json_path] = angle
        splits[split] = np.arange(len(files), len(files) + len(split_files), dtype=np.int64)
        files += split_files
        poses.append(split_poses)
    ref_json, angle = next(iter(angles.items()))
    for json_path, other in angles.items():
        if abs(other - angle) > 1e-6 * angle:
            raise DataError(json_path, f"camera_angle_x {other} differs from {angle} in {ref_json.name}")
    images = _load_images(files, resolution, background, resize_order)
    H, W = images.shape[1:3]
    focal = 0.5 * W / math.tan(0.5 * angle)
    log.info("loaded Blender scene %s: %d views (%s) at %dx%d, focal %.3f",
             name, len(files), ", ".join(f"{k} {len(v)}" for k, v in splits.items()), W, H, focal)
    return Scene(
        name=name, format="blender", images=images, poses=np.concatenate(poses).astype(np.float32),
        H=int(H), W=int(W), focal=float(focal), near=NEAR, far=FAR, splits=splits,
        background=tuple(float(c) for c in background), ndc=False,
        render_poses=orbit_poses(40, 4.0, -30.0), bounds=None, files=[str(f) for f in files],
        pose_files=[str(p) for p in angles],
    )
