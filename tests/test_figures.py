"""Comparison figure layout and labels, and the fly-through video (MP4 on every machine, GIF when asked)."""

from __future__ import annotations

import imageio.v2 as iio2
import imageio.v3 as iio
import numpy as np
import pytest
import torch
from torch import nn

import r2l.report.figures as figures
from r2l.core.errors import DataError, R2LError
from r2l.core.imageio import save_png
from r2l.data.scene import Scene
from r2l.report.figures import (
    MIN_PANEL_WIDTH,
    SEPARATOR,
    colormap,
    comparison_figure,
    figure_layout,
    panel_labels,
    psnr_label,
    render_video,
    scene_comparison_figure,
)
from r2l.stages.evaluate import evaluate_model


def make_scene(H: int = 16, W: int = 20, n_frames: int = 6) -> Scene:
    """A small Blender-like scene with a smooth image per view and an orbit of ``n_frames`` poses."""
    def pose(angle: float) -> np.ndarray:
        c, s = np.cos(angle), np.sin(angle)
        m = np.eye(4, dtype=np.float32)
        m[:3, :3] = [[c, 0, s], [0, 1, 0], [-s, 0, c]]
        m[:3, 3] = [4 * s, 0, 4 * c]
        return m

    poses = np.stack([pose(a) for a in np.linspace(0, 1, 4)])
    v, u = np.mgrid[0:H, 0:W]
    base = np.stack([u / W, v / H, 0.5 * np.ones((H, W))], -1).astype(np.float32)
    return Scene(
        name="toy", format="builtin", images=np.stack([base] * 4), poses=poses, H=H, W=W, focal=18.0,
        near=2.0, far=6.0, splits={"train": np.array([0]), "val": np.array([1]), "test": np.array([2, 3])},
        render_poses=np.stack([pose(a) for a in np.linspace(0, 2 * np.pi, n_frames, endpoint=False)]),
    )


class DirRenderer:
    """Colour = the ray direction mapped to [0, 1] (differs per pose), through an identity nn.Linear."""

    def __init__(self, kind: str = "student"):
        self.model = nn.Linear(3, 3)
        with torch.no_grad():
            self.model.weight.copy_(torch.eye(3) * 0.5)
            self.model.bias.fill_(0.5)
        self.meta = {"kind": kind, "train_seconds": 6.0, "step": 1, "device": "cpu"}

    @torch.no_grad()
    def render_rays(self, rays_o: torch.Tensor, rays_d: torch.Tensor) -> torch.Tensor:
        """rays_o, rays_d: (n, 3) -> rgb (n, 3)."""
        return self.model(rays_d / rays_d.norm(dim=-1, keepdim=True)).clamp(0, 1)


def test_figure_layout():
    assert figure_layout(12, 17) == (36, 10)  # 17 px panels are enlarged 10x to 170 >= MIN_PANEL_WIDTH
    assert figure_layout(48, 64) == (36, 3)
    assert figure_layout(300, 400) == (75, 1)  # wide panels: 1:1, a 25 px font (400 // 16) in 3 x 25 rows
    for W in (1, 7, 80, 159, 160, 161):
        band, scale = figure_layout(10, W)
        assert scale * W >= MIN_PANEL_WIDTH and (scale == 1 or (scale - 1) * W < MIN_PANEL_WIDTH) and band >= 36


def test_comparison_figure_layout(tmp_path):
    rng = np.random.default_rng(0)
    H, W = 12, 17
    gt = rng.random((H, W, 3)).astype(np.float32)
    teacher, student = np.clip(gt + 0.05, 0, 1), np.zeros((H, W, 3), np.uint8)
    out = comparison_figure(gt, teacher, student, gt, tmp_path / "fig" / "cmp.png")
    img = iio.imread(out)
    band, s = figure_layout(H, W)
    assert img.shape == (band + s * H, 5 * s * W + 4 * SEPARATOR, 3) and img.dtype == np.uint8
    step = s * W + SEPARATOR
    panels = img[band:]

    def enlarged(x):
        return np.asarray(x).repeat(s, axis=0).repeat(s, axis=1)

    np.testing.assert_array_equal(panels[:, : s * W], enlarged((gt * 255 + 0.5).astype(np.uint8)))  # ground truth
    np.testing.assert_array_equal(panels[:, step : step + s * W], enlarged((teacher * 255 + 0.5).astype(np.uint8)))
    assert np.all(panels[:, s * W : step] == 255)  # white separator
    assert np.all(panels[:, 2 * step : 2 * step + s * W] == 0)  # student panel (uint8 zeros)
    # finetuned == gt: the error panel is the colormap's zero colour everywhere
    zero = (colormap(np.zeros((1, 1)))[0, 0] * 255 + 0.5).astype(np.uint8)
    assert np.all(panels[:, 4 * step :] == zero)
    with pytest.raises(ValueError, match="teacher"):
        comparison_figure(gt, gt[:5], gt, gt, tmp_path / "x.png")


def test_label_band_has_text_above_every_panel(tmp_path):
    gt = np.full((20, 20, 3), 0.5, np.float32)
    img = iio.imread(comparison_figure(gt, gt, gt, gt, tmp_path / "cmp.png")).astype(int)
    band, s = figure_layout(20, 20)
    step = s * 20 + SEPARATOR
    for k in range(5):  # dark text pixels on white above each panel, two lines of them
        label = img[:band, k * step : k * step + s * 20]
        assert (label < 128).any(axis=-1).sum() > 50, k
        dark_rows = np.flatnonzero((label < 128).any(axis=(1, 2)))
        assert dark_rows.min() < band / 2 < dark_rows.max(), k


def test_psnr_label_is_the_computed_psnr():
    gt = np.zeros((4, 5, 3), np.float32)
    assert psnr_label(np.full_like(gt, 0.1), gt) == "PSNR 20.00 dB"  # MSE 0.01 -> 10 log10(1 / 0.01) = 20 dB
    assert psnr_label(np.full_like(gt, 0.5), gt) == "PSNR 6.02 dB"  # MSE 0.25 -> 6.0206 dB
    rng = np.random.default_rng(1)
    a, b = rng.random((6, 7, 3)), rng.random((6, 7, 3))
    mse = float(np.mean((a - b) ** 2))
    assert psnr_label(a, b) == f"PSNR {-10 * np.log10(mse):.2f} dB"
    labels = panel_labels(gt, [np.full_like(gt, 0.1), np.full_like(gt, 0.5), gt], err_max=0.2, view_name="test view 3")
    assert labels == [("ground truth", "test view 3"), ("teacher", "PSNR 20.00 dB"), ("student", "PSNR 6.02 dB"),
                      ("finetuned", "PSNR 120.00 dB"), ("error", "black 0, yellow ≥ 0.2")]


def test_panel_labels_name_the_student_family(tmp_path):
    gt = np.zeros((4, 5, 3), np.float32)
    preds = [np.full_like(gt, 0.1), np.full_like(gt, 0.5), gt]
    labels = panel_labels(gt, preds, families={"student": "grid", "finetuned": "grid"})
    assert [name for name, _ in labels] == ["ground truth", "teacher", "student (grid)", "finetuned (grid)", "error"]
    assert labels[2][1] == "PSNR 6.02 dB"  # the second lines do not change
    assert [n for n, _ in panel_labels(gt, preds, families={"student": "r2l", "finetuned": None})][2:4] == [
        "student (r2l)", "finetuned"]  # an unknown family: the bare name
    assert [n for n, _ in panel_labels(gt, preds, families={"teacher": "grid"})][1] == "teacher"
    # drawn: only the student and finetuned labels change
    img = {fam: iio.imread(comparison_figure(gt, gt, gt, gt, tmp_path / f"{fam}.png",
                                             families={"student": fam, "finetuned": fam} if fam else None))
           for fam in (None, "grid")}
    band, s = figure_layout(4, 5)
    step = s * 5 + SEPARATOR
    columns = [slice(k * step, (k + 1) * step) for k in range(5)]
    changed = [not np.array_equal(img[None][:band, c], img["grid"][:band, c]) for c in columns]
    assert changed == [False, False, True, True, False]
    assert np.array_equal(img[None][band:], img["grid"][band:])  # the panels themselves are the same


def test_colormap_endpoints_and_monotone_brightness():
    ramp = colormap(np.linspace(0, 1, 11)[None])[0]
    assert ramp.shape == (11, 3)
    assert ramp[0].sum() < 0.1 and ramp[-1].sum() > 2.5
    assert np.all(np.diff(ramp.sum(-1)) > 0)  # brighter for larger errors
    np.testing.assert_allclose(colormap(np.array([[2.0, -1.0]]))[0], ramp[[-1, 0]])  # clipped


def test_scene_comparison_from_evaluation_renders(tmp_path):
    scene = make_scene()
    for model in ("teacher", "student", "finetuned"):
        evaluate_model(DirRenderer(), scene, renders_dir=tmp_path / model, n_speed_frames=1, warmup=0, model=model)
    out = scene_comparison_figure(scene, tmp_path, tmp_path / "cmp.png", view=1)
    band, s = figure_layout(16, 20)
    assert iio.imread(out).shape == (band + s * 16, 5 * s * 20 + 4 * SEPARATOR, 3)
    grid = scene_comparison_figure(scene, tmp_path, tmp_path / "grid.png", view=1,
                                   families={"student": "grid", "finetuned": "grid"})
    assert not np.array_equal(iio.imread(grid)[:band], iio.imread(out)[:band])  # the labels name the family
    np.testing.assert_array_equal(iio.imread(grid)[band:], iio.imread(out)[band:])
    with pytest.raises(DataError, match="outside"):
        scene_comparison_figure(scene, tmp_path, tmp_path / "cmp.png", view=5)
    (tmp_path / "student" / "000.png").unlink()
    with pytest.raises(DataError, match="student"):
        scene_comparison_figure(scene, tmp_path, tmp_path / "cmp.png", view=0)


def test_comparison_figure_with_extra_panels(tmp_path):
    """Two extra panels (another family's student and finetuned) go before the error map, each with its PSNR."""
    H, W = 12, 17
    gt = np.zeros((H, W, 3), np.float32)
    extra_s, extra_f = np.full_like(gt, 0.1), np.full_like(gt, 0.5)
    out = comparison_figure(gt, gt, gt, gt, tmp_path / "cmp.png",
                            extras=[("student (r2l)", extra_s), ("finetuned (r2l)", extra_f)])
    img = iio.imread(out)
    band, s = figure_layout(H, W)
    assert img.shape == (band + s * H, 7 * s * W + 6 * SEPARATOR, 3)
    step = s * W + SEPARATOR
    panels = img[band:]
    assert np.all(panels[:, 4 * step : 4 * step + s * W] == round(0.1 * 255))  # student (r2l)
    assert np.all(panels[:, 5 * step : 5 * step + s * W] == round(0.5 * 255))  # finetuned (r2l)
    zero = (colormap(np.zeros((1, 1)))[0, 0] * 255 + 0.5).astype(np.uint8)
    assert np.all(panels[:, 6 * step :] == zero)  # the error map is still the primary finetuned's (== gt)
    labels = panel_labels(gt, [gt, gt, gt, extra_s, extra_f], families={"student": "grid", "finetuned": "grid"},
                          extra_names=["student (r2l)", "finetuned (r2l)"])
    assert labels[1:] == [("teacher", "PSNR 120.00 dB"), ("student (grid)", "PSNR 120.00 dB"),
                          ("finetuned (grid)", "PSNR 120.00 dB"), ("student (r2l)", "PSNR 20.00 dB"),
                          ("finetuned (r2l)", "PSNR 6.02 dB"), ("error", "black 0, yellow ≥ 0.2")]
    with pytest.raises(ValueError, match="student \\(r2l\\) image"):
        comparison_figure(gt, gt, gt, gt, tmp_path / "x.png", extras=[("student (r2l)", gt[:5])])


def test_scene_comparison_with_an_extra_family(tmp_path, monkeypatch):
    """renders/student_r2l and renders/finetuned_r2l become panels 5 and 6 of 7, named with their family."""
    scene = make_scene()
    for k, name in enumerate(("teacher", "student", "finetuned", "student_r2l", "finetuned_r2l")):
        for view in range(2):
            save_png(np.full((16, 20, 3), 0.1 * (k + 1), np.float32), tmp_path / name / f"{view:03d}.png")
    drawn, label_band = [], figures._label_band

    def recording_label_band(labels, panel_width, band):
        drawn.append(labels)
        return label_band(labels, panel_width, band)

    monkeypatch.setattr(figures, "_label_band", recording_label_band)
    plain = iio.imread(scene_comparison_figure(scene, tmp_path, tmp_path / "plain.png", view=1))
    out = scene_comparison_figure(scene, tmp_path, tmp_path / "cmp.png", view=1,
                                  families={"student": "grid", "finetuned": "grid"}, extras=["r2l"])
    img = iio.imread(out)
    band, s = figure_layout(16, 20)
    step = s * 20 + SEPARATOR
    assert img.shape == (band + s * 16, 7 * s * 20 + 6 * SEPARATOR, 3) and plain.shape[1] == 5 * step - SEPARATOR
    assert [name for name, _ in drawn[1]] == ["ground truth", "teacher", "student (grid)", "finetuned (grid)",
                                               "student (r2l)", "finetuned (r2l)", "error"]
    assert [line for _, line in drawn[1]][:4] == [line for _, line in drawn[0]][:4]
    for k, level in ((4, 0.4), (5, 0.5)):  # the extra family's renders
        assert np.all(img[band:, k * step : k * step + s * 20] == round(level * 255)), k
    np.testing.assert_array_equal(img[band:, : 4 * step], plain[band:, : 4 * step])  # gt and the primary's panels
    np.testing.assert_array_equal(img[band:, 6 * step :], plain[band:, 4 * step :])  # the primary's error map
    (tmp_path / "finetuned_r2l" / "001.png").unlink()
    with pytest.raises(DataError, match="finetuned_r2l"):
        scene_comparison_figure(scene, tmp_path, tmp_path / "cmp.png", view=1, extras=["r2l"])
    with pytest.raises(ValueError, match="non-empty"):
        scene_comparison_figure(scene, tmp_path, tmp_path / "cmp.png", view=0, extras=[""])


def test_render_video_mp4_frame_count(tmp_path):
    """MP4 wherever r2l is installed: imageio-ffmpeg's wheel carries the ffmpeg binary (nothing from the host)."""
    scene = make_scene(n_frames=6)
    out = render_video(DirRenderer(), scene, scene.render_poses, tmp_path / "video.mp4", fps=12)
    assert out == tmp_path / "video.mp4"
    with iio2.get_reader(out, format="FFMPEG") as reader:
        assert reader.count_frames() == 6
        assert reader.get_data(0).shape == (16, 20, 3)
    assert [p.name for p in tmp_path.iterdir()] == ["video.mp4"]  # no temp files left


def test_render_video_writes_what_the_suffix_says(tmp_path, monkeypatch):
    scene = make_scene(n_frames=5)
    out = render_video(DirRenderer(), scene, scene.render_poses, tmp_path / "video.gif", fps=10, H=8, W=10)
    assert out == tmp_path / "video.gif"
    frames = iio.imread(out, index=None)
    assert frames.shape[0] == 5 and frames.shape[1:3] == (8, 10)
    with pytest.raises(ValueError, match=r"must end in \.mp4 or \.gif"):
        render_video(DirRenderer(), scene, scene.render_poses, tmp_path / "video.avi")

    def no_encoder(*args, **kwargs):
        raise RuntimeError("no ffmpeg here")

    monkeypatch.setattr(iio2, "get_writer", no_encoder)  # an MP4 that cannot be written is an error, not a GIF
    with pytest.raises(R2LError, match="cannot write the MP4 video .*no ffmpeg here.*pip install imageio-ffmpeg"):
        render_video(DirRenderer(), scene, scene.render_poses, tmp_path / "broken.mp4", H=8, W=10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["video.gif"]
    with pytest.raises(ValueError, match="non-empty"):
        render_video(DirRenderer(), scene, np.zeros((0, 4, 4)), tmp_path / "v.mp4")
