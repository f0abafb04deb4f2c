"""The grid student family: hand-checked FLOPs and depth loss, its box, that it learns, resumes bit for bit,
matches between one and two processes, and loads and renders through the common model loader."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from r2l.core.checkpoint import load_checkpoint
from r2l.core.errors import R2LError
from r2l.core.metrics import psnr_from_mse
from r2l.data.builtin import BuiltinScene, blender_split_poses
from r2l.data.scene import Scene
from r2l.data.views import ViewStore
from r2l.models.contracted import RaySpace
from r2l.models.flops import count_flops, flops_per_ray
from r2l.models.gridstudent import (
    GridStudentConfig,
    GridStudentNet,
    first_hit_log_weights,
    grid_student_lookup_flops,
    scene_box,
    slice_tiles,
    tiled_trilinear,
)
from r2l.models.load import describe_model, load_model
from r2l.models.render import pose_rays, stratified_t
from r2l.models.students import build_network
from r2l.stages.distributed import run_training
from r2l.stages.pseudo_data import generate_pseudo_data
from r2l.stages.student import DistillConfig, student_box, train_student

RES = 24
BOX = torch.tensor([[-1.5, -1.5, -1.5], [1.5, 1.5, 1.5]])
TINY = GridStudentConfig(n_points=8, geometry_resolution=16, n_refine=4, n_fine=2, resolutions=(8, 16), channels=3,
                         mlp_width=16, mlp_depth=2, view_freqs=1)
SOFTMAX = replace(TINY, weights="softmax")


def test_flops_match_a_hand_count():
    """Linear layers: in_dim = 2 points x 6 features + 1 + 3 x 3 = 22 -> 16 -> 16 -> 3; lookups by the docstring's rule."""
    model = GridStudentNet(TINY, BOX)
    assert TINY.in_dim == 2 * 3 * 2 + 1 + 9 == 22
    n = 7
    measured = count_flops(model, torch.zeros(n, 3), torch.ones(n, 3), 2.0, 6.0, False) / n
    assert measured == 2 * (22 * 16 + 16 * 16 + 16 * 3) == 1312
    # (8 + 4 refining) geometry points x 8 corners x 2; 2 feature points x 2 levels x (3 planes x 4 corners x
    # 3 channels x 2 + 2 x 3 for the product)
    assert grid_student_lookup_flops(TINY) == 12 * 16 + 2 * 2 * (72 + 6) == 504


def test_depth_loss_by_hand():
    """Zero logits: every one of the 9 slots has weight 1/9, so any target costs log 9; the split is linear."""
    model = GridStudentNet(SOFTMAX, BOX)
    torch.nn.init.zeros_(model.background)
    t = stratified_t(2.0, 6.0, 4, TINY.n_points, False)  # 2, 2.571, ..., 6
    logits = torch.zeros(4, TINY.n_points + 1)
    logits[1, 2] = 1.0  # ray 1: more weight on point 2
    aux = {"t": t, "logits": logits}
    d = 2.0 + 4.0 / 7 * 2.25  # a quarter of the way from point 2 to point 3
    target = torch.tensor([[d, 1.0], [d, 1.0], [6.0, 0.0], [float("nan"), float("nan")]])
    ce = model.depth_loss(aux, target, 6.0)
    log_z = math.log(8 + math.e)  # ray 1's normaliser
    torch.testing.assert_close(ce[0], torch.tensor(math.log(9.0)))
    torch.testing.assert_close(ce[1], torch.tensor(-(0.75 * (1.0 - log_z) + 0.25 * (0.0 - log_z))))
    torch.testing.assert_close(ce[2], torch.tensor(math.log(9.0)))  # all on the background
    assert float(ce[3]) == 0.0


def test_depth_loss_gradient_is_finite_for_rays_without_depth():
    model = GridStudentNet(TINY, BOX)
    rays_o, rays_d = torch.tensor([[0.0, 0.0, 4.0]] * 2), torch.tensor([[0.0, 0.0, -1.0]] * 2)
    _, aux = model(rays_o, rays_d, 2.0, 6.0, True, t=stratified_t(2.0, 6.0, 2, TINY.n_points, True), with_depth=True)
    loss = model.depth_loss(aux, torch.tensor([[4.0, 1.0], [float("nan"), float("nan")]]), 6.0).sum()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_expected_depth_follows_the_weights():
    """A logit grid that is high in a slab z in [-0.2, 0.2] puts the expected depth of a ray down -z from z = 4 near 4."""
    model = GridStudentNet(SOFTMAX, BOX)
    with torch.no_grad():
        z = torch.linspace(-1.5, 1.5, TINY.geometry_resolution)
        model.geometry[:] = torch.where(z.abs() < 0.2, 30.0, -30.0)[:, None, None]  # grid_sample's depth axis is z
        model.background.fill_(-30.0)
    rays_o, rays_d = torch.tensor([[0.1, -0.2, 4.0]]), torch.tensor([[0.0, 0.0, -1.0]])
    _, aux = model(rays_o, rays_d, 2.0, 6.0, False, with_depth=True)
    assert abs(float(aux["depth"][0]) - 4.0) < 0.3


def test_first_hit_weights_by_hand():
    """Logits 0, 0: the first point takes 1/2, the second 1/2 x 1/2, the background the last 1/4; a sure hit takes all."""
    log_w = first_hit_log_weights(torch.tensor([[0.0, 0.0], [30.0, 30.0]]))
    torch.testing.assert_close(log_w.exp(), torch.tensor([[0.5, 0.25, 0.25], [1.0, 0.0, 0.0]]), atol=1e-6, rtol=0)
    torch.testing.assert_close(torch.softmax(log_w, dim=-1), log_w.exp())  # already normalised


def test_first_hit_sees_the_near_surface_where_softmax_averages():
    """Two slabs along a ray down -z from z = 4 (z = 0.6 +- 0.2 and z = -0.8 +- 0.2, equal logits): the first hit
    puts the surface on the near one (t about 3.2), a softmax between the two."""
    z = torch.linspace(-1.5, 1.5, TINY.geometry_resolution)
    slabs = torch.where(((z - 0.6).abs() < 0.2) | ((z + 0.8).abs() < 0.2), 30.0, -30.0)[:, None, None]
    rays_o, rays_d = torch.tensor([[0.1, -0.2, 4.0]]), torch.tensor([[0.0, 0.0, -1.0]])
    depths = {}
    for cfg in (replace(TINY, n_points=64), replace(SOFTMAX, n_points=64)):
        model = GridStudentNet(cfg, BOX)
        with torch.no_grad():
            model.geometry[:] = slabs
            if model.background is not None:
                model.background.fill_(-30.0)
        _, aux = model(rays_o, rays_d, 2.0, 6.0, False, with_depth=True)
        depths[cfg.weights] = float(aux["surface"][0])
    assert 3.1 < depths["first_hit"] < 3.45  # the near slab's front face is at t = 3.2
    assert 3.7 < depths["softmax"] < 4.4  # between the slabs (their centres at t = 3.4 and 4.8)


def test_files_without_weights_key_are_softmax_students():
    """Grid student files written before ``weights`` existed hold a softmax student (with its background logit)."""
    settings = {k: v for k, v in vars(SOFTMAX).items() if k != "weights"}
    model = build_network("grid", settings)
    assert model.cfg.weights == "softmax" and model.background is not None
    assert GridStudentNet(TINY, BOX).background is None  # first hit: no background logit


def test_files_without_span_key_sample_between_near_and_far():
    """Grid student files written before ``span`` existed stratify their points between near and far: a ray down
    -z from z = 4 through the +-1.5 box puts its 8 points at 2, 2.571, ..., 6, not on its span 2.5..5.5 in the box."""
    rays_o, rays_d = torch.tensor([[0.1, -0.2, 4.0]]), torch.tensor([[0.0, 0.0, -1.0]])
    old = build_network("grid", {k: v for k, v in vars(TINY).items() if k != "span"}, BOX)
    assert old.cfg.span == "near_far"
    _, aux = old(rays_o, rays_d, 2.0, 6.0, False, with_depth=True)
    torch.testing.assert_close(aux["t"], torch.linspace(2.0, 6.0, 8)[None])
    _, aux = GridStudentNet(TINY, BOX)(rays_o, rays_d, 2.0, 6.0, False, with_depth=True)
    torch.testing.assert_close(aux["t"], torch.linspace(2.5, 5.5, 8)[None])


def test_box_span_by_hand():
    """Spans in the +-1.5 box, near 2, far 6: down -z from z = 4: 2.5..5.5; from (1, 0, 4) along (-2, 0, -4) / sqrt 20
    it enters through z = 1.5 (t = 2.5 sqrt 20 / 4) and leaves through x = -1.5 (t = 2.5 sqrt 20 / 2); from inside
    the box (z = 1, down -z) it starts at near, ends at z = -1.5 (t = 2.5); a ray beside the box: far..far."""
    model = GridStudentNet(TINY, BOX)
    d1 = torch.tensor([-2.0, 0.0, -4.0]) / math.sqrt(20.0)
    rays_o = torch.tensor([[0.1, -0.2, 4.0], [1.0, 0.0, 4.0], [0.0, 0.0, 1.0], [2.0, 0.0, 4.0]])
    rays_d = torch.stack([torch.tensor([0.0, 0.0, -1.0]), d1, torch.tensor([0.0, 0.0, -1.0]),
                          torch.tensor([0.0, 0.0, -1.0])])
    lo, hi = model.span(rays_o, rays_d, 2.0, 6.0)
    torch.testing.assert_close(lo, torch.tensor([2.5, 2.5 * math.sqrt(20.0) / 4.0, 2.0, 6.0]))
    torch.testing.assert_close(hi, torch.tensor([5.5, 2.5 * math.sqrt(20.0) / 2.0, 2.5, 6.0]))
    with torch.no_grad():
        model.geometry.fill_(30.0)  # everything inside the box is solid
    _, aux = model(rays_o, rays_d, 2.0, 6.0, False, with_depth=True)
    torch.testing.assert_close(aux["opacity"], torch.tensor([1.0, 1.0, 1.0, 0.0]))  # the ray beside the box: background
    torch.testing.assert_close(aux["surface"][:3], lo[:3], atol=0.05, rtol=0)  # the first hit: where the span begins


@pytest.mark.parametrize("size", [(16, 16, 16), (5, 7, 9), (2, 3, 4), (17, 8, 8)])
def test_tiled_trilinear_is_the_3d_grid_sample(size):
    """The tiled 2-D read equals torch's 3-D trilinear read with border padding (float64), inside and outside."""
    gen = torch.Generator().manual_seed(0)
    vol = torch.randn(size, generator=gen, dtype=torch.float64)
    g = torch.rand(500, 3, generator=gen, dtype=torch.float64) * 2.4 - 1.2  # some points outside: border values
    g[:8] = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0], [1.0, -1.0, 1.0], [0.0, 0.0, 1.0],
                          [-1.0, 1.0, -1.0], [0.3, 1.0, -1.0], [1.0, 0.2, 0.999999], [0.5, 0.5, -1.0]])  # corners
    expected = torch.nn.functional.grid_sample(vol[None, None], g.reshape(1, -1, 1, 1, 3), align_corners=True,
                                               padding_mode="border").reshape(-1)
    got = tiled_trilinear(slice_tiles(vol), size, g[:, 0], g[:, 1], g[:, 2])
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)


def test_scene_box_from_points_and_defaults():
    pts = torch.cartesian_prod(*[torch.linspace(-1.0, 0.5, 11)] * 3)
    box = scene_box(pts, ndc=False)
    torch.testing.assert_close(box, torch.tensor([[-1.15] * 3, [0.65] * 3]))  # the extent 1.5, 10% each side
    torch.testing.assert_close(scene_box(None, ndc=False), BOX)
    assert scene_box(pts * 5, ndc=True).abs().max() <= 1.0  # NDC boxes stay in the NDC cube


def test_bad_config_rejected():
    with pytest.raises(R2LError, match="n_fine"):
        GridStudentConfig(n_fine=0)
    with pytest.raises(R2LError, match="resolutions"):
        GridStudentConfig(resolutions=())
    with pytest.raises(R2LError, match="weights"):
        GridStudentConfig(weights="max")
    with pytest.raises(R2LError, match="family"):
        DistillConfig(family="mlp")


# ----------------------------------------------------------------------------- training on the built-in scene


def _scene(n: int, seed_split: str) -> Scene:
    poses = blender_split_poses(0, n, n, 0)[seed_split].astype(np.float32)
    focal = 0.5 * RES / math.tan(0.5 * 0.6911112070083618)
    rgba = np.stack([BuiltinScene(0).render(p, RES, RES, focal, spp=1) for p in poses])
    images = rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:])  # on white, as the pseudo views
    return Scene(name="builtin0", format="blender", images=images, poses=poses, H=RES, W=RES, focal=focal,
                 near=2.0, far=6.0, splits={"train": np.arange(n)})


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    """Pseudo-data of the built-in scene with exact depth (24 views of 24 x 24) and 4 held-out views."""
    root = tmp_path_factory.mktemp("grid")
    scene = _scene(24, "train")
    generate_pseudo_data(BuiltinScene(0).as_teacher(), scene, root / "pseudo", n_views=24, seed=0, views_per_shard=8)
    return {"root": root, "store": root / "pseudo", "test": _scene(4, "val")}


def _cfg(**kw) -> DistillConfig:
    base = dict(steps=300, batch_rays=512, warmup_steps=20, lr=5e-4, lr_decay_steps=300, val_every=0, val_views=2,
                ckpt_every=100, log_every=10, device="cpu", chunk=4096, family="grid", grid=TINY)
    return DistillConfig(**{**base, **kw})


def _test_psnr(model_path: Path, scene: Scene) -> tuple[float, float]:
    """Mean test PSNR of the student file and of an image painted in the mean test colour."""
    student = load_model(model_path, "cpu")
    psnrs, mean_psnrs = [], []
    for image, pose in zip(scene.images, scene.poses):
        pred = student.render_image(scene, pose, RES, RES, scene.focal).numpy()
        psnrs.append(psnr_from_mse(float(((pred - image) ** 2).mean())))
        mean_psnrs.append(psnr_from_mse(float(((image.mean(axis=(0, 1)) - image) ** 2).mean())))
    return float(np.mean(psnrs)), float(np.mean(mean_psnrs))


def test_the_grid_student_learns_the_scene(data, tmp_path):
    store = ViewStore(data["store"])
    assert store.has_depth
    box = student_box([store], ndc=False, space=RaySpace())
    assert bool((box[0] > -1.6).all() and (box[1] < 1.6).all() and (box[1] - box[0] > 0.5).all())
    train_student([data["store"]], _cfg(steps=600, lr_decay_steps=600), tmp_path / "model.pt", tmp_path / "resume")
    got, mean = _test_psnr(tmp_path / "model.pt", data["test"])
    assert got > mean + 6.0, (got, mean)
    info = describe_model(tmp_path / "model.pt")
    assert info["network"]["n_fine"] == TINY.n_fine and info["family"] == "grid"
    student = load_model(tmp_path / "model.pt", "cpu")
    assert student.meta["family"] == "grid" and student.meta["lookup_flops_per_ray"] == 504.0
    rays_o, rays_d = pose_rays(data["test"].poses[0], RES, RES, data["test"].focal, False, None, "cpu")
    assert flops_per_ray(student, rays_o, rays_d) == 1312 + 504  # linear layers counted, lookups added


def test_a_killed_run_resumes_bit_identically(data, tmp_path):
    cfg = _cfg(steps=60, ckpt_every=20, hard_ratio=0.5, hard_mul=1)  # the pool is full after 2 steps
    train_student([data["store"]], cfg, tmp_path / "a.pt", tmp_path / "ra")
    out = train_student([data["store"]], cfg, tmp_path / "b.pt", tmp_path / "rb", max_steps=40)
    assert out["finished"] is False
    train_student([data["store"]], cfg, tmp_path / "b.pt", tmp_path / "rb")
    a, b = load_checkpoint(tmp_path / "a.pt"), load_checkpoint(tmp_path / "b.pt")
    for name, w in a["weights"].items():
        assert torch.equal(b["weights"][name], w), name


def test_two_processes_match_one(data, tmp_path):
    """Without pool rays (the pool fills after 100 steps) two gloo processes compute the one-process gradient."""
    cfg = _cfg(steps=12, ckpt_every=6, log_every=1)
    train_student([data["store"]], cfg, tmp_path / "one.pt", tmp_path / "r1")
    args = dict(store_dirs=[data["store"]], cfg=cfg, out_path=tmp_path / "two.pt", resume_dir=tmp_path / "r2")
    assert run_training("train_student", args, 2, tmp_path / "r2") is None
    one, two = load_checkpoint(tmp_path / "one.pt"), load_checkpoint(tmp_path / "two.pt")
    assert two["metrics"]["processes"] == 2
    np.testing.assert_allclose([r[1] for r in two["metrics"]["loss_history"]],
                               [r[1] for r in one["metrics"]["loss_history"]], rtol=1e-5)
    # Adam divides by the root of the squared-gradient average: a logit cell whose gradient is about 1e-9 in one run
    # and of the other sign in the other (the processes' sum is taken in another order) steps the other way, so a
    # few cells differ by a fraction of one step's lr (0.04 here); the renders must still agree.
    for name, w in one["weights"].items():
        torch.testing.assert_close(two["weights"][name], w, rtol=0, atol=2e-3)
    scene = data["test"]
    renders = [load_model(tmp_path / f, "cpu").render_image(scene, scene.poses[0], RES, RES, scene.focal)
               for f in ("one.pt", "two.pt")]
    torch.testing.assert_close(renders[1], renders[0], rtol=0, atol=1e-3)
