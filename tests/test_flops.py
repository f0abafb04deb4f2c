"""FLOPs per ray: measured counts on hand-built modules, and the paper presets against their closed forms."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import GRID_8
from torch import nn

from r2l.models.flops import (
    GRID_NOTE,
    MLP_NOTE,
    count_flops,
    flops_note,
    flops_per_ray,
    nerf_closed_form_flops,
    nerf_macs_per_sample,
    student_closed_form_flops,
)
from r2l.models.nerf import NeRF, NeRFConfig
from r2l.models.r2lnet import R2LNet, R2LNetConfig
from r2l.models.students import Student
from r2l.models.render import render_rays_nerf


def rays(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n Blender-like rays from radius 4 towards the origin: (n, 3) each."""
    g = torch.Generator().manual_seed(seed)
    o = torch.tensor([0.0, 0.0, 4.0]).expand(n, 3).clone()
    d = torch.cat([0.2 * (torch.rand(n, 2, generator=g) - 0.5), -torch.ones(n, 1)], dim=-1)
    return o, d


# ----------------------------------------------------------------------------- hand-built modules


def test_sequential_macs_by_hand():
    net = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 5))
    assert count_flops(net, torch.zeros(7, 10)) == 2 * 7 * (10 * 20 + 20 * 5)  # 2 x 2100
    # leading dimensions all count as rows
    assert count_flops(net, torch.zeros(2, 7, 10)) == 2 * 14 * 300


def test_callable_and_repeated_modules():
    a, b = nn.Linear(4, 3), nn.Linear(3, 2, bias=False)

    def fn(x):
        h = a(x)
        return b(a(x) + h)  # a runs twice

    assert count_flops(fn, torch.zeros(5, 4)) == 2 * 5 * (2 * 4 * 3 + 3 * 2)
    # only what runs inside the call is counted
    assert count_flops(lambda x: x, torch.zeros(1)) == 0


def test_functional_and_matmul_count_but_not_other_ops():
    """F.linear, ``@`` and bmm are linear layers; grid_sample, convolutions and elementwise ops are not."""
    w = torch.zeros(3, 4)
    assert count_flops(lambda x: F.linear(x, w, torch.zeros(3)), torch.zeros(5, 4)) == 2 * 5 * 4 * 3
    assert count_flops(lambda x: x @ w.T, torch.zeros(2, 5, 4)) == 2 * 10 * 4 * 3
    assert count_flops(lambda a: torch.bmm(a, a.transpose(1, 2)), torch.zeros(2, 5, 4)) == 2 * 2 * 5 * 4 * 5
    grid, coords = torch.zeros(1, 2, 8, 8), torch.zeros(1, 5, 1, 2)
    assert count_flops(lambda g: F.grid_sample(g, coords, align_corners=True), grid) == 0
    assert count_flops(nn.Conv2d(2, 3, 3), grid) == 0
    assert count_flops(lambda x: torch.sin(x) * x + x, torch.zeros(5, 4)) == 0


def test_flops_per_ray_on_a_renderer_restores_mode():
    class Toy:
        def __init__(self):
            self.model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
            self.meta = {"kind": "student"}
            self.seen_training = None

        def render_rays(self, o, d):
            self.seen_training = self.model.training
            return torch.sigmoid(self.model(torch.cat([o, d], -1)))

    toy = Toy()
    toy.model.train()
    o, d = rays(9)
    assert flops_per_ray(toy, o, d) == 2.0 * (6 * 16 + 16 * 3)
    assert toy.seen_training is False and toy.model.training is True
    assert flops_note(toy) == MLP_NOTE
    toy.meta["kind"] = "grid"
    assert flops_note(toy) == GRID_NOTE
    with pytest.raises(ValueError):
        flops_per_ray(toy, o[:0], d[:0])


# ----------------------------------------------------------------------------- student


def test_student_paper_preset_measured_equals_closed_form():
    cfg = R2LNetConfig()
    assert student_closed_form_flops(cfg) == 2 * 5_894_912
    assert round(student_closed_form_flops(cfg) / 1e6, 2) == 11.79
    renderer = Student(R2LNet(cfg), 2.0, 6.0, {"kind": "student", "train_seconds": 0.0, "step": 0, "device": "cpu"})
    o, d = rays(3)
    assert flops_per_ray(renderer, o, d) == student_closed_form_flops(cfg)


@pytest.mark.parametrize("cfg", [R2LNetConfig(n_points=4, n_freqs=2, depth=6, width=16),
                                 R2LNetConfig(n_points=2, n_freqs=0, depth=4, width=8)])
def test_student_small_configs(cfg):
    o, d = rays(5)
    measured = flops_per_ray(lambda a, b: R2LNet(cfg).eval()(a, b, 2.0, 6.0, train=False), o, d)
    assert measured == student_closed_form_flops(cfg)


# ----------------------------------------------------------------------------- NeRF teacher


def nerf_renderer(cfg: NeRFConfig, ndc: bool = False):
    """Coarse + fine NeRF rendering (r2l.models.render) as a callable f(rays_o, rays_d)."""
    cfg = cfg.resolved(ndc)
    coarse, fine = NeRF(cfg).eval(), NeRF(cfg).eval()
    near, far = (0.0, 1.0) if ndc else (2.0, 6.0)

    def fn(o, d):
        return render_rays_nerf(coarse, fine, o, d, near, far, cfg.n_coarse, cfg.n_fine, (1.0, 1.0, 1.0), False)["rgb"]

    return fn


def test_nerf_paper_preset_measured_equals_closed_form():
    cfg = NeRFConfig()
    assert nerf_macs_per_sample(cfg) == 593_408
    assert nerf_closed_form_flops(cfg) == 2 * 593_408 * 256
    assert round(nerf_closed_form_flops(cfg) / 1e6, 2) == 303.82
    o, d = rays(2)
    assert flops_per_ray(nerf_renderer(cfg), o, d) == nerf_closed_form_flops(cfg)


def test_nerf_llff_preset_is_64_plus_64():
    cfg = NeRFConfig()
    assert nerf_closed_form_flops(cfg, ndc=True) == 2 * 593_408 * (64 + 64 + 64)
    o = torch.tensor([[0.0, 0.0, -1.0], [0.1, 0.0, -1.0]])
    d = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.1, 2.0]])
    assert flops_per_ray(nerf_renderer(cfg, ndc=True), o, d) == nerf_closed_form_flops(cfg, ndc=True)


@pytest.mark.parametrize("skip", [-1, 0, 2])  # -1: no skip; 2: the last layer reads it
def test_nerf_small_configs(skip):
    cfg = NeRFConfig(depth=4, width=16, skip=skip, pos_freqs=3, dir_freqs=2, head_width=8, n_coarse=8, n_fine=12)
    o, d = rays(4)
    assert flops_per_ray(nerf_renderer(cfg), o, d) == nerf_closed_form_flops(cfg)
    pts, dirs = torch.zeros(7, 3), torch.ones(7, 3)
    assert count_flops(NeRF(cfg), pts, dirs) == 2 * 7 * nerf_macs_per_sample(cfg)  # one network, 7 samples


# ----------------------------------------------------------------------------- grid teacher


def test_grid_teacher_counts_mlps_on_evaluated_samples_only():
    from r2l.models.teacher import Teacher, build_model, teacher_config_from_dict

    # GRID_8: 2 density and 3 appearance components, appearance features of 4, a colour MLP of width 8, 32 samples
    cfg = teacher_config_from_dict({"kind": "grid", "device": "cpu", "chunk": 64, "grid": GRID_8})
    info = {"name": "t", "near": 2.0, "far": 6.0, "ndc": False, "ndc_near": 1.0, "background": [1.0, 1.0, 1.0],
            "H": 8, "W": 8, "focal": 10.0}
    model = build_model(cfg, info).eval()
    teacher = Teacher(model, cfg, info, {"kind": "grid", "train_seconds": 0.0, "step": 0, "device": "cpu"},
                      torch.device("cpu"))
    field = model["field"]
    per_sample = 3 * 3 * 4 + (4 * 5 + 3 * 5) * 8 + 8 * 8 + 8 * 3  # basis + colour MLP, once per evaluated sample
    assert count_flops(field.color, torch.zeros(5, 3), torch.ones(5, 3)) == 2 * 5 * per_sample
    assert count_flops(field.density, torch.zeros(5, 3)) == 0  # grid interpolation only: not counted
    o, d = rays(6)
    o[0] = torch.tensor([3.0, 3.0, 4.0])  # this ray misses the box entirely
    t = torch.linspace(2.0, 6.0, 32)
    pts = (o[:, None] + t[None, :, None] * d[:, None]).reshape(-1, 3)
    inside = ((pts >= field.aabb[0]) & (pts <= field.aabb[1])).all(-1)
    assert flops_per_ray(teacher, o, d) == 2.0 * per_sample * int(inside.sum()) / 6  # all cells occupied
    assert flops_note(teacher) == GRID_NOTE
    field.occupancy[:, :, 2:] = False  # empty half the box: those samples are skipped and not counted
    evaluated = int(field.occupied(pts).sum())
    assert 0 < evaluated < int(inside.sum())
    assert flops_per_ray(teacher, o, d) == 2.0 * per_sample * evaluated / 6
