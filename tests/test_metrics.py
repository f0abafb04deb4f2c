"""Metrics (PSNR, SSIM against scikit-image, LPIPS availability) and evaluate_model on a hand-made scene."""

from __future__ import annotations

import csv
import math

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from helpers import GRID_8, TINY_GRID_NET
from skimage.metrics import structural_similarity
from torch import nn

from r2l.core.errors import R2LError
from r2l.core.metrics import LpipsScorer, mean_psnr, psnr, ssim
from r2l.data.scene import Scene
from r2l.report.tables import COLUMNS
from r2l.stages.evaluate import evaluate_model, stage_seconds, time_frames, weights_bytes


def sk_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """scikit-image's SSIM in the convention r2l follows."""
    return structural_similarity(
        a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=-1
    )


def structured(H: int, W: int) -> np.ndarray:
    """A smooth gradient plus checkers and stripes, different per channel: (H, W, 3) in [0, 1]."""
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    r = u / max(W - 1, 1)
    g = ((u // 4 + v // 4) % 2) * 0.8 + 0.1
    b = 0.5 + 0.4 * np.sin(v / 2.0)
    return np.stack([r, g, b], axis=-1)


# ----------------------------------------------------------------------------- PSNR


def test_psnr_constant_error_is_20_db():
    a = np.full((8, 5, 3), 0.3)
    assert psnr(a, a + 0.1) == pytest.approx(20.0, abs=1e-9)
    assert psnr(a + 0.1, a) == pytest.approx(20.0, abs=1e-9)
    # error 0.01 -> 40 dB; works on tensors too
    assert psnr(torch.zeros(4, 4, 3), torch.full((4, 4, 3), 0.01)) == pytest.approx(40.0, abs=1e-6)


def test_psnr_identical_images_are_capped_at_120_db():
    a = np.random.default_rng(0).random((6, 7, 3))
    assert psnr(a, a) == pytest.approx(120.0)


def test_psnr_uint8_is_scaled():
    a = np.zeros((3, 3, 3), np.uint8)
    b = np.full((3, 3, 3), 51, np.uint8)  # 51 / 255 = 0.2 -> MSE 0.04 -> 13.979 dB
    assert psnr(a, b) == pytest.approx(-10 * math.log10(0.04), abs=1e-9)


def test_mean_psnr_is_mean_of_per_image_psnrs():
    gts = [np.zeros((4, 4, 3)), np.zeros((4, 4, 3))]
    preds = [np.full((4, 4, 3), 0.1), np.full((4, 4, 3), 0.01)]
    assert mean_psnr(preds, gts) == pytest.approx(30.0, abs=1e-6)  # (20 + 40) / 2
    pooled = -10 * math.log10((0.01 + 0.0001) / 2)
    assert abs(mean_psnr(preds, gts) - pooled) > 1.0  # not the PSNR of the pooled MSE


def test_psnr_rejects_bad_shapes():
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(np.zeros((4, 4, 3)), np.zeros((4, 5, 3)))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        psnr(np.zeros((3, 4, 4)), np.zeros((3, 4, 4)))
    with pytest.raises(ValueError):
        mean_psnr([], [])


# ----------------------------------------------------------------------------- SSIM


@pytest.mark.parametrize("shape", [(11, 11), (17, 29), (40, 23), (64, 64)])
def test_ssim_matches_skimage_on_random_images(shape):
    rng = np.random.default_rng(sum(shape))
    a = rng.random((*shape, 3))
    b = np.clip(a + 0.15 * rng.standard_normal(a.shape), 0, 1)
    assert ssim(a, b) == pytest.approx(sk_ssim(a, b), abs=1e-6)
    c = rng.random((*shape, 3))  # unrelated image: SSIM near 0
    assert ssim(a, c) == pytest.approx(sk_ssim(a, c), abs=1e-6)


@pytest.mark.parametrize("shape", [(24, 24), (31, 50)])
def test_ssim_matches_skimage_on_structured_images(shape):
    a = structured(*shape)
    shifted = np.roll(a, 1, axis=1)
    darker = a * 0.8
    swapped = a[..., ::-1]  # channel layout matters: R and B exchanged
    for b in (shifted, darker, swapped):
        assert ssim(a, b) == pytest.approx(sk_ssim(a, b), abs=1e-6)
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-9)
    # float32 tensors give the same value
    assert ssim(torch.tensor(a, dtype=torch.float32), torch.tensor(darker, dtype=torch.float32)) == pytest.approx(
        sk_ssim(a, darker), abs=1e-5
    )


def test_ssim_of_constant_images_by_hand():
    # constant images: variances and covariance vanish, SSIM = (2 mu_a mu_b + C1) / (mu_a^2 + mu_b^2 + C1)
    a, b = np.full((15, 13, 3), 0.5), np.full((15, 13, 3), 0.6)
    c1 = 0.01**2
    assert ssim(a, b) == pytest.approx((2 * 0.5 * 0.6 + c1) / (0.25 + 0.36 + c1), abs=1e-12)


def test_ssim_is_per_channel_mean():
    a, b = structured(20, 30), np.clip(structured(20, 30) + 0.1, 0, 1)
    per_channel = [
        structural_similarity(a[..., c], b[..., c], gaussian_weights=True, sigma=1.5,
                              use_sample_covariance=False, data_range=1.0)
        for c in range(3)
    ]
    assert ssim(a, b) == pytest.approx(np.mean(per_channel), abs=1e-6)


def test_ssim_needs_11_pixels():
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(np.zeros((10, 20, 3)), np.zeros((10, 20, 3)))


# ----------------------------------------------------------------------------- LPIPS


def test_lpips_never_invents_a_number():
    scorer = LpipsScorer("cpu")
    a = structured(32, 32).astype(np.float32)
    if scorer.available:
        assert scorer(a, a) == pytest.approx(0.0, abs=1e-6)
        assert scorer(a, 1 - a) > 0.1
    else:
        assert scorer.reason and ("lpips" in scorer.reason or "AlexNet" in scorer.reason)
        assert scorer(a, a) is None


# ----------------------------------------------------------------------------- evaluate_model


def make_scene(H: int = 16, W: int = 12, value: float = 0.6, n_test: int = 3) -> Scene:
    """A scene whose every image is the constant ``value``; cameras on a circle at radius 4."""
    n = n_test + 2
    poses = np.tile(np.eye(4, dtype=np.float32), (n, 1, 1))
    poses[:, 0, 3] = np.linspace(-1, 1, n)
    poses[:, 2, 3] = 4.0
    return Scene(
        name="flat", format="builtin", images=np.full((n, H, W, 3), value, np.float32), poses=poses,
        H=H, W=W, focal=20.0, near=2.0, far=6.0,
        splits={"train": np.array([0]), "val": np.array([1]), "test": np.arange(2, n)},
    )


class GreyRenderer:
    """A ray renderer whose MLP (6 -> 8 -> 3, last layer zero) outputs sigmoid(0) = 0.5 everywhere."""

    def __init__(self, kind: str = "student"):
        self.model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
        nn.init.zeros_(self.model[2].weight)
        nn.init.zeros_(self.model[2].bias)
        self.model.eval()
        self.meta = {"kind": kind, "train_seconds": 90.0, "step": 10, "device": "cpu"}
        self.calls = 0

    @torch.no_grad()
    def render_rays(self, rays_o: torch.Tensor, rays_d: torch.Tensor) -> torch.Tensor:
        """rays_o, rays_d: (n, 3) -> rgb (n, 3)."""
        self.calls += 1
        return torch.sigmoid(self.model(torch.cat([rays_o, rays_d], dim=-1)))


def test_evaluate_model_hand_checked(tmp_path):
    scene = make_scene()
    model_file = tmp_path / "model.pt"
    model_file.write_bytes(b"x" * 2_500_000)
    renderer = GreyRenderer()
    row = evaluate_model(renderer, scene, renders_dir=tmp_path / "renders", model_path=model_file,
                         n_speed_frames=3, warmup=1)
    assert list(row) == COLUMNS
    assert row["scene"] == "flat" and row["model"] == "student"
    assert row["family"] is None  # its meta names no student family
    assert row["psnr"] == pytest.approx(20.0, abs=1e-5)  # |0.5 - 0.6| = 0.1 everywhere
    c1 = 0.01**2
    assert row["ssim"] == pytest.approx((2 * 0.5 * 0.6 + c1) / (0.25 + 0.36 + c1), abs=1e-6)
    assert row["lpips"] is None
    assert row["mflops_per_ray"] == pytest.approx(2 * (6 * 8 + 8 * 3) / 1e6)
    assert row["params"] == 6 * 8 + 8 + 8 * 3 + 3
    assert row["size_mb"] == pytest.approx(83 * 4 / 1e6)  # float32 weights, not the file's 2.5 MB
    assert row["train_minutes"] == pytest.approx(1.5)
    assert row["fps"] == pytest.approx(1000.0 / row["ms_per_frame"])
    assert isinstance(row["device"], str) and row["device"]
    # 3 test views rendered + 1 warm-up + 3 timed + 1 FLOPs trace
    assert renderer.calls == 3 + 1 + 3 + 1
    pngs = sorted((tmp_path / "renders").glob("*.png"))
    assert [p.name for p in pngs] == ["000.png", "001.png", "002.png"]
    img = iio.imread(pngs[0])
    assert img.shape == (16, 12, 3) and np.all(img == 128)  # 0.5 * 255 rounded
    with open(tmp_path / "renders" / "per_view.csv") as f:
        views = list(csv.DictReader(f))
    assert len(views) == 3 and float(views[1]["psnr"]) == pytest.approx(20.0, abs=1e-4)
    assert not list((tmp_path / "renders").glob(".*"))  # no temp files left


def test_evaluate_model_resized_and_named(tmp_path):
    scene = make_scene(H=24, W=22)
    row = evaluate_model(GreyRenderer(kind="grid"), scene, H=12, W=11, n_speed_frames=1, warmup=0,
                         renders_dir=tmp_path, scene_name="lego_100")
    assert row["model"] == "teacher" and row["scene"] == "lego_100"  # grid/nerf kinds are the teacher
    assert row["family"] is None
    assert iio.imread(tmp_path / "000.png").shape == (12, 11, 3)
    assert row["psnr"] == pytest.approx(20.0, abs=1e-5)


def test_evaluate_model_needs_a_known_model_name():
    with pytest.raises(R2LError, match="pass model="):
        evaluate_model(GreyRenderer(kind="mystery"), make_scene(), n_speed_frames=1, warmup=0)


def test_stage_seconds_prefers_the_stage_time():
    assert stage_seconds({"train_seconds": 600.0}) == 600.0
    # a finetuned student's meta: total (pseudo-data + finetune) outside, its own stage in metrics
    assert stage_seconds({"train_seconds": 600.0, "metrics": {"train_seconds": 60.0}}) == 60.0
    assert math.isnan(stage_seconds({}))


def test_weights_bytes_counts_state_dict_tensors():
    net = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5))
    # linear 4*5+5, batchnorm weight/bias/mean/var 4*5 floats, num_batches_tracked one int64
    assert weights_bytes(net) == (25 + 20) * 4 + 8


def test_time_frames_counts_calls():
    r = GreyRenderer()
    rays = torch.zeros(10, 3)
    ms = time_frames(r, rays, rays, n_frames=4, warmup=2)
    assert ms >= 0.0 and r.calls == 6


# ----------------------------------------------------------------------------- evaluate_scene (real loaders)


def test_evaluate_scene_with_real_model_files(tmp_path):
    import dataclasses

    from r2l.core.checkpoint import atomic_torch_save
    from r2l.data.builtin import write_blender
    from r2l.data.registry import load_scene
    from r2l.models.gridstudent import GridStudentNet
    from r2l.models.r2lnet import R2LNet, R2LNetConfig
    from r2l.models.teacher import teacher_config_from_dict
    from r2l.stages.evaluate import evaluate_scene
    from r2l.stages.teacher import train_teacher

    scene = load_scene("builtin", write_blender(tmp_path / "toy", seed=0, resolution=12, n_train=2, n_val=1, n_test=2))
    tcfg = teacher_config_from_dict({"kind": "grid", "steps": 3, "batch_rays": 32, "val_every": 0, "ckpt_every": 100,
                                     "device": "cpu", "grid": {**GRID_8, "n_samples": 16},
                                     "check_learned": False})  # 3 steps learn little
    train_teacher(scene, tcfg, tmp_path / "teacher.pt", tmp_path / "resume")
    scfg = R2LNetConfig(depth=4, width=8, n_points=4, n_freqs=2)
    grid = GridStudentNet(TINY_GRID_NET, 1.5 * torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))
    for kind, seconds in (("student", 120.0), ("finetuned", 30.0)):
        atomic_torch_save({  # the student: an R2L MLP of r2l 0.1 (no family recorded); the finetuned: a grid student
            "weights": R2LNet(scfg).state_dict() if kind == "student" else grid.state_dict(),
            "config": {"student": dataclasses.asdict(scfg)} if kind == "student" else {
                "family": "grid", "grid": dataclasses.asdict(TINY_GRID_NET)}, "kind": kind,
            "near": 2.0, "far": 6.0, "ndc": False, "ndc_near": 1.0, "step": 5,
            "metrics": {"train_seconds": seconds, "total_train_seconds": seconds + 120.0 * (kind == "finetuned")},
        }, tmp_path / f"{kind}.pt")
    paths = {m: tmp_path / f"{m}.pt" for m in ("teacher", "student", "finetuned")}
    rows = evaluate_scene(scene, paths, tmp_path / "out" / "metrics.csv", tmp_path / "renders", device="cpu",
                          n_speed_frames=1, warmup=0, scene_name="toy")
    assert [r["model"] for r in rows] == ["teacher", "student", "finetuned"]
    df = __import__("pandas").read_csv(tmp_path / "out" / "metrics.csv")
    assert list(df.columns) == COLUMNS and len(df) == 3
    assert [r["family"] for r in rows] == [None, "r2l", "grid"]
    assert df["family"].isna().tolist() == [True, False, False] and list(df["family"][1:]) == ["r2l", "grid"]
    student = rows[1]
    assert student["mflops_per_ray"] == pytest.approx(2 * (4 * 3 * 5 * 8 + 2 * 8 * 8 + 8 * 3) / 1e6)
    assert student["params"] == sum(p.numel() for p in R2LNet(scfg).parameters())
    assert rows[2]["train_minutes"] == pytest.approx(0.5)  # the finetuning stage alone
    assert rows[2]["params"] == sum(p.numel() for p in grid.parameters())
    assert rows[1]["train_minutes"] == pytest.approx(2.0)
    assert 0 < rows[0]["mflops_per_ray"] and 5 < rows[0]["psnr"] < 120
    for m in ("teacher", "student", "finetuned"):
        assert sorted(p.name for p in (tmp_path / "renders" / m).glob("*.png")) == ["000.png", "001.png"]
