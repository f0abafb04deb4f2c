"""The built-in analytic scenes: geometry, shading, the two render paths, the two layouts and the Blender/LLFF writers."""

import json
import math

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from helpers import BUILTIN_ANGLE, builtin_focal

from r2l.core.errors import R2LError
from r2l.core.imageio import to_uint8
from r2l.data.builtin import (
    AMBIENT,
    BOX,
    CELLS,
    CYLINDER,
    DIFFUSE,
    FF_CAMERA_Z,
    LLFF_FOCAL,
    PLANE,
    SPHERE,
    BuiltinScene,
    _cell_value,
    _hit_cylinder,
    _texture,
    blender_split_poses,
    llff_exposures,
    llff_poses,
    llff_to_opengl,
    look_at,
    opengl_to_llff,
    write_blender,
    write_llff,
)
from r2l.data.registry import load_scene
from r2l.geometry.rays import camera_dirs, get_rays, pixel_centres, rays_from_dirs

@pytest.fixture(scope="module")
def scene() -> BuiltinScene:
    return BuiltinScene(0)


@pytest.fixture(scope="module")
def blender_dir(tmp_path_factory):
    return write_blender(tmp_path_factory.mktemp("bl") / "scene", seed=3, resolution=24, n_train=4, n_val=2, n_test=3)


def _view(i: int = 0) -> np.ndarray:
    return blender_split_poses(0, 4, 0, 0)["train"][i]


def _pixel_rays(c2w, res):
    return get_rays(torch.as_tensor(c2w, dtype=torch.float32), res, res, builtin_focal(res))


def test_look_at_points_minus_z_at_target():
    eye, target = np.array([1.0, -2.0, 3.0]), np.array([0.2, 0.1, -0.3])
    c2w = look_at(eye, target, (0.0, 0.0, 1.0))
    R = c2w[:3, :3]
    np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-12)
    assert np.linalg.det(R) == pytest.approx(1.0)
    forward = (target - eye) / np.linalg.norm(target - eye)
    np.testing.assert_allclose(-R[:, 2], forward, atol=1e-12)
    assert R[2, 1] > 0 and abs(R[2, 0]) < 1e-12  # camera up leans to world +z, right is horizontal
    np.testing.assert_allclose(c2w[:3, 3], eye)


def test_blender_poses_on_upper_sphere_looking_at_origin():
    poses = blender_split_poses(5, 30, 5, 8)
    assert [len(poses[s]) for s in ("train", "val", "test")] == [30, 5, 8]
    for split_poses in poses.values():
        eyes = split_poses[:, :3, 3]
        np.testing.assert_allclose(np.linalg.norm(eyes, axis=1), 4.0)
        elevation = np.degrees(np.arcsin(eyes[:, 2] / 4.0))
        assert np.all((elevation >= 10.0 - 1e-9) & (elevation <= 80.0 + 1e-9))
        np.testing.assert_allclose(split_poses[:, :3, 2], eyes / 4.0, atol=1e-12)  # camera +z = away from origin
    np.testing.assert_allclose(np.degrees(np.arcsin(poses["test"][:, 2, 3] / 4.0)), 30.0)
    np.testing.assert_array_equal(blender_split_poses(5, 30, 5, 8)["train"], poses["train"])


def test_scene_is_deterministic_and_seeded(scene):
    res = 20
    a = scene.render(_view(), res, res, builtin_focal(res))
    np.testing.assert_array_equal(a, BuiltinScene(0).render(_view(), res, res, builtin_focal(res)))
    assert not np.array_equal(a, BuiltinScene(1).render(_view(), res, res, builtin_focal(res)))
    assert 3 <= scene.n_objects <= 5 and {SPHERE, BOX} <= {s.kind for s in scene.shapes}
    for s in BuiltinScene(7).shapes + scene.shapes:  # every object inside radius 1.3 of the origin
        bound = np.linalg.norm(s.size) if s.kind == BOX else s.size[0]
        assert np.linalg.norm(s.centre) + bound <= 1.3 + 1e-9


def test_ray_at_sphere_centre_hits_at_hand_computed_distance(scene):
    k = next(i for i, s in enumerate(scene.shapes) if s.kind == SPHERE)
    c, r = scene.shapes[k].centre, scene.shapes[k].size[0]
    u = np.array([0.48, -0.6, 0.64])  # unit
    rays_o = torch.tensor(np.array([c + 5.0 * u, c + (r + 0.05) * u]), dtype=torch.float32)
    rays_d = torch.tensor(np.array([-2.0 * u, -2.0 * u]), dtype=torch.float32)  # unnormalised: t counts half-units
    t_all, _ = scene._all_hits(rays_o, rays_d)
    assert t_all[0, k].item() == pytest.approx((5.0 - r) / 2.0, abs=1e-5)
    t, obj, normal = scene.intersect(rays_o[1:], rays_d[1:])  # 0.05 from the surface: nothing can be closer
    assert obj.item() == k and t.item() == pytest.approx(0.025, abs=1e-5)
    np.testing.assert_allclose(normal[0].numpy(), u, atol=1e-4)


def test_ray_along_box_axis_hits_its_face(scene):
    k = next(i for i, s in enumerate(scene.shapes) if s.kind == BOX)
    box = scene.shapes[k]
    normals = np.array([sign * box.rot[:, axis] for axis in range(3) for sign in (1.0, -1.0)])  # (6, 3)
    offsets = np.array([0.3 * box.size[(a + 1) % 3] * box.rot[:, (a + 1) % 3] for a in range(3) for _ in (0, 1)])
    faces = np.repeat(box.size, 2)[:, None]
    rays_o = torch.tensor(box.centre + (faces + 0.05) * normals + offsets, dtype=torch.float32)
    t, obj, normal = scene.intersect(rays_o, torch.tensor(-normals, dtype=torch.float32))  # one batch of 6
    assert obj.tolist() == [k] * 6
    np.testing.assert_allclose(t.numpy(), 0.05, atol=1e-5)
    np.testing.assert_allclose(normal.numpy(), normals, atol=1e-5)
    # per-shape hits, mixing rays from outside (3 units further out) with one from inside the box
    inside_o = torch.tensor(box.centre[None], dtype=torch.float32)
    rays_o = torch.cat([rays_o + 3 * torch.tensor(normals, dtype=torch.float32), inside_o])
    rays_d = torch.tensor(np.concatenate([-normals, normals[:1]]), dtype=torch.float32)
    t_all, shape_normals = scene._all_hits(rays_o, rays_d)
    np.testing.assert_allclose(t_all[:, k].numpy(), [3.05] * 6 + [box.size[0]], atol=1e-5)
    np.testing.assert_allclose(shape_normals[:, k].numpy(), np.concatenate([normals, normals[:1]]), atol=1e-5)


def test_objects_occlude_each_other(scene):
    counts = 0
    for i in range(4):
        rays_o, rays_d = _pixel_rays(_view(i), 32)
        hits = scene.hit_count(rays_o, rays_d)
        t, obj, _ = scene.intersect(rays_o, rays_d)
        counts += int((hits >= 2).sum())
        assert torch.equal(obj >= 0, hits >= 1)
        assert torch.isfinite(t[obj >= 0]).all() and torch.isinf(t[obj < 0]).all()
    assert counts > 20  # many pixels see one object in front of another


def test_specular_makes_colour_view_dependent(scene):
    k = next(i for i, s in enumerate(scene.shapes) if s.kind == SPHERE)
    shape = scene.shapes[k]
    light = scene.light.numpy().astype(np.float64)
    p = shape.centre + shape.size[0] * light  # the sphere point facing the light (n = l, so n.l = 1)
    tangent = np.cross(light, [0.0, 0.0, 1.0])
    tangent /= np.linalg.norm(tangent)
    seen = {}
    for angle in (0.0, 40.0, -40.0, 70.0):  # view directions around the normal
        a = math.radians(angle)
        v = math.cos(a) * light + math.sin(a) * tangent
        o, d = torch.tensor(p + 0.05 * v, dtype=torch.float32)[None], torch.tensor(-v, dtype=torch.float32)[None]
        t, obj, _ = scene.intersect(o, d)
        if obj.item() != k:  # another object in the way of this view
            continue
        hit = o + t[:, None] * d
        np.testing.assert_allclose(hit[0].numpy(), p, atol=1e-4)  # the same surface point
        q = (hit - torch.tensor(shape.centre, dtype=torch.float32)) @ torch.tensor(shape.rot, dtype=torch.float32)
        w = _texture(shape.texture, shape.freq, q).item()
        albedo = (1 - w) * shape.colors[0] + w * shape.colors[1]
        n_dot_h = math.cos(math.radians(angle) / 2)  # h bisects l (= n) and v
        expected = np.clip(albedo * (AMBIENT + DIFFUSE) + shape.ks * n_dot_h**shape.shininess, 0, 1)
        seen[angle] = scene.render_rays(o, d)[0][0].numpy()
        np.testing.assert_allclose(seen[angle], expected, atol=2e-4)
    assert 0.0 in seen and len(seen) >= 3, sorted(seen)
    assert max(np.abs(seen[0.0] - c).max() for c in seen.values()) > 0.1  # the highlight moves with the view


def test_texture_has_high_frequency_detail(scene):
    res = 64
    rays_o, rays_d = _pixel_rays(_view(1), res)
    rgb, _ = scene.render_rays(rays_o, rays_d)
    _, obj, _ = scene.intersect(rays_o, rays_d)
    rgb, obj = rgb.reshape(res, res, 3), obj.reshape(res, res)
    same = (obj[:, 1:] == obj[:, :-1]) & (obj[:, 1:] >= 0)
    diff = (rgb[:, 1:] - rgb[:, :-1]).abs().amax(-1)[same]
    assert same.sum() > 200
    assert (diff > 0.1).float().mean() > 0.1  # neighbours on one object often differ strongly


def _cell_by_hand(x: int, y: int, z: int) -> float:
    """_cell_value's hash in Python's unbounded integers (int64 never overflows for cells this small)."""
    h = (x * 73856093) ^ (y * 19349663) ^ (z * 83492791)
    h = (h ^ (h >> 13)) & 0xFFFFFF
    h = (h * 1274126177) & 0xFFFFFFFF
    return ((h ^ (h >> 16)) & 1023) / 1023.0


def test_random_cells_by_hand():
    """CELLS: 0.6 x the value of the cell pi / freq wide plus 0.4 x that of the finer cell (2.37x, shifted half a
    cell, offset 1000 in the hash); flat inside a cell, and no period: a row of 64 cells has many distinct values."""
    cells = torch.tensor([[0, 0, 0], [1, 2, 3], [-4, 7, -1], [40, -30, 12]])
    expected = [_cell_by_hand(*c) for c in cells.tolist()]
    np.testing.assert_allclose(_cell_value(cells).numpy(), expected, rtol=0, atol=1e-7)
    freq = math.pi / 0.5  # cells 0.5 wide
    q = torch.tensor([[0.1, 0.6, 1.3], [0.11, 0.61, 1.31]])  # coarse cell (0, 1, 2); fine cells (0, 3, 6), (1, 3, 6)
    by_hand = [0.6 * _cell_by_hand(0, 1, 2) + 0.4 * _cell_by_hand(1000, 1003, 1006),
               0.6 * _cell_by_hand(0, 1, 2) + 0.4 * _cell_by_hand(1001, 1003, 1006)]
    np.testing.assert_allclose(_texture(CELLS, freq, q).numpy(), by_hand, rtol=0, atol=1e-6)
    row = torch.stack([torch.arange(64.0) + 0.3, torch.full((64,), 0.3), torch.full((64,), 0.3)], -1)
    w = _texture(CELLS, math.pi, row)  # one coarse cell per point
    assert float(w.min()) >= 0.0 and float(w.max()) <= 1.0 and len(set(w.tolist())) > 50
    assert (w[1:] - w[:-1]).abs().gt(0.1).float().mean() > 0.5  # neighbouring cells mostly differ clearly


def test_render_spp1_matches_render_rays(scene):
    res = 24
    rgba = scene.render(_view(2), res, res, builtin_focal(res), spp=1)
    rgb, alpha = scene.render_rays(*_pixel_rays(_view(2), res))
    np.testing.assert_array_equal(rgba[..., 3].reshape(-1), alpha.numpy())
    composite = rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:])
    np.testing.assert_allclose(composite.reshape(-1, 3), rgb.numpy(), atol=1e-6)


def test_supersampled_alpha_is_straight_and_composites_to_mean(scene):
    res, c2w = 16, torch.as_tensor(_view(3), dtype=torch.float32)
    rgba = scene.render(_view(3), res, res, builtin_focal(res), spp=2)
    x, y = pixel_centres(res, res)
    subs = [scene.render_rays(*rays_from_dirs(c2w, camera_dirs(x + dx, y + dy, res, res, builtin_focal(res))))[0]
            for dy in (-0.25, 0.25) for dx in (-0.25, 0.25)]
    expected = torch.stack(subs).mean(0).reshape(res, res, 3).numpy()
    composite = rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:])
    np.testing.assert_allclose(composite, expected, atol=1e-5)
    a = rgba[..., 3]
    assert ((a > 0) & (a < 1)).any() and (a == 0).any() and (a == 1).any()
    assert np.all(rgba[a == 0][:, :3] == 0)  # transparent pixels store black


def test_as_teacher_renders_ground_truth(scene):
    teacher = scene.as_teacher()
    rays_o, rays_d = _pixel_rays(_view(0), 12)
    torch.testing.assert_close(teacher.render_rays(rays_o, rays_d), scene.render_rays(rays_o, rays_d)[0], atol=0, rtol=0)
    assert teacher.meta["kind"] == "analytic" and teacher.meta["step"] == 0
    assert {"train_seconds", "device"} <= set(teacher.meta) and sum(p.numel() for p in teacher.model.parameters()) == 0
    black = scene.as_teacher(background=(0.0, 0.0, 0.0)).render_rays(rays_o, rays_d)
    miss = scene.intersect(rays_o, rays_d)[1] < 0
    assert miss.any() and (black[miss] == 0).all() and (teacher.render_rays(rays_o, rays_d)[miss] == 1).all()


def test_write_blender_folder(blender_dir, tmp_path):
    counts = {"train": 4, "val": 2, "test": 3}
    alphas = []
    for split, n in counts.items():
        meta = json.loads((blender_dir / f"transforms_{split}.json").read_text())
        assert meta["camera_angle_x"] == BUILTIN_ANGLE and len(meta["frames"]) == n
        np.testing.assert_allclose(np.array([f["transform_matrix"] for f in meta["frames"]]),
                                   blender_split_poses(3, 4, 2, 3)[split])
        for i, frame in enumerate(meta["frames"]):
            assert frame["file_path"] == f"./{split}/r_{i}"
            img = iio.imread(blender_dir / f"{frame['file_path']}.png")
            assert img.shape == (24, 24, 4) and img.dtype == np.uint8
            alphas.append(img[..., 3])
    alphas = np.stack(alphas)
    assert (alphas == 0).any() and (alphas == 255).any() and ((alphas > 0) & (alphas < 255)).any()
    with pytest.raises(R2LError, match="already exists"):
        write_blender(blender_dir, seed=3, resolution=24, n_train=4, n_val=2, n_test=3)
    assert sorted(p.name for p in blender_dir.parent.iterdir()) == ["scene"]  # no temp folder left behind


def test_write_blender_deterministic_bytes(blender_dir, tmp_path):
    again = write_blender(tmp_path / "again", seed=3, resolution=24, n_train=4, n_val=2, n_test=3)
    other = write_blender(tmp_path / "other", seed=4, resolution=24, n_train=4, n_val=2, n_test=3)
    files = sorted(p.relative_to(blender_dir) for p in blender_dir.rglob("*") if p.is_file())
    assert len(files) == 3 + 9
    assert all((blender_dir / f).read_bytes() == (again / f).read_bytes() for f in files)
    assert not np.array_equal(iio.imread(blender_dir / "train/r_0.png"), iio.imread(other / "train/r_0.png"))


def test_load_scene_reads_builtin_folder(blender_dir):
    loaded = load_scene("builtin", blender_dir)
    assert loaded.images.shape == (9, 24, 24, 3) and loaded.focal == pytest.approx(builtin_focal(24))
    assert {k: len(v) for k, v in loaded.splits.items()} == {"train": 4, "val": 2, "test": 3}
    img = iio.imread(blender_dir / "val/r_1.png").astype(np.float32) / 255.0
    white = img[..., :3] * img[..., 3:] + (1.0 - img[..., 3:])
    np.testing.assert_allclose(loaded.images[loaded.splits["val"][1]], white, atol=1e-6)
    np.testing.assert_allclose(loaded.poses[loaded.splits["val"]], blender_split_poses(3, 4, 2, 3)["val"], atol=1e-6)


def test_opengl_llff_round_trip_hand_case():
    c2w = np.eye(4)[None].copy()
    c2w[0, :3, 3] = [1.0, 2.0, 3.0]
    row = opengl_to_llff(c2w, (40.0, 50.0, 60.0), np.array([[2.0, 7.0]]))
    expected = [[0, 1, 0, 1, 40], [-1, 0, 0, 2, 50], [0, 0, 1, 3, 60]]  # columns [-y, x, z, t, hwf]
    np.testing.assert_array_equal(row[0, :15].reshape(3, 5), expected)
    np.testing.assert_array_equal(row[0, 15:], [2.0, 7.0])
    back, hwf, bounds = llff_to_opengl(row)
    np.testing.assert_array_equal(back, c2w)


def test_write_llff_folder(tmp_path):
    n, width, height = 6, 20, 16
    out = write_llff(tmp_path / "ff", seed=2, width=width, height=height, n_views=n)
    pb = np.load(out / "poses_bounds.npy")
    assert pb.shape == (n, 17)
    mat = pb[:, :15].reshape(n, 3, 5)
    np.testing.assert_allclose(mat[:, :, 4], np.tile([8 * height, 8 * width, 8 * 1.1 * width], (n, 1)))
    near, far = pb[:, 15], pb[:, 16]
    assert np.all(near > 0) and np.all(far > 3 * near)
    c2w, _, _ = llff_to_opengl(pb)
    np.testing.assert_allclose(c2w, llff_poses(2, n), atol=1e-12)
    assert np.all(c2w[:, 2, 2] > 0.95)  # forward-facing: every camera looks down world -z
    files = sorted((out / "images_8").iterdir())
    assert [f.name for f in files] == [f"image{i:03d}.png" for i in range(n)]
    assert sorted(p.name for p in out.iterdir()) == ["exposure.json", "images_8", "poses_bounds.npy"]
    img = iio.imread(files[0])
    assert img.shape == (height, width, 3) and img.dtype == np.uint8
    scene = load_scene("llff", out, factor=8, llff_hold=3)
    assert scene.images.shape == (n, height, width, 3) and scene.ndc
    assert scene.focal == pytest.approx(1.1 * width)
    with pytest.raises(R2LError, match="already exists"):
        write_llff(out, seed=2, width=width, height=height, n_views=n)


# ---------------------------------------------------------------- the forward-facing layout

FF_W, FF_H, FF_VIEWS = 64, 48, 24  # the default forward-facing size (config: resolution 64, n_views 24)


@pytest.fixture(scope="module")
def ff_scene() -> BuiltinScene:
    return BuiltinScene(0, layout="forward_facing")


@pytest.fixture(scope="module")
def ff_views(ff_scene):
    """The 24 default views of seed 0 at 64x48: spp-2 rgba, subsample depths and pixel-centre hit objects."""
    views = []
    for c2w in llff_poses(0, FF_VIEWS):
        rgba, depth = ff_scene.render_with_depth(c2w, FF_H, FF_W, LLFF_FOCAL * FF_W, spp=2)
        _, obj, _ = ff_scene.intersect(*get_rays(torch.as_tensor(c2w, dtype=torch.float32), FF_H, FF_W, LLFF_FOCAL * FF_W))
        views.append((rgba, depth, obj.reshape(FF_H, FF_W).numpy()))
    return views


def test_ray_hits_capped_cylinder_at_hand_computed_points():
    size = torch.tensor([[0.5, 0.5, 2.0]])  # radius 0.5 around z, capped at z = -2 and 2
    cases = [  # origin, direction, expected t, expected normal
        ((3.0, 0.3, 1.0), (-2.0, 0.0, 0.0), 1.3, (0.8, 0.6, 0.0)),  # side: x = sqrt(0.25 - 0.09) = 0.4, t = 2.6 / 2
        ((0.1, -0.2, 5.0), (0.0, 0.0, -1.0), 3.0, (0.0, 0.0, 1.0)),  # along the axis onto the top cap
        ((0.0, 0.0, -3.0), (0.3, 0.0, 1.0), 1.0, (0.0, 0.0, -1.0)),  # slanted through the bottom cap at x = 0.3
        ((0.0, 0.0, 0.0), (0.0, 1.0, 0.0), 0.5, (0.0, 1.0, 0.0)),  # from inside: leaves through the side
        ((0.0, -3.0, 2.5), (0.0, 1.0, 0.0), math.inf, (0.0, 0.0, 0.0)),  # passes over the top cap
        ((0.6, 0.0, 5.0), (0.0, 0.0, -1.0), math.inf, (0.0, 0.0, 0.0)),  # parallel to the axis, outside the radius
    ]
    o = torch.tensor([c[0] for c in cases])
    d = torch.tensor([c[1] for c in cases])
    t, normal = _hit_cylinder(o, d, size)
    np.testing.assert_allclose(t.numpy()[:4], [c[2] for c in cases[:4]], atol=1e-6)
    np.testing.assert_allclose(normal.numpy()[:4], [c[3] for c in cases[:4]], atol=1e-6)
    assert torch.isinf(t[4:6]).all()


def test_ray_across_a_stem_hits_at_hand_computed_distance(ff_scene):
    stems = [i for i, s in enumerate(ff_scene.shapes) if s.kind == CYLINDER]
    assert len(stems) >= 5
    for k in stems:
        s = ff_scene.shapes[k]
        r, across = s.size[0], s.rot[:, 0]  # an object axis perpendicular to the stem's axis (rot[:, 2])
        p = s.centre + 0.3 * s.size[2] * s.rot[:, 2]  # on the axis, 0.3 h from the middle
        o = torch.tensor(p + (r + 0.01) * across, dtype=torch.float32)[None]
        t, obj, normal = ff_scene.intersect(o, torch.tensor(-across, dtype=torch.float32)[None])
        assert obj.item() == k and t.item() == pytest.approx(0.01, abs=1e-5)
        np.testing.assert_allclose(normal[0].numpy(), across, atol=1e-4)
        t_all, _ = ff_scene._all_hits(o + torch.tensor(2.0 * across, dtype=torch.float32), torch.tensor(-across, dtype=torch.float32)[None])
        assert t_all[0, k].item() == pytest.approx(2.01, abs=1e-5)


def test_culled_intersection_equals_exhaustive(scene, ff_scene):
    for sc, c2w, (H, W, f) in [(scene, _view(1), (32, 32, builtin_focal(32))),
                               (ff_scene, llff_poses(0, 4)[3], (24, 32, LLFF_FOCAL * 32))]:
        rays_o, rays_d = get_rays(torch.as_tensor(c2w, dtype=torch.float32), H, W, f)
        culled, n_culled = sc._hit_table(rays_o, rays_d, cull=True)
        full, n_full = sc._hit_table(rays_o, rays_d, cull=False)
        assert (torch.isfinite(full).sum(-1) >= 2).sum() > 20  # occlusion: many rays pass through several shapes
        torch.testing.assert_close(culled, full, atol=0, rtol=0)
        torch.testing.assert_close(n_culled[torch.isfinite(full)], n_full[torch.isfinite(full)], atol=0, rtol=0)


def test_layouts_are_seeded_and_checked(ff_scene):
    assert ff_scene.layout == "forward_facing" and BuiltinScene(0).layout == "orbit"
    again, other = BuiltinScene(0, layout="forward_facing"), BuiltinScene(1, layout="forward_facing")
    c2w = llff_poses(0, 2)[1]
    a = ff_scene.render(c2w, 12, 16, LLFF_FOCAL * 16)
    np.testing.assert_array_equal(a, again.render(c2w, 12, 16, LLFF_FOCAL * 16))
    assert not np.array_equal(a, other.render(c2w, 12, 16, LLFF_FOCAL * 16))
    kinds = [s.kind for s in ff_scene.shapes]
    assert kinds.count(PLANE) == 1 and kinds.count(CYLINDER) >= 5 and len(kinds) >= 30
    with pytest.raises(R2LError, match="layout"):
        BuiltinScene(0, layout="spiral")


def test_forward_facing_views_are_full_and_deep(ff_views, ff_scene):
    ground = next(i for i, s in enumerate(ff_scene.shapes) if s.kind == PLANE)
    for rgba, depth, obj in ff_views:
        assert np.all(rgba[..., 3] == 1.0) and np.all(np.isfinite(depth))  # every subsample ray hits something
        assert depth.max() / depth.min() > 3.0  # like a real capture: far content > 3x as deep as near content
        for lo, hi in ((0.0, 2.0), (2.0, 3.5), (3.5, 5.0), (5.0, np.inf)):  # content at every depth
            assert ((depth >= lo) & (depth < hi)).mean() > 0.03, (lo, hi)
        share = np.bincount(obj.reshape(-1), minlength=len(ff_scene.shapes)) / obj.size
        assert share.max() < 0.4 and share[ground] < 0.3  # no shape (the ground included) dominates
        assert (share > 0).sum() >= 20  # many distinct shapes in every view


def test_forward_facing_views_have_thin_stems(ff_views, ff_scene):
    stem = np.array([s.kind == CYLINDER for s in ff_scene.shapes])
    for rgba, _, obj in ff_views:
        m = stem[obj]  # pixel centres on a stem
        assert 0.005 < m.mean() < 0.1  # visible, yet a small part of the frame
        inner = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
        assert inner.sum() <= 0.15 * m.sum()  # 1-2 pixels wide: hardly any stem pixel has stem on all 4 sides
    widths = [s.size[0] * 2 / ((FF_CAMERA_Z - s.centre[2]) / (LLFF_FOCAL * FF_W)) for s in ff_scene.shapes if s.kind == CYLINDER]
    assert 0.9 < min(widths) and max(widths) < 2.0  # diameters in pixels at 64x48 (depth of the stem's centre)


def test_forward_facing_views_are_dark_and_saturated(ff_views):
    for rgba, _, _ in ff_views:
        rgb = rgba[..., :3]
        assert (rgb.max(-1) < 0.1).mean() > 0.05  # near-black pixels
        assert (rgb.max(-1) - rgb.min(-1) > 0.6).mean() > 0.05  # strongly saturated pixels


@pytest.fixture(scope="module")
def ff_dir(tmp_path_factory):
    return write_llff(tmp_path_factory.mktemp("ff") / "scene", seed=0, width=FF_W, height=FF_H, n_views=10)


def test_write_llff_exposure_gains(ff_dir, ff_scene):
    gains = llff_exposures(0, 10)
    meta = json.loads((ff_dir / "exposure.json").read_text())
    assert meta["gains"] == gains.tolist() and meta["hold"] == 8
    assert gains[0] == gains[8] == 1.0  # the test views (llff_hold 8) are at exposure 1
    train = np.delete(gains, [0, 8])
    assert np.all((train >= 0.85) & (train <= 1.15)) and train.max() - train.min() > 0.1
    assert not np.array_equal(gains, llff_exposures(1, 10))  # drawn from the seed
    poses, measured = llff_poses(0, 10), {}
    for i in range(10):
        rgb = ff_scene.render(poses[i], FF_H, FF_W, LLFF_FOCAL * FF_W)[..., :3]  # the exposure-1 ground truth
        img = iio.imread(ff_dir / "images_8" / f"image{i:03d}.png")
        np.testing.assert_array_equal(img, to_uint8(gains[i] * rgb))
        ok = gains[i] * rgb.max(-1) < 0.98  # not clipped
        x, y = rgb[ok].reshape(-1), img[ok].reshape(-1) / 255.0
        measured[i] = float((x * y).sum() / (x * x).sum())  # least-squares gain of the written image
        assert measured[i] == pytest.approx(gains[i], abs=0.005)
    i, j = int(np.argmax(gains)), int(np.argmin(gains))
    assert measured[i] / measured[j] == pytest.approx(gains[i] / gains[j], abs=0.01) and gains[i] / gains[j] > 1.1


def test_write_llff_bounds_hold_every_hit(ff_dir, ff_scene):
    pb = np.load(ff_dir / "poses_bounds.npy")
    near, far = pb[:, 15], pb[:, 16]
    for i, c2w in enumerate(llff_poses(0, 10)):
        _, sub = ff_scene.render_with_depth(c2w, FF_H, FF_W, LLFF_FOCAL * FF_W, spp=2)  # the rays of the images
        t, _, _ = ff_scene.intersect(*get_rays(torch.as_tensor(c2w, dtype=torch.float32), FF_H, FF_W, LLFF_FOCAL * FF_W))
        for depth in (sub.reshape(-1), t.numpy()):
            assert np.all(np.isfinite(depth)) and near[i] <= depth.min() and depth.max() <= far[i]
        assert near[i] >= 0.85 * sub.min() and far[i] <= 1.15 * sub.max()  # honest: nearest and farthest hit
        assert far[i] / near[i] > 3.0 * 1.1 / 0.9


def test_writers_reject_bad_sizes(tmp_path):
    with pytest.raises(R2LError, match="resolution"):
        write_blender(tmp_path / "a", resolution=0)
    with pytest.raises(R2LError, match="spp"):
        write_llff(tmp_path / "b", spp=1.5)
    with pytest.raises(R2LError, match="hold"):
        write_llff(tmp_path / "c", hold=1)
    with pytest.raises(R2LError, match="exposure"):
        write_llff(tmp_path / "d", exposure=1.5)
    assert not any(tmp_path.iterdir())
