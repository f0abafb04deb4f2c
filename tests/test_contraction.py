"""The scene contraction of unbounded scenes and its sample spacing, against hand-computed values."""

import math

import pytest
import torch

from r2l.geometry.contraction import (
    contract,
    contracted_distances,
    contracted_points,
    spacing,
    spacing_inverse,
    uncontract,
)
from r2l.models.contracted import contracted_t


def test_contract_by_hand():
    x = torch.tensor([[0.0, 0.0, 0.0], [0.3, -0.4, 0.0], [0.0, 1.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, -4.0],
                      [3.0, 4.0, 0.0], [1e8, 0.0, 0.0]])
    want = torch.tensor([[0.0, 0.0, 0.0], [0.3, -0.4, 0.0], [0.0, 1.0, 0.0], [1.5, 0.0, 0.0], [0.0, 0.0, -1.75],
                         [0.6 * 1.8, 0.8 * 1.8, 0.0], [2.0, 0.0, 0.0]])  # |(3, 4, 0)| = 5: 2 - 1/5 = 1.8
    torch.testing.assert_close(contract(x), want)
    assert contract(torch.zeros(0, 3)).shape == (0, 3)
    assert contract(torch.ones(2, 5, 3)).shape == (2, 5, 3)


def test_contract_round_trips_and_is_smooth_at_the_unit_sphere():
    gen = torch.Generator().manual_seed(0)
    scale = torch.logspace(-2, 3, 1000, dtype=torch.float64)[:, None]
    x = torch.randn(1000, 3, generator=gen, dtype=torch.float64) * scale
    y = contract(x)
    assert float(torch.linalg.norm(y, dim=-1).max()) < 2.0
    torch.testing.assert_close(uncontract(y), x, rtol=1e-9, atol=1e-12)
    # the radial profile r -> 2 - 1/r has value 1 and slope 1 at r = 1, as the identity inside
    r = torch.tensor([1.0 + 1e-6], dtype=torch.float64, requires_grad=True)
    (out,) = contract(torch.stack([r, torch.zeros_like(r), torch.zeros_like(r)], -1))[..., 0]
    (slope,) = torch.autograd.grad(out, r)
    assert float(out.detach()) == pytest.approx(1.0 + 1e-6) and float(slope) == pytest.approx(1.0, abs=1e-5)
    # finite gradients everywhere, also at the origin
    z = torch.zeros(1, 3, requires_grad=True)
    contract(z).sum().backward()
    assert torch.isfinite(z.grad).all()


def test_spacing_is_linear_then_uniform_in_disparity():
    t = torch.tensor([0.5, 2.0, 4.0, 8.0, 1e9], dtype=torch.float64)
    torch.testing.assert_close(spacing(t, 2.0), torch.tensor([0.5, 2.0, 3.0, 3.5, 4.0], dtype=torch.float64))
    torch.testing.assert_close(spacing_inverse(spacing(t[:4], 2.0), 2.0), t[:4])
    # beyond the split, equal steps in spacing are equal steps in disparity 1/t
    s = torch.linspace(2.0, 3.8, 10, dtype=torch.float64)
    disparity = 1.0 / spacing_inverse(s, 2.0)
    torch.testing.assert_close(disparity[1:] - disparity[:-1], torch.full((9,), -0.05, dtype=torch.float64))


def test_contracted_t_by_hand():
    # near 0.5, far 8, split 2: spacing 0.5 .. 3.5, 4 samples at 0.5, 1.5, 2.5, 3.5 -> depths 0.5, 1.5, 8/3, 8
    t = contracted_t(0.5, 8.0, 2.0, 3, 4, jitter=False)
    torch.testing.assert_close(t, torch.tensor([[0.5, 1.5, 8.0 / 3.0, 8.0]]).expand(3, 4))
    gen = torch.Generator().manual_seed(0)
    j = contracted_t(0.5, 1000.0, 2.0, 200, 16, jitter=True, generator=gen)
    assert j.shape == (200, 16) and bool((j[:, 1:] >= j[:, :-1]).all())
    assert float(j.min()) >= 0.5 and float(j.max()) <= 1000.0
    # each jittered sample lies between the midpoints (in spacing) of its deterministic neighbours
    s, s0 = spacing(j, 2.0), spacing(contracted_t(0.5, 1000.0, 2.0, 1, 16, jitter=False), 2.0)[0]
    mids = 0.5 * (s0[1:] + s0[:-1])
    assert bool((s[:, 1:] >= mids - 1e-5).all()) and bool((s[:, :-1] <= mids + 1e-5).all())


def test_contracted_points_and_distances_by_hand():
    rays_o = torch.tensor([[0.0, 0.0, 0.0]])
    rays_d = torch.tensor([[1.0, 0.0, 0.0]])
    t = torch.tensor([[0.5, 1.0, 2.0, 4.0]])
    pts = contracted_points(rays_o, rays_d, t)
    torch.testing.assert_close(pts[0, :, 0], torch.tensor([0.5, 1.0, 1.5, 1.75]))
    torch.testing.assert_close(contracted_distances(pts), torch.tensor([[0.0, 0.5, 1.0, 1.25]]))
    # a chord: from (0, 1, 0) straight to (2, 1, 0) ends at (2, 1, 0)(2 - 1/sqrt 5)/sqrt 5
    pts = contracted_points(torch.tensor([[0.0, 1.0, 0.0]]), rays_d, torch.tensor([[0.0, 2.0]]))
    r = math.sqrt(5.0)
    end = torch.tensor([2.0, 1.0, 0.0]) * (2.0 - 1.0 / r) / r
    torch.testing.assert_close(contracted_distances(pts)[0, 1], torch.linalg.norm(end - torch.tensor([0.0, 1.0, 0.0])))
