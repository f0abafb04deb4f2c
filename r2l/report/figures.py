"""Figures and videos: a side-by-side comparison strip and a fly-through video of a renderer.

- :func:`comparison_figure`: one PNG row ``ground truth | teacher | student | finetuned | error map``
  (extra panels, e.g. another student family's ``student (r2l) | finetuned (r2l)``, before the error map)
  separated by thin white bars, under a white label band that names each panel (the student and finetuned
  ones with their student family when given, e.g. ``student (grid)``) and prints each model panel's PSNR
  against the ground truth (:func:`panel_labels`; text drawn with matplotlib). Panels
  narrower than :data:`MIN_PANEL_WIDTH` pixels are enlarged by a whole factor (nearest neighbour) so
  that the labels fit; :func:`figure_layout` tells where each panel's pixels are. The error map is
  ``|finetuned - gt|`` averaged over the colour channels, scaled so that ``err_max`` (default 0.2) and
  above is the top colour, through a hand-made inferno-like colormap (black - purple - red - orange -
  pale yellow).
- :func:`render_video`: frames along a camera path (``scene.render_poses``: an orbit for Blender, a
  spiral for LLFF) written as the file's suffix says: ``.mp4`` (H.264 through imageio's ffmpeg plugin, which
  runs the ffmpeg binary that imageio-ffmpeg's wheel carries, so the same on every machine) or ``.gif``.

Every file is written to a temp name in its folder and renamed (atomic).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

from r2l.core.atomic import atomic_write
from r2l.core.errors import DataError, R2LError
from r2l.core.imageio import area_resize, read_image, save_png
from r2l.core.log import progress
from r2l.core.metrics import psnr
from r2l.data.scene import Scene
from r2l.report.tables import model_label

SEPARATOR = 2  # width in pixels of the white bar between panels
MIN_PANEL_WIDTH = 160  # narrower panels are enlarged by a whole factor so that their labels fit
PANEL_NAMES = ("ground truth", "teacher", "student", "finetuned", "error")
VIDEO_SUFFIXES = (".mp4", ".gif")  # what render_video writes
# Colormap anchors (position, RGB in [0, 1]): an inferno-like ramp, dark = small error.
_CMAP = np.array([
    [0.00, 0.00, 0.00, 0.02],
    [0.25, 0.34, 0.06, 0.43],
    [0.50, 0.74, 0.22, 0.33],
    [0.75, 0.98, 0.56, 0.04],
    [1.00, 0.99, 1.00, 0.64],
])


def colormap(values: np.ndarray) -> np.ndarray:
    """values: (H, W) in [0, 1] (clipped) -> (H, W, 3) float32 colours of the error ramp."""
    v = np.clip(values, 0.0, 1.0)
    return np.stack([np.interp(v, _CMAP[:, 0], _CMAP[:, c]) for c in (1, 2, 3)], axis=-1).astype(np.float32)


def error_map(pred: np.ndarray, gt: np.ndarray, err_max: float = 0.2) -> np.ndarray:
    """pred, gt: (H, W, 3) in [0, 1] -> (H, W, 3) colour-mapped mean absolute error (err_max = top colour)."""
    err = np.abs(np.asarray(pred, np.float32) - np.asarray(gt, np.float32)).mean(axis=-1)
    return colormap(err / err_max)


def _panel(img, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """One (H, W, 3) image as float32, checked against the ground truth's shape."""
    arr = img.numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
    arr = arr.astype(np.float32) / 255.0 if arr.dtype == np.uint8 else arr.astype(np.float32)
    if arr.shape != shape:
        raise ValueError(f"{name} image has shape {arr.shape}, the ground truth {shape}")
    return arr


def psnr_label(pred: np.ndarray, gt: np.ndarray) -> str:
    """The PSNR line printed on a model panel: ``"PSNR 25.31 dB"`` (pred, gt: (H, W, 3) in [0, 1])."""
    return f"PSNR {psnr(pred, gt):.2f} dB"


def panel_labels(gt: np.ndarray, preds: list[np.ndarray], err_max: float = 0.2,
                 view_name: str = "this view", families: dict[str, str | None] | None = None,
                 extra_names: Sequence[str] = ()) -> list[tuple[str, str]]:
    """``(name, second line)`` of the panels: the models' lines are their PSNR against ``gt``.

    gt: (H, W, 3) in [0, 1]; preds: the teacher's, student's and finetuned student's (H, W, 3) renders, then one
    per name of ``extra_names`` (extra panels' names, e.g. ``"student (r2l)"``, placed before the error map).
    view_name: the ground truth's second line. families: the student family of ``student`` and ``finetuned``
    (e.g. ``{"student": "grid", "finetuned": "grid"}``; missing or None: the bare name), named on their panels
    as ``student (grid)`` (:func:`r2l.report.tables.model_label`).
    """
    families = families or {}
    names = [model_label(n, families.get(n)) for n in PANEL_NAMES[:4]] + [*extra_names, PANEL_NAMES[4]]
    scores = [psnr_label(pred, gt) for pred in preds]
    return list(zip(names, [view_name, *scores, f"black 0, yellow ≥ {err_max:g}"], strict=True))


def figure_layout(H: int, W: int) -> tuple[int, int]:
    """``(band, scale)`` of a comparison figure of (H, W) panels: label rows on top, enlargement factor.

    Panel k (0 = ground truth) has its pixel (v, u) at rows ``band + scale * v + i`` and columns
    ``k * (scale * W + SEPARATOR) + scale * u + j`` for ``0 <= i, j < scale``.
    """
    scale = max(1, math.ceil(MIN_PANEL_WIDTH / W))
    return 3 * _font_px(scale * W), scale


def _font_px(panel_width: int) -> int:
    """Label font size in pixels for panels ``panel_width`` wide (12 px, larger for wide panels)."""
    return max(12, panel_width // 16)


def _label_band(labels: list[tuple[str, str]], panel_width: int, band: int) -> np.ndarray:
    """(band, n * (panel_width + SEPARATOR) - SEPARATOR, 3) float32: white, each label centred above its panel."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # matplotlib only where text is drawn
    from matplotlib.figure import Figure

    width, font = len(labels) * (panel_width + SEPARATOR) - SEPARATOR, _font_px(panel_width)
    fig = Figure(figsize=((width + 0.5) / 72, (band + 0.5) / 72), dpi=72, facecolor="white")  # 1 pt = 1 px
    for k, (name, line) in enumerate(labels):
        x = (k * (panel_width + SEPARATOR) + panel_width / 2) / width
        fig.text(x, 1 - 0.2 * font / band, name, ha="center", va="top", fontsize=font, weight="bold")
        fig.text(x, 1 - 1.5 * font / band, line, ha="center", va="top", fontsize=font)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[:band, :width, :3].astype(np.float32) / 255.0


def comparison_figure(gt, teacher, student, finetuned, out_png: str | Path, err_max: float = 0.2,
                      view_name: str = "this view", families: dict[str, str | None] | None = None,
                      extras: Sequence[tuple[str, object]] = ()) -> Path:
    """Write ``gt | teacher | student | finetuned | extras... | error(finetuned)`` as one labelled PNG row.

    Each image: (H, W, 3) float in [0, 1] (or uint8). extras: ``(panel name, image)`` pairs, e.g.
    ``[("student (r2l)", img), ("finetuned (r2l)", img)]``, drawn in order before the error map, each with its PSNR.
    With ``(band, s) = figure_layout(H, W)`` and ``n = 5 + len(extras)`` panels the PNG is
    (band + s H, n s W + (n - 1) SEPARATOR, 3): the label band (:func:`panel_labels`; ``view_name`` under
    "ground truth", ``families`` in the student panels' names), then the panels.
    """
    gt = _panel(gt, "ground truth", np.shape(gt))
    if gt.ndim != 3 or gt.shape[-1] != 3:
        raise ValueError(f"ground truth must be (H, W, 3), got {gt.shape}")
    named = [("teacher", teacher), ("student", student), ("finetuned", finetuned), *extras]
    preds = [_panel(x, n, gt.shape) for n, x in named]
    panels = [gt, *preds, error_map(preds[2], gt, err_max)]
    band, scale = figure_layout(*gt.shape[:2])
    panels = [p.repeat(scale, axis=0).repeat(scale, axis=1) for p in panels]
    bar = np.ones((panels[0].shape[0], SEPARATOR, 3), np.float32)
    row = np.concatenate([p for panel in panels for p in (panel, bar)][:-1], axis=1)
    names = [n for n, _ in extras]
    labels = _label_band(panel_labels(gt, preds, err_max, view_name, families, names), panels[0].shape[1], band)
    save_png(np.concatenate([labels, row], axis=0), out_png)
    return Path(out_png)


def _read_render(renders_root: str | Path, name: str, view: int) -> np.ndarray:
    """``renders_root/{name}/{view:03d}.png`` as (H, W, 3); DataError when it is missing."""
    path = Path(renders_root) / name / f"{view:03d}.png"
    if not path.is_file():
        raise DataError(path, f"render of view {view} by the {name} not found (run the evaluation first)")
    return read_image(path)[..., :3]


def scene_comparison_figure(
    scene: Scene, renders_root: str | Path, out_png: str | Path, view: int = 0, split: str = "test",
    families: dict[str, str | None] | None = None, extras: Sequence[str] = (),
) -> Path:
    """Comparison figure of one view from PNGs written by :func:`r2l.stages.evaluate.evaluate_model`.

    Reads ``renders_root/{teacher,student,finetuned}/{view:03d}.png``; the ground truth is the scene's
    ``split`` view ``view``, area-resized to the renders' size if needed. Each model panel's PSNR is
    against that ground truth, on the 8-bit render (metrics.csv scores the float renders, every view).
    families: the student family of ``student`` and ``finetuned``, named on their panels (:func:`panel_labels`).
    extras: extra student families, in order: for each ``F`` the panels ``student (F)`` and ``finetuned (F)`` from
    ``renders_root/student_F/`` and ``renders_root/finetuned_F/``, before the error map (still the primary
    finetuned student's).
    """
    if any(not f for f in extras):
        raise ValueError(f"extra family names must be non-empty, got {list(extras)}")
    gts, _ = scene.split(split)
    if not 0 <= view < len(gts):
        raise DataError(renders_root, f"view {view} is outside the {len(gts)} {split} views of {scene.name!r}")
    imgs = [_read_render(renders_root, model, view) for model in ("teacher", "student", "finetuned")]
    more = [(model_label(m, f), _read_render(renders_root, f"{m}_{f}", view))
            for f in extras for m in ("student", "finetuned")]
    H, W = imgs[0].shape[:2]
    gt = area_resize(gts[view], H, W)
    return comparison_figure(gt, *imgs, out_png, view_name=f"{split} view {view}", families=families, extras=more)


def _write_mp4(path: Path, frames: np.ndarray, fps: int) -> None:
    """frames: (n, H, W, 3) uint8 -> H.264 MP4 (yuv420p; an odd side is padded by one repeated edge pixel)."""
    import imageio.v2 as iio2  # noqa: PLC0415  (the ffmpeg plugin's writer API)

    _, H, W, _ = frames.shape
    frames = np.pad(frames, ((0, 0), (0, H % 2), (0, W % 2), (0, 0)), mode="edge")

    with iio2.get_writer(path, format="FFMPEG", mode="I", fps=fps, codec="libx264", quality=8,
                         macro_block_size=2, pixelformat="yuv420p") as writer:
        for frame in frames:
            writer.append_data(frame)


def _write_video(path: Path, frames: np.ndarray, fps: int) -> None:
    """Write an MP4 or GIF (by ``path``'s suffix) through a temp file and a rename."""

    def write(tmp: Path) -> None:
        if path.suffix.lower() != ".mp4":
            iio.imwrite(tmp, frames, extension=".gif", duration=1000.0 / fps, loop=0)
            return
        try:
            _write_mp4(tmp, frames, fps)
        except (ImportError, RuntimeError) as err:  # no imageio-ffmpeg, no binary, or the encoder failed
            raise R2LError(f"cannot write the MP4 video {path}: {err} (imageio-ffmpeg's wheel carries ffmpeg: "
                           "pip install imageio-ffmpeg)") from err

    atomic_write(path, write, suffix=path.suffix)


def render_frames(renderer, scene: Scene, poses, H: int | None = None, W: int | None = None) -> np.ndarray:
    """Render ``poses: (n, 4, 4)`` at H x W (default the scene's; focal scaled). Returns (n, H, W, 3) uint8."""
    H, W = H or scene.H, W or scene.W
    focal = scene.focal * W / scene.W
    frames = []
    with progress(len(poses), desc=f"video {scene.name}") as bar:
        for pose in poses:
            rgb = renderer.render_rays(*scene.rays(pose, H, W, focal)).reshape(H, W, 3).numpy()
            frames.append((np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))
            bar.update(1)
    return np.stack(frames)


def render_video(
    renderer, scene: Scene, poses, out_path: str | Path, fps: int = 24, H: int | None = None, W: int | None = None
) -> Path:
    """Render a camera path and write it as a video at ``out_path`` (``.mp4`` or ``.gif``); returns ``out_path``.

    poses: (n, 4, 4) camera-to-world (e.g. ``scene.render_poses``).
    """
    out_path = Path(out_path)
    if out_path.suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(f"{out_path}: a video must end in {' or '.join(VIDEO_SUFFIXES)}")
    poses = np.asarray(poses, dtype=np.float32)
    if poses.ndim != 3 or len(poses) == 0:
        raise ValueError(f"poses must be a non-empty (n, 4, 4) stack, got shape {poses.shape}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    _write_video(out_path, render_frames(renderer, scene, poses, H, W), fps)
    return out_path
