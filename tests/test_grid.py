"""Tests of the TensoRF-VM grid field (r2l/models/grid.py): outputs, occupancy, resampling, checkpoints, fitting."""

from __future__ import annotations

import io
import math

import pytest
import torch
import torch.nn.functional as F

from r2l.core.errors import R2LError
from r2l.models.grid import GridConfig, GridField, scene_aabb, upsample_schedule


def small_cfg(**changes) -> GridConfig:
    """A tiny configuration (fast on CPU)."""
    base = dict(
        resolution=24, resolution_init=16, upsample_steps=[], density_components=4, app_components=8,
        app_dim=12, mlp_width=32, occupancy_resolution=16, occupancy_samples=4, occupancy_every=4,
        occupancy_warmup=4, n_samples=64,
    )
    base.update(changes)
    return GridConfig(**base).resolved(ndc=False)


def make_field(seed: int = 0, **changes) -> GridField:
    torch.manual_seed(seed)
    cfg = small_cfg(**changes)
    return GridField(cfg, scene_aabb(cfg, ndc=False))


def set_cube_density(field: GridField, half: float, height: float = 30.0) -> None:
    """Density ``raw = height * P(x, y) * L(z)`` with P, L indicators of ``|coord| <= half`` on the nodes.

    Every other channel of every plane/line is zero, so away from the cube (beyond one node spacing)
    ``sigma = density_scale * softplus(density_shift)``.
    """
    R = field.resolution
    nodes = torch.linspace(-1.5, 1.5, R)
    ind = (nodes.abs() <= half + 1e-6).float()
    with torch.no_grad():
        field.density_planes.zero_()
        field.density_lines.zero_()
        field.density_planes[0, 0] = height * ind[:, None] * ind[None, :]
        field.density_lines[0, 0, :, 0] = ind


def test_forward_shapes_ranges_and_direction_normalisation():
    field = make_field()
    pts = torch.rand(500, 3) * 4.0 - 2.0  # some outside the box
    dirs = torch.randn(500, 3)
    sigma, rgb = field(pts, dirs)
    assert sigma.shape == (500,) and rgb.shape == (500, 3)
    assert bool(torch.isfinite(sigma).all()) and bool((sigma >= 0).all())
    assert bool((rgb >= 0).all()) and bool((rgb <= 1).all())
    sigma2, rgb2 = field(pts, 7.5 * dirs)  # unnormalised directions give the same answer
    torch.testing.assert_close(sigma2, sigma)
    torch.testing.assert_close(rgb2, rgb)
    torch.testing.assert_close(field.color(pts, dirs), rgb)
    torch.testing.assert_close(field.density(pts), sigma)


def test_empty_input_and_ndc_box():
    field = make_field()
    sigma, rgb = field(torch.zeros(0, 3), torch.zeros(0, 3))
    assert sigma.shape == (0,) and rgb.shape == (0, 3) and field.occupied(torch.zeros(0, 3)).shape == (0,)
    box = scene_aabb(small_cfg(aabb_scale=2.0), ndc=True)
    assert box.tolist() == [[-2.0, -2.0, -1.0], [2.0, 2.0, 1.0]]


def test_bad_settings_raise_r2l_error():
    with pytest.raises(R2LError, match="occupancy_threshold"):
        GridField(small_cfg(occupancy_threshold=1.5), scene_aabb(small_cfg(), ndc=False))
    with pytest.raises(R2LError, match="resolution"):
        GridField(small_cfg(resolution_init=1), scene_aabb(small_cfg(), ndc=False))
    with pytest.raises(R2LError, match="aabb"):
        GridField(small_cfg(), torch.tensor([[0.0, 0.0, 0.0], [1.0, -1.0, 1.0]]))


def test_density_formula_by_hand():
    """Constant planes a and lines b: raw = 3 * C * a * b inside the grid box, 0 a node spacing outside."""
    field = make_field(density_components=2)
    with torch.no_grad():
        field.density_planes.fill_(0.5)
        field.density_lines.fill_(2.0)
    raw = 3 * 2 * 0.5 * 2.0
    expect = 25.0 * math.log1p(math.exp(raw - 10.0))
    sigma = field.density(torch.tensor([[0.3, -0.7, 1.1], [1.5, 1.5, 1.5], [2.0, 0.0, 0.0]]))
    torch.testing.assert_close(sigma[:2], torch.full((2,), expect))
    torch.testing.assert_close(sigma[2], torch.tensor(25.0 * math.log1p(math.exp(-10.0))))


def test_occupied_is_false_outside_the_box():
    field = make_field()
    inside = torch.tensor([[0.0, 0.0, 0.0], [1.5, 1.5, 1.5], [-1.5, 0.2, -1.49]])
    outside = torch.tensor([[1.51, 0.0, 0.0], [0.0, -1.6, 0.0], [0.0, 0.0, 9.0], [float("nan"), 0.0, 0.0]])
    assert field.occupied(inside).tolist() == [True, True, True]  # all cells start occupied
    assert field.occupied(outside).tolist() == [False] * 4
    with torch.no_grad():
        field.occupancy.zero_()
    assert not bool(field.occupied(inside).any())


def test_occupancy_marks_the_dense_cube():
    """Density only in |x|,|y|,|z| <= 0.375 (cells 6..9 of 16); one-cell blur + one-cell dilation allowed."""
    field = make_field(resolution_init=33)  # node spacing 3/32: the cube faces lie on nodes
    set_cube_density(field, half=0.375)
    for step in range(4):
        assert field.update_occupancy(step) is False
        assert bool(field.occupancy.all())  # warm-up: everything occupied
    field.update_occupancy(4)
    occ = field.occupancy
    assert bool(occ[5:11, 5:11, 5:11].all())  # the cube's cells and their dilation
    outer = torch.ones_like(occ)
    outer[4:12, 4:12, 4:12] = False
    assert not bool(occ[outer].any())  # nothing beyond blur + dilation
    assert 6**3 <= int(occ.sum()) <= 8**3
    pts = torch.tensor([[0.0, 0.0, 0.0], [0.3, -0.3, 0.3], [1.2, 1.2, 1.2], [-1.0, 0.0, 0.0]])
    assert field.occupied(pts).tolist() == [True, True, False, False]
    assert field.update_occupancy(5) is False and torch.equal(field.occupancy, occ)  # not due: unchanged


def test_occupancy_keeps_cells_of_a_field_without_density_yet():
    """The mean-density cap keeps a fresh (near-empty) field from losing every cell."""
    field = make_field()
    field.refresh_occupancy(seed=0)
    assert field.occupied_fraction() > 0.5


def test_upsample_and_shrink_follow_the_schedule():
    field = make_field(resolution_init=33, resolution=48, upsample_steps=[2, 6])
    assert upsample_schedule(field.cfg) == {2: 40, 6: 48}
    set_cube_density(field, half=0.375)
    probe = torch.tensor([[0.0, 0.0, 0.0], [0.2, -0.1, 0.25], [1.3, 1.3, 1.3]])
    with torch.no_grad():
        before = field.density(probe)
    changed = [step for step in range(8) if field.update_occupancy(step)]
    assert changed == [2, 6]
    assert field.resolution == 48
    assert tuple(field.density_planes.shape) == (3, 4, 48, 48) and tuple(field.app_lines.shape) == (3, 8, 48, 1)
    # step 2 is before the warm-up: the box stays; step 6 shrinks it to the occupied cells (at most
    # cells 4..11, see test_occupancy_marks_the_dense_cube) grown by one cell of 3/16
    box = field.grid_aabb
    assert bool((box[0] >= -0.9375 - 1e-5).all()) and bool((box[1] <= 0.9375 + 1e-5).all())
    assert bool((box[0] <= -0.375).all()) and bool((box[1] >= 0.375).all())
    with torch.no_grad():
        after = field.density(probe)
    torch.testing.assert_close(after[:2], before[:2], rtol=1e-4, atol=0)  # deep inside the cube: unchanged
    assert float(after[2]) < 0.01  # far outside: still empty


def test_optimiser_must_be_rebuilt_after_resampling():
    field = make_field(upsample_steps=[1])
    pts, dirs = torch.rand(64, 3) * 2 - 1, torch.randn(64, 3)
    opt = torch.optim.Adam(field.param_groups(1.0))
    loss = sum(o.sum() for o in field(pts, dirs))
    loss.backward()
    opt.step()
    assert field.update_occupancy(1) is True  # `loss` (an old graph) is still alive here
    opt.zero_grad()
    loss = sum(o.sum() for o in field(pts, dirs)) + field.regularizer()
    loss.backward()
    with pytest.raises(RuntimeError):
        opt.step()  # a stale optimiser fails loudly
    opt = torch.optim.Adam(field.param_groups(1.0))
    loss = sum(o.sum() for o in field(pts, dirs))
    loss.backward()
    opt.step()
    assert field.density_planes.grad.shape == field.density_planes.shape


def test_state_dict_round_trip_after_upsampling():
    field = make_field(resolution_init=33, resolution=40, upsample_steps=[6])
    set_cube_density(field, half=0.375)
    for step in range(8):
        field.update_occupancy(step)
    buf = io.BytesIO()
    torch.save(field.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    torch.manual_seed(123)
    loaded = GridField(field.cfg, scene_aabb(field.cfg, ndc=False))
    loaded.load_state_dict(state)
    assert loaded.resolution == 40
    torch.testing.assert_close(loaded.grid_aabb, field.grid_aabb, rtol=0, atol=0)
    assert torch.equal(loaded.occupancy, field.occupancy)
    pts, dirs = torch.rand(300, 3) * 3 - 1.5, torch.randn(300, 3)
    for a, b in zip(loaded(pts, dirs), field(pts, dirs)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert torch.equal(loaded.occupied(pts), field.occupied(pts))


def test_param_groups_cover_every_parameter_once():
    field = make_field()
    groups = field.param_groups(0.5)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in field.parameters()}
    assert [g["lr"] for g in groups] == [0.5 * field.cfg.lr_grid, 0.5 * field.cfg.lr_mlp]
    grid_ids = {id(p) for p in groups[0]["params"]}
    assert grid_ids == {id(field.density_planes), id(field.density_lines), id(field.app_planes), id(field.app_lines)}


def test_regularizer_by_hand():
    field = make_field(l1_weight=0.5, tv_weight=0.0)
    with torch.no_grad():
        field.density_planes.fill_(-2.0)
        field.density_lines.fill_(3.0)
    torch.testing.assert_close(field.regularizer(), torch.tensor(0.5 * (3 * 2.0 + 3 * 3.0)))
    field = make_field(l1_weight=0.0, tv_weight=2.0)
    R = field.resolution
    with torch.no_grad():  # a ramp of slope 1 per node along W in every density and appearance plane
        field.density_planes.copy_(torch.arange(R).float().expand_as(field.density_planes))
        field.app_planes.copy_(torch.arange(R).float().expand_as(field.app_planes))
    torch.testing.assert_close(field.regularizer(), torch.tensor(2.0 * (3 * 1.0 + 3 * 1.0)))
    assert make_field(l1_weight=0.0, tv_weight=0.0).regularizer().item() == 0.0


def test_format_dependent_settings_resolve_as_tensorf():
    """Unset (None) settings take TensoRF's Blender values, or its LLFF values for NDC scenes; set ones stay."""
    blender, llff = GridConfig().resolved(ndc=False), GridConfig().resolved(ndc=True)
    assert (blender.density_activation, blender.l1_weight, blender.tv_weight) == ("softplus", 8e-5, 0.0)
    assert (llff.density_activation, llff.l1_weight, llff.tv_weight) == ("relu", 0.0, 0.02)
    assert (blender.feature_freqs, blender.view_freqs, llff.feature_freqs, llff.view_freqs) == (2, 2, 0, 0)
    mine = GridConfig(density_activation="softplus", tv_weight=0.5).resolved(ndc=True)
    assert (mine.density_activation, mine.l1_weight, mine.tv_weight) == ("softplus", 0.0, 0.5)
    with pytest.raises(R2LError, match="unresolved"):
        GridField(GridConfig(), scene_aabb(GridConfig(), ndc=True))
    with pytest.raises(R2LError, match="density_activation"):
        make_field(density_activation="tanh")


def test_relu_density_by_hand():
    """relu: sigma = density_scale * max(raw, 0), no shift."""
    field = make_field(density_components=2, density_activation="relu")
    pts = torch.tensor([[0.3, -0.7, 1.1]])
    with torch.no_grad():
        field.density_planes.fill_(0.5)
        field.density_lines.fill_(2.0)
    torch.testing.assert_close(field.density(pts), torch.tensor([25.0 * 3 * 2 * 0.5 * 2.0]))
    with torch.no_grad():
        field.density_lines.fill_(-2.0)
    assert field.density(pts).item() == 0.0


def test_occupancy_never_prunes_below_the_floor(caplog, monkeypatch):
    """When the test would keep fewer than the floor, the densest cells are kept (then dilated), with a warning."""
    field = make_field(occupancy_floor=0.0025)  # G = 16: 4096 cells, floor ceil(10.24) = 11
    G = field.occupancy.shape[0]
    dens = torch.arange(G**3, dtype=torch.float32) * 1e-9  # a tiny ramp ...
    dens[100] = 1e3  # ... and one dense cell: the mean cap lets only that one through
    monkeypatch.setattr(field, "cell_max_density", lambda seed: dens.reshape(G, G, G))
    with caplog.at_level("WARNING", logger="r2l"):
        field.refresh_occupancy(seed=0)
    assert "would keep 1 of 4096 cells" in caplog.text and "keeping the 11 densest" in caplog.text
    kept = torch.zeros(G**3)
    kept[[100, *range(G**3 - 10, G**3)]] = 1.0
    expect = torch.nn.functional.max_pool3d(kept.reshape(1, 1, G, G, G), 3, 1, 1)[0, 0] > 0
    assert torch.equal(field.occupancy, expect)
    caplog.clear()
    dens[:] = 1.0  # uniform density: every cell passes the mean cap, no warning
    field.refresh_occupancy(seed=0)
    assert bool(field.occupancy.all()) and "keeping" not in caplog.text


def test_linear_layers_are_nn_linear():
    """FLOPs are counted by hooks on nn.Linear: basis + MLP are the only dense layers."""
    field = make_field()
    linears = [m for m in field.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 4
    macs = sum(m.weight.numel() for m in linears)
    cfg = field.cfg
    n_in = cfg.app_dim * (1 + 2 * cfg.feature_freqs) + 3 * (1 + 2 * cfg.view_freqs)
    w = cfg.mlp_width
    assert macs == 3 * cfg.app_components * cfg.app_dim + n_in * w + w * w + w * 3


def test_regression_fit_to_an_analytic_field():
    """Optimise density and colour directly towards a smooth analytic target: the loss drops > 100x."""
    torch.manual_seed(0)
    field = make_field(resolution_init=32, density_components=8, app_components=12)
    opt = torch.optim.Adam(field.param_groups(1.0), betas=(0.9, 0.99))
    gen = torch.Generator().manual_seed(1)

    def target(p: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sigma = 40.0 * torch.exp(-(p.square().sum(-1)) / 0.3)
        rgb = 0.5 + 0.3 * torch.sin(2.0 * p) * torch.cos(p.roll(1, dims=-1)) + 0.1 * F.normalize(d, dim=-1)
        return sigma, rgb

    def loss_at(p, d):
        sigma, rgb = field(p, d)
        ts, tr = target(p, d)
        return F.mse_loss(torch.log1p(sigma), torch.log1p(ts)) + F.mse_loss(rgb, tr)

    losses = []
    for _ in range(300):
        p = torch.rand(2048, 3, generator=gen) * 3 - 1.5
        d = torch.randn(2048, 3, generator=gen)
        loss = loss_at(p, d)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():
        p = torch.rand(4096, 3, generator=gen) * 3 - 1.5
        final = loss_at(p, torch.randn(4096, 3, generator=gen)).item()
    print(f"regression fit: loss {losses[0]:.4f} -> {final:.5f}")
    assert final < losses[0] / 100, (losses[0], final)


def test_end_to_end_fit_through_the_renderer():
    """A tiny analytic scene (r2l.data.builtin) fitted through r2l.models.render.render_rays_grid."""
    render = pytest.importorskip("r2l.models.render")
    builtin = pytest.importorskip("r2l.data.builtin")
    from r2l.geometry.rays import get_rays

    torch.manual_seed(0)
    scene = builtin.BuiltinScene(seed=0)
    poses = builtin.sphere_poses(torch.linspace(-180, 150, 12).numpy(), torch.full((12,), 35.0).numpy())
    H = W = 20
    focal = 1.2 * W
    rays = [get_rays(torch.tensor(c, dtype=torch.float32), H, W, focal) for c in poses]
    rays_o, rays_d = torch.cat([r[0] for r in rays]), torch.cat([r[1] for r in rays])
    target = scene.render_rays(rays_o, rays_d)[0]
    field = make_field(resolution_init=32, density_components=6, app_components=12, occupancy_warmup=40,
                       occupancy_every=20, n_samples=48)
    opt = torch.optim.Adam(field.param_groups(1.0), betas=(0.9, 0.99))
    gen = torch.Generator().manual_seed(0)

    def psnr() -> float:
        with torch.no_grad():
            out = render.render_rays_grid(field, rays_o, rays_d, 2.0, 6.0, 48, (1.0, 1.0, 1.0), False)["rgb"]
        return -10 * math.log10(F.mse_loss(out, target).item())

    start = psnr()
    for step in range(1, 301):
        idx = torch.randint(0, rays_o.shape[0], (256,), generator=gen)
        out = render.render_rays_grid(field, rays_o[idx], rays_d[idx], 2.0, 6.0, 48, (1.0, 1.0, 1.0), True, gen)
        loss = F.mse_loss(out["rgb"], target[idx]) + field.regularizer()
        opt.zero_grad()
        loss.backward()
        opt.step()
        field.update_occupancy(step)
    end = psnr()
    print(f"end-to-end fit: PSNR {start:.2f} -> {end:.2f} dB, occupied {field.occupied_fraction():.3f}")
    assert end > start + 10.0 and end > 23.0, (start, end)
    assert field.occupied_fraction() < 0.5  # empty space was found
