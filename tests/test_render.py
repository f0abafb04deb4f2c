"""Volume rendering (r2l.models.render) against hand-computed values and cross-checks."""

import math

import pytest
import torch

from r2l.core.runtime import chunked
from r2l.models.render import (
    composite,
    query_field,
    render_rays_grid,
    render_rays_nerf,
    sample_pdf,
    stratified_t,
)

LN2 = math.log(2.0)


def test_composite_two_samples_by_hand():
    # |rays_d| = 2, t = [2, 3]: delta_0 = 1 * 2 = 2, delta_1 = 1e10 * 2.
    t = torch.tensor([[2.0, 3.0]] * 3)
    rays_d = torch.tensor([[0.0, 0.0, -2.0]] * 3)
    sigma = torch.tensor([[LN2 / 2, 0.0], [LN2 / 2, 5.0], [-3.0, -1.0]])  # alpha_0 = 1 - exp(-ln 2) = 0.5
    red, green = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    rgb = torch.stack([red, green])[None].expand(3, 2, 3)
    bg = torch.tensor([0.2, 0.4, 0.6])
    out = composite(sigma, rgb, t, rays_d, bg)
    # ray 0: second sample empty -> weights [0.5, 0], half background
    # ray 1: second sample opaque (delta 2e10) -> weights [0.5, 0.5], no background
    # ray 2: negative raw density is clipped by the ReLU -> pure background
    expected_w = torch.tensor([[0.5, 0.0], [0.5, 0.5], [0.0, 0.0]])
    torch.testing.assert_close(out["weights"], expected_w, atol=1e-6, rtol=0)
    torch.testing.assert_close(out["acc"], torch.tensor([0.5, 1.0, 0.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(out["depth"], torch.tensor([1.0, 2.5, 0.0]), atol=1e-6, rtol=0)
    expected_rgb = torch.stack([0.5 * red + 0.5 * bg, 0.5 * red + 0.5 * green, bg])
    torch.testing.assert_close(out["rgb"], expected_rgb, atol=1e-6, rtol=0)


def test_composite_noise_is_seeded_and_off_by_default():
    sigma, rgb = torch.ones(4, 8), torch.rand(4, 8, 3)
    t, d = torch.linspace(2, 6, 8).expand(4, 8), torch.randn(4, 3)
    plain = composite(sigma, rgb, t, d, (1.0, 1.0, 1.0))
    a = composite(sigma, rgb, t, d, (1.0, 1.0, 1.0), 1.0, torch.Generator().manual_seed(3))
    b = composite(sigma, rgb, t, d, (1.0, 1.0, 1.0), 1.0, torch.Generator().manual_seed(3))
    torch.testing.assert_close(a["rgb"], b["rgb"], atol=0, rtol=0)
    assert not torch.allclose(a["weights"], plain["weights"])


def test_stratified_t_deterministic_and_jittered():
    t = stratified_t(2.0, 6.0, 3, 5, jitter=False)
    torch.testing.assert_close(t, torch.tensor([[2.0, 3.0, 4.0, 5.0, 6.0]] * 3))
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    j = stratified_t(2.0, 6.0, 100, 5, jitter=True, generator=g1)
    torch.testing.assert_close(j, stratified_t(2.0, 6.0, 100, 5, jitter=True, generator=g2), atol=0, rtol=0)
    lower = torch.tensor([2.0, 2.5, 3.5, 4.5, 5.5])
    upper = torch.tensor([2.5, 3.5, 4.5, 5.5, 6.0])
    assert bool(((j >= lower) & (j <= upper)).all())
    assert bool((j[:, 1:] >= j[:, :-1]).all())
    assert j.std(dim=0).min() > 0.1  # really jittered


def test_sample_pdf_all_weight_in_one_bin_by_hand():
    bins = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0]])
    weights = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    s = sample_pdf(bins, weights, 5, deterministic=True)
    # pdf (with +1e-5) = [e, e, 1 + e, e] / (1 + 4e); cdf = [0, a, 2a, 2a + b, 1]
    a, b = 1e-5 / (1 + 4e-5), (1 + 1e-5) / (1 + 4e-5)
    expected = [0.0] + [2.0 + (u - 2 * a) / b for u in (0.25, 0.5, 0.75)] + [4.0]
    torch.testing.assert_close(s, torch.tensor([expected]), atol=1e-5, rtol=0)
    r = sample_pdf(bins.expand(200, 5), weights.expand(200, 4), 16, False, torch.Generator().manual_seed(0))
    assert bool(((r >= 0) & (r <= 4)).all())
    assert ((r >= 2) & (r <= 3)).float().mean() > 0.99


def test_sample_pdf_uniform_weights_evenly_spaced():
    bins = torch.linspace(2.0, 6.0, 9).expand(2, 9)
    s = sample_pdf(bins, torch.ones(2, 8), 5, deterministic=True)
    torch.testing.assert_close(s, torch.tensor([[2.0, 3.0, 4.0, 5.0, 6.0]] * 2), atol=1e-5, rtol=0)
    zero = sample_pdf(bins, torch.zeros(2, 8), 5, deterministic=True)  # empty rays sample uniformly too
    torch.testing.assert_close(zero, s, atol=1e-5, rtol=0)


def slab_field(pts, dirs):
    """Opaque red half-space z < 0 (density 1e3), empty above; rgb independent of dirs."""
    sigma = torch.where(pts[:, 2] < 0, torch.full_like(pts[:, 0], 1e3), torch.zeros_like(pts[:, 0]))
    return sigma, torch.tensor([1.0, 0.0, 0.0]).expand(pts.shape[0], 3)


def test_render_rays_nerf_finds_a_surface():
    # Rays straight down from z = 4 hit the plane z = 0 at t = 4 (near 2, far 6).
    n = 6
    rays_o = torch.tensor([[0.1, -0.2, 4.0]]).expand(n, 3)
    rays_d = torch.tensor([[0.0, 0.0, -1.0]]).expand(n, 3)
    g = torch.Generator().manual_seed(0)
    for train in (False, True):
        out = render_rays_nerf(slab_field, slab_field, rays_o, rays_d, 2.0, 6.0, 9, 16, (1, 1, 1), train, 0.0, g)
        assert out["rgb"].shape == (n, 3) and out["rgb_coarse"].shape == (n, 3)
        torch.testing.assert_close(out["rgb_fine"], torch.tensor([[1.0, 0.0, 0.0]]).expand(n, 3), atol=1e-4, rtol=0)
        # coarse bins are 0.5 wide; the fine samples concentrate in the bin holding the surface
        assert bool((out["depth"] - 4.0).abs().max() < 0.5)
    det1 = render_rays_nerf(slab_field, slab_field, rays_o, rays_d, 2.0, 6.0, 9, 16, (1, 1, 1), False)
    det2 = render_rays_nerf(slab_field, slab_field, rays_o, rays_d, 2.0, 6.0, 9, 16, (1, 1, 1), False)
    torch.testing.assert_close(det1["rgb"], det2["rgb"], atol=0, rtol=0)


class BallField:
    """A ball of radius 0.5 (density 20, colour from position) with an exact occupancy test."""

    def __init__(self):
        self.aabb = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
        self.queried = 0
        self.shaded = 0

    def occupied(self, pts):
        return pts.norm(dim=-1) < 0.55

    def density(self, pts):
        self.queried += pts.shape[0]
        return 20.0 * (pts.norm(dim=-1) < 0.5).float()

    def color(self, pts, dirs):
        self.shaded += pts.shape[0]
        return torch.sigmoid(pts + dirs)

    def __call__(self, pts, dirs):
        return self.density(pts), self.color(pts, dirs)


def ball_rays():
    g = torch.Generator().manual_seed(1)
    rays_o = torch.randn(64, 3, generator=g) * 0.1 + torch.tensor([0.0, 0.0, 3.0])
    rays_d = torch.randn(64, 3, generator=g) * 0.1 + torch.tensor([0.0, 0.0, -1.0])
    return rays_o, rays_d


def test_render_rays_grid_skips_empty_space_without_changing_the_image():
    rays_o, rays_d = ball_rays()
    field = BallField()
    out = render_rays_grid(field, rays_o, rays_d, 1.0, 5.0, 64, (1.0, 1.0, 1.0), train=False)
    t = stratified_t(1.0, 5.0, 64, 64, jitter=False)
    dense = composite(*query_field(BallField(), rays_o, rays_d, t), t, rays_d, (1.0, 1.0, 1.0))
    torch.testing.assert_close(out["rgb"], dense["rgb"], atol=1e-6, rtol=0)
    torch.testing.assert_close(out["acc"], dense["acc"], atol=1e-6, rtol=0)
    pts = rays_o[:, None] + rays_d[:, None] * t[..., None]
    assert field.queried == int((pts.norm(dim=-1) < 0.55).sum())  # only occupied samples were evaluated
    assert 0 < field.queried < 64 * 64 // 2
    inside = pts.norm(dim=-1) < 0.5
    assert field.shaded == int(inside.sum())  # threshold 0: every sample with density (weight > 0) is shaded
    assert out["acc"].max() > 0.99


def test_render_rays_grid_shades_only_samples_that_are_seen():
    """With a weight threshold, samples hidden behind the ball's front get no colour; the image moves by less
    than the weight left out (colours are in [0, 1])."""
    rays_o, rays_d = ball_rays()
    exact, field = BallField(), BallField()
    ref = render_rays_grid(exact, rays_o, rays_d, 1.0, 5.0, 64, (1.0, 1.0, 1.0), train=False)
    out = render_rays_grid(field, rays_o, rays_d, 1.0, 5.0, 64, (1.0, 1.0, 1.0), False, None, 1e-4)
    assert field.queried == exact.queried  # density is still evaluated for every occupied sample
    t = stratified_t(1.0, 5.0, 64, 64, jitter=False)
    w = composite(*query_field(BallField(), rays_o, rays_d, t), t, rays_d, (1.0, 1.0, 1.0))["weights"]
    assert field.shaded == int((w > 1e-4).sum()) < 0.7 * exact.shaded  # alpha 0.72 a step: opaque after ~7
    left_out = (w * (w <= 1e-4)).sum(dim=-1)
    assert float(left_out.max()) < 1e-2
    assert bool(((out["rgb"] - ref["rgb"]).abs().amax(dim=-1) <= left_out + 1e-6).all())
    torch.testing.assert_close(out["acc"], ref["acc"], atol=0, rtol=0)


def test_chunked_matches_one_call():
    rays_o, rays_d = torch.randn(37, 3), torch.randn(37, 3)

    def fn(o, d):
        return {"a": o + d, "b": (o * d).sum(-1)}

    out = chunked(fn, rays_o, rays_d, 8)
    torch.testing.assert_close(out["a"], rays_o + rays_d)
    torch.testing.assert_close(out["b"], (rays_o * rays_d).sum(-1))
    torch.testing.assert_close(chunked(lambda o, d: o - d, rays_o, rays_d, 5), rays_o - rays_d)
    with pytest.raises(ValueError):
        chunked(fn, rays_o[:0], rays_d[:0], 8)
