"""The R2L student network: paper-preset size and cost, point sampling, output range, the loader."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from r2l.core.checkpoint import atomic_torch_save
from r2l.core.errors import DataError, R2LError
from r2l.models.flops import count_flops, student_closed_form_flops
from r2l.models.nerf import posenc
from r2l.models.r2lnet import R2LNet, R2LNetConfig
from r2l.models.students import load_student
from r2l.models.render import stratified_t


def test_paper_preset_size_and_flops():
    with torch.device("meta"):
        model = R2LNet(R2LNetConfig())
    cfg = model.cfg
    assert (cfg.n_points, cfg.n_freqs, cfg.depth, cfg.width, cfg.n_blocks, cfg.in_dim) == (16, 10, 88, 256, 43, 1008)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 88
    assert sum(p.numel() for p in model.parameters()) == 5_917_187
    # 1008*256 + 86*256*256 + 256*3 = 5,894,912 multiply-adds -> 11,789,824 FLOPs
    assert student_closed_form_flops(cfg) == 2 * (1008 * 256 + 86 * 256 * 256 + 256 * 3) == 11_789_824
    assert round(student_closed_form_flops(cfg) / 1e6, 2) == 11.79
    assert linears[0].in_features == 1008 and linears[-1].out_features == 3


def test_measured_flops_match_closed_form():
    model = R2LNet(R2LNetConfig(depth=6, width=32, n_points=4, n_freqs=3))
    n = 5
    measured = count_flops(model, torch.zeros(n, 3), torch.ones(n, 3), 2.0, 6.0, False) / n
    assert measured == student_closed_form_flops(model.cfg) == 2 * (4 * 3 * 7 * 32 + 4 * 32 * 32 + 32 * 3)


@pytest.mark.parametrize("depth", [3, 2, 87, 0])
def test_bad_depth_rejected(depth):
    with pytest.raises(R2LError, match="depth"):
        R2LNetConfig(depth=depth)


def test_structure_is_residual_with_global_skip():
    """Hand-evaluate the network from its layers and compare with forward()."""
    torch.manual_seed(0)
    model = R2LNet(R2LNetConfig(depth=6, width=16, n_points=3, n_freqs=2))
    rays_o, rays_d = torch.randn(7, 3), torch.randn(7, 3)
    t = torch.linspace(2.0, 6.0, 3)
    pts = rays_o[:, None] + t[None, :, None] * rays_d[:, None]
    x = posenc(pts.reshape(7, 9), 2)
    assert x.shape == (7, 9 * 5)
    h0 = torch.relu(model.head(x))
    h = h0
    for block in model.blocks:
        h = h + block.fc2(torch.relu(block.fc1(h)))
    expect = torch.sigmoid(model.tail(h + h0))
    got = model(rays_o, rays_d, 2.0, 6.0, train=False)
    torch.testing.assert_close(got, expect, rtol=1e-5, atol=1e-6)


def test_output_shape_and_range():
    torch.manual_seed(0)
    model = R2LNet(R2LNetConfig(depth=4, width=32))
    rgb = model(torch.randn(100, 3) * 3, torch.randn(100, 3), 2.0, 6.0, train=True)
    assert rgb.shape == (100, 3) and rgb.dtype == torch.float32
    assert bool((rgb > 0).all() and (rgb < 1).all())


def test_eval_points_evenly_spaced_and_deterministic():
    t1 = stratified_t(2.0, 6.0, 5, 16, jitter=False)
    t2 = stratified_t(2.0, 6.0, 5, 16, jitter=False)
    assert t1.shape == (5, 16)
    assert torch.equal(t1, t2)
    torch.testing.assert_close(t1[0], torch.tensor([2.0 + 4.0 * i / 15 for i in range(16)]))
    torch.testing.assert_close(t1[:, 1:] - t1[:, :-1], torch.full((5, 15), 4.0 / 15))


def test_train_points_within_their_intervals():
    g = torch.Generator().manual_seed(1)
    t = stratified_t(2.0, 6.0, 4000, 16, jitter=True, generator=g)
    grid = torch.linspace(2.0, 6.0, 16)
    mids = 0.5 * (grid[1:] + grid[:-1])
    lower = torch.cat([grid[:1], mids])
    upper = torch.cat([mids, grid[-1:]])
    assert bool((t >= lower).all() and (t <= upper).all())
    assert bool((t[:, 1:] >= t[:, :-1]).all())  # sorted along the ray
    # one independent uniform draw per interval: each interval is covered (mean near its centre)
    torch.testing.assert_close(t.mean(0), 0.5 * (lower + upper), atol=0.02, rtol=0)
    # reproducible from the generator, different without reseeding
    assert torch.equal(t, stratified_t(2.0, 6.0, 4000, 16, True, torch.Generator().manual_seed(1)))
    assert not torch.equal(t, stratified_t(2.0, 6.0, 4000, 16, True, g))


def _old_sample_t(near, far, n_rays, n_points, generator):
    """The student's own jittered sampler before it was merged into render.stratified_t, written out."""
    t = torch.linspace(near, far, n_points).expand(n_rays, n_points)
    mids = 0.5 * (t[:, 1:] + t[:, :-1])
    lower = torch.cat([t[:, :1], mids], dim=-1)
    upper = torch.cat([mids, t[:, -1:]], dim=-1)
    u = torch.rand((n_rays, n_points), generator=generator, device=generator.device)
    return lower + (upper - lower) * u


def test_student_samples_bit_identical_to_its_old_sampler():
    """Same RNG draws, same arithmetic: the points and the network input do not change by a bit."""
    old = _old_sample_t(2.0, 6.0, 300, 16, torch.Generator().manual_seed(7))
    assert torch.equal(stratified_t(2.0, 6.0, 300, 16, True, torch.Generator().manual_seed(7)), old)
    model = R2LNet(R2LNetConfig(depth=4, width=8))
    o, d = torch.randn(300, 3), torch.randn(300, 3)
    pts = o[:, None, :] + old[..., None] * d[:, None, :]
    x = model.encode(o, d, 2.0, 6.0, True, torch.Generator().manual_seed(7))
    assert torch.equal(x, posenc(pts.reshape(300, -1), 10))


def test_no_view_direction_dependence_beyond_points():
    """Only the 16 points enter: scaling rays_d while rescaling near/far gives the same points and colour."""
    torch.manual_seed(0)
    model = R2LNet(R2LNetConfig(depth=4, width=16))
    o, d = torch.randn(9, 3), torch.randn(9, 3)
    a = model(o, d, 2.0, 6.0, train=False)
    b = model(o, 2.0 * d, 1.0, 3.0, train=False)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def _student_file(path, cfg: R2LNetConfig, model: R2LNet, kind="student"):
    atomic_torch_save({
        "weights": model.state_dict(), "config": {"student": dataclasses.asdict(cfg)}, "kind": kind,
        "near": 2.0, "far": 6.0, "ndc": False, "ndc_near": 1.0, "step": 7,
        "metrics": {"val_psnr": 21.5, "train_seconds": 3.0},
    }, path)


def test_load_student_renderer(tmp_path):
    torch.manual_seed(0)
    cfg = R2LNetConfig(depth=4, width=32, n_points=8, n_freqs=4)
    model = R2LNet(cfg)
    _student_file(tmp_path / "s.pt", cfg, model)
    student = load_student(tmp_path / "s.pt", device="cpu", chunk=7)
    assert student.meta["kind"] == "student" and student.meta["step"] == 7 and student.meta["device"] == "cpu"
    assert student.meta["val_psnr"] == 21.5 and student.meta["train_seconds"] == 3.0
    assert isinstance(student.model, nn.Module) and not student.model.training
    o, d = torch.randn(50, 3), torch.randn(50, 3)
    rgb = student.render_rays(o, d)
    assert rgb.shape == (50, 3) and rgb.dtype == torch.float32 and rgb.device.type == "cpu"
    assert not rgb.requires_grad  # rendered without autograd
    assert student.render_rays(o[:0], d[:0]).shape == (0, 3)  # no rays: an empty image row, not an error
    with torch.no_grad():
        torch.testing.assert_close(rgb, model(o, d, 2.0, 6.0, train=False))  # chunking changes nothing
    assert torch.equal(rgb, student.render_rays(o, d))  # deterministic


def test_load_student_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_student(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="junk.pt"):
        load_student(tmp_path / "junk.pt")
