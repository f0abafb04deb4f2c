"""View store and pseudo-data generation (r2l.stages.pseudo_data): round trips, resumability, corruption, size."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from r2l.core.errors import DataError, R2LError
from r2l.data.scene import Scene
from r2l.data.views import META_NAME, PART_NAME, ViewStore, read_shard, shard_name, write_shard
from r2l.geometry.poses import look_at, sample_blender_poses
from r2l.geometry.rays import get_rays, ndc_rays
from r2l.stages.pseudo_data import (
    convert_real_data,
    gather_pseudo_data,
    generate_pseudo_data,
    part_shards,
    plan_pseudo_views,
)

H, W = 6, 10  # not square, so any H/W swap shows


def _colour(rays_o: torch.Tensor, rays_d: torch.Tensor) -> torch.Tensor:
    """Deterministic fake colours (n, 3) from rays (n, 3): direction-dependent, some out of [0, 1]."""
    d = torch.nn.functional.normalize(rays_d, dim=-1)
    return 0.6 * d + 0.5 + 0.05 * torch.sin(3.0 * rays_o)


class FakeTeacher:
    """A ray renderer that counts its work and can fail after ``fail_after`` calls (a killed run)."""

    def __init__(self, fail_after: int | None = None, kind: str = "fake"):
        self.calls, self.rays, self.fail_after = 0, 0, fail_after
        self.meta = {"kind": kind, "train_seconds": 1.0, "step": 1, "device": "cpu"}
        self.model = torch.nn.Linear(1, 1)

    def render_rays(self, rays_o: torch.Tensor, rays_d: torch.Tensor) -> torch.Tensor:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("killed")
        self.calls += 1
        self.rays += rays_o.shape[0]
        return _colour(rays_o, rays_d)


class DepthTeacher(FakeTeacher):
    """A fake teacher that also gives opacity and depth (``render_outputs``, as r2l's Teacher)."""

    def __init__(self, fail_after: int | None = None, kind: str = "fake", depth_scale: float = 1.0):
        super().__init__(fail_after, kind)
        self.depth_scale = depth_scale

    def render_outputs(self, rays_o: torch.Tensor, rays_d: torch.Tensor) -> dict[str, torch.Tensor]:
        acc = torch.sigmoid(4.0 * rays_d[:, 0])
        depth = self.depth_scale * acc * (2.0 + rays_o.norm(dim=-1))
        return {"rgb": self.render_rays(rays_o, rays_d), "acc": acc, "depth": depth}


def _blender_scene(fmt: str = "blender") -> Scene:
    poses, _ = sample_blender_poses(4, np.random.default_rng(5), radius=3.0, focal=1.0)
    images = np.random.default_rng(6).random((4, 8, 8, 3)).astype(np.float32)
    return Scene(name="toy", format=fmt, images=images, poses=poses, H=8, W=8, focal=9.0, near=2.0, far=6.0,
                 splits={"train": np.arange(3), "val": np.arange(3, 4)})


def _llff_scene() -> Scene:
    rng = np.random.default_rng(8)
    poses = np.stack([look_at(rng.uniform(-0.3, 0.3, 3), [0, 0, -5], [0, 1, 0]) for _ in range(5)])
    images = rng.random((5, 4, 5, 3)).astype(np.float32)
    return Scene(name="fwd", format="llff", images=images, poses=poses, H=4, W=5, focal=4.0, near=0.0, far=1.0,
                 splits={"train": np.arange(4), "test": np.arange(4, 5)}, ndc=True, ndc_near=1.0)


def _expected_uint8(rays_o: torch.Tensor, rays_d: torch.Tensor) -> torch.Tensor:
    return torch.round(_colour(rays_o, rays_d).clamp(0, 1) * 255).to(torch.uint8)


def _shard_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("shard_*.npz"))}


def test_blender_store_round_trip(tmp_path):
    scene = _blender_scene()
    stats = generate_pseudo_data(FakeTeacher(), scene, tmp_path, n_views=5, H=H, W=W, seed=3, views_per_shard=2)
    assert stats["n_views"] == 5 and stats["views_rendered"] == 5
    store = ViewStore(tmp_path)
    assert (store.H, store.W, store.n_views) == (H, W, 5)
    assert store.colors.shape == (5, H * W, 3) and store.colors.dtype == torch.uint8
    assert store.meta["source"] == "pseudo" and store.meta["radius"] == 4.0 and not store.meta["ndc"]
    poses, focals, _ = plan_pseudo_views(scene, 5, W, 3, (1.0, 2.0))
    np.testing.assert_array_equal(store.poses.numpy(), poses)
    np.testing.assert_array_equal(store.focals.numpy(), focals)
    base = 9.0 * W / 8  # scene focal scaled to the output width
    assert ((store.focals >= base * (1 - 1e-6)) & (store.focals < 2 * base)).all()
    assert (store.poses[:, 2, 3] >= 0).all()
    view = torch.randint(0, 5, (200,), generator=torch.Generator().manual_seed(0))
    pix = torch.randint(0, H * W, (200,), generator=torch.Generator().manual_seed(1))
    rays_o, rays_d = store.rays_at(view, pix)
    r_o, r_d = store.render_rays_at(view, pix)
    assert torch.equal(r_o, rays_o) and torch.equal(r_d, rays_d)  # no NDC for a Blender scene
    for v in range(5):
        full_o, full_d = get_rays(store.poses[v], H, W, float(store.focals[v]))
        sel = view == v
        torch.testing.assert_close(rays_o[sel], full_o[pix[sel]], atol=1e-6, rtol=0)
        torch.testing.assert_close(rays_d[sel], full_d[pix[sel]], atol=1e-6, rtol=0)
        assert torch.equal(store.colors[v], _expected_uint8(full_o, full_d))  # colours stored exactly


def test_radius_from_cameras_for_other_scenes(tmp_path):
    generate_pseudo_data(FakeTeacher(), _blender_scene("builtin"), tmp_path, n_views=3, H=H, W=W, seed=0, views_per_shard=2)
    store = ViewStore(tmp_path)
    assert store.meta["radius"] == pytest.approx(3.0, abs=1e-5)
    np.testing.assert_allclose(store.poses[:, :3, 3].norm(dim=-1).numpy(), 3.0, atol=1e-5)


def test_ndc_store_round_trip(tmp_path):
    scene = _llff_scene()
    Hn, Wn = 8, 10  # twice the scene's size: NDC must use the output size and focal
    generate_pseudo_data(FakeTeacher(), scene, tmp_path, n_views=4, H=Hn, W=Wn, seed=1, views_per_shard=3)
    store = ViewStore(tmp_path)
    assert store.meta["ndc"] and store.meta["sampler"] == "llff"
    np.testing.assert_allclose(store.focals.numpy(), 8.0)  # no focal scaling for LLFF; scaled to W
    view = torch.arange(4).repeat_interleave(20)
    pix = torch.randint(0, Hn * Wn, (80,), generator=torch.Generator().manual_seed(2))
    r_o, r_d = store.render_rays_at(view, pix)
    for v in range(4):
        o, d = get_rays(store.poses[v], Hn, Wn, 8.0)
        n_o, n_d = ndc_rays(Hn, Wn, 8.0, 1.0, o, d)
        sel = view == v
        torch.testing.assert_close(r_o[sel], n_o[pix[sel]], atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(r_d[sel], n_d[pix[sel]], atol=1e-6, rtol=1e-6)
        assert torch.equal(store.colors[v], _expected_uint8(n_o, n_d))  # the teacher saw NDC rays


def test_sample_matches_stored_pixels(tmp_path):
    generate_pseudo_data(FakeTeacher(), _blender_scene(), tmp_path, n_views=3, H=H, W=W, seed=0, views_per_shard=2)
    store = ViewStore(tmp_path)
    view, pix, rgb = store.sample(30_000, torch.Generator().manual_seed(0))
    assert view.dtype == torch.int64 and pix.dtype == torch.int64 and rgb.dtype == torch.float32
    assert torch.equal(rgb, store.colors[view, pix].float() / 255)
    assert torch.equal(torch.round(rgb * 255).to(torch.uint8), store.colors[view, pix])
    assert view.min() == 0 and view.max() == 2 and pix.min() == 0 and pix.max() == H * W - 1
    counts = torch.bincount(view, minlength=3).float() / 30_000
    torch.testing.assert_close(counts, torch.full((3,), 1 / 3), atol=0.02, rtol=0)
    again = store.sample(30_000, torch.Generator().manual_seed(0))
    assert torch.equal(again[0], view) and torch.equal(again[1], pix)


def test_resume_renders_only_missing_views(tmp_path, caplog):
    scene, kw = _blender_scene(), dict(n_views=7, H=H, W=W, seed=4, views_per_shard=2)
    generate_pseudo_data(FakeTeacher(), scene, tmp_path / "full", **kw)
    reference = _shard_bytes(tmp_path / "full")
    assert list(reference) == [shard_name(i) for i in range(4)]
    out = tmp_path / "resumed"
    with pytest.raises(RuntimeError, match="killed"):
        generate_pseudo_data(FakeTeacher(fail_after=3), scene, out, **kw)  # dies inside shard 1
    assert list(_shard_bytes(out)) == [shard_name(0)] and not (out / META_NAME).exists()
    with pytest.raises(DataError, match="meta.json"):
        ViewStore(out)
    teacher = FakeTeacher()
    generate_pseudo_data(teacher, scene, out, **kw)
    assert teacher.calls == 5 and teacher.rays == 5 * H * W  # views 2..6 only
    assert _shard_bytes(out) == reference and (out / META_NAME).exists()
    teacher = FakeTeacher()
    generate_pseudo_data(teacher, scene, out, **kw)
    assert teacher.calls == 0
    (out / shard_name(3)).unlink()
    (out / META_NAME).unlink()
    teacher = FakeTeacher()
    generate_pseudo_data(teacher, scene, out, **kw)
    assert teacher.calls == 1 and _shard_bytes(out) == reference  # the last shard holds one view
    shard = out / shard_name(1)
    shard.write_bytes(reference[shard_name(1)][:-100])  # truncated
    teacher = FakeTeacher()
    with caplog.at_level(logging.WARNING, logger="r2l"):
        generate_pseudo_data(teacher, scene, out, **kw)
    assert teacher.calls == 2 and _shard_bytes(out) == reference
    assert shard_name(1) in caplog.text


def test_changed_settings_or_teacher_rerender(tmp_path):
    scene, kw = _blender_scene(), dict(n_views=4, H=H, W=W, views_per_shard=2)
    generate_pseudo_data(FakeTeacher(), scene, tmp_path, seed=0, **kw)
    teacher = FakeTeacher(kind="another")
    generate_pseudo_data(teacher, scene, tmp_path, seed=0, **kw)
    assert teacher.calls == 4  # a new teacher never reuses old shards
    teacher = FakeTeacher(kind="another")
    generate_pseudo_data(teacher, scene, tmp_path, seed=1, **kw)
    assert teacher.calls == 4
    # fewer views: extra shards are removed, kept ones are reused
    teacher = FakeTeacher(kind="another")
    generate_pseudo_data(teacher, scene, tmp_path, seed=1, n_views=2, H=H, W=W, views_per_shard=2)
    assert teacher.calls == 0 and list(_shard_bytes(tmp_path)) == [shard_name(0)]


def test_teacher_path_recorded_and_fingerprinted(tmp_path):
    ckpt = tmp_path / "teacher.pt"
    ckpt.write_bytes(b"weights v1")
    scene, kw = _blender_scene(), dict(n_views=2, H=H, W=W, seed=0, views_per_shard=2, teacher_path=ckpt)
    generate_pseudo_data(FakeTeacher(), scene, tmp_path / "store", **kw)
    meta = json.loads((tmp_path / "store" / META_NAME).read_text())
    assert meta["teacher"] == str(ckpt) and meta["teacher_id"].startswith("sha256:")
    ckpt.write_bytes(b"weights v2")
    teacher = FakeTeacher()
    generate_pseudo_data(teacher, scene, tmp_path / "store", **kw)
    assert teacher.calls == 2


def test_store_errors_name_the_shard(tmp_path):
    generate_pseudo_data(FakeTeacher(), _blender_scene(), tmp_path, n_views=4, H=H, W=W, seed=0, views_per_shard=2)
    shard = tmp_path / shard_name(1)
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=shard_name(1)) as err:
        ViewStore(tmp_path)
    assert err.value.path == shard
    corrupt = bytearray(data)
    corrupt[len(data) // 2] ^= 0xFF  # one flipped colour byte: caught by the zip CRC
    shard.write_bytes(bytes(corrupt))
    with pytest.raises(DataError, match=shard_name(1)):
        ViewStore(tmp_path)
    shard.unlink()
    with pytest.raises(DataError, match="missing"):
        ViewStore(tmp_path)


def test_bad_teacher_output(tmp_path):
    class NaNTeacher(FakeTeacher):
        def render_rays(self, rays_o, rays_d):
            return torch.full((rays_o.shape[0], 3), float("nan"))

    with pytest.raises(R2LError, match="non-finite"):
        generate_pseudo_data(NaNTeacher(), _blender_scene(), tmp_path, n_views=1, H=H, W=W, seed=0, views_per_shard=1)


def test_chunked_teacher_calls_give_same_bytes(tmp_path):
    kw = dict(n_views=3, H=H, W=W, seed=0, views_per_shard=2)
    generate_pseudo_data(FakeTeacher(), _blender_scene(), tmp_path / "a", **kw)
    teacher = FakeTeacher()
    generate_pseudo_data(teacher, _blender_scene(), tmp_path / "b", chunk=7, **kw)
    assert teacher.calls == 3 * 9  # ceil(60 / 7) calls per view
    assert _shard_bytes(tmp_path / "a") == _shard_bytes(tmp_path / "b")


def test_size_on_disk_is_under_a_tenth_of_the_authors(tmp_path):
    stats = generate_pseudo_data(FakeTeacher(), _blender_scene(), tmp_path, n_views=8, H=64, W=64, seed=0, views_per_shard=4)
    on_disk = sum(p.stat().st_size for p in tmp_path.glob("shard_*.npz"))
    authors = 8 * 64 * 64 * 9 * 4  # 9 float32 per ray
    assert stats["bytes_total"] == on_disk
    assert on_disk <= authors / 10
    assert on_disk >= 8 * (64 * 64 * 3 + 68)  # colours and cameras are all there
    assert stats["ratio"] == pytest.approx(on_disk / authors)


def test_convert_real_data_round_trip(tmp_path):
    scene = _blender_scene()
    stats = convert_real_data(scene, tmp_path / "train", views_per_shard=2)
    store = ViewStore(tmp_path / "train")
    assert store.meta["source"] == "real" and store.meta["split"] == "train" and store.n_views == 3
    images, poses = scene.split("train")
    expected = np.clip(np.round(images * 255), 0, 255).astype(np.uint8).reshape(3, 64, 3)
    np.testing.assert_array_equal(store.colors.numpy(), expected)
    np.testing.assert_array_equal(store.poses.numpy(), poses)
    np.testing.assert_array_equal(store.focals.numpy(), np.full(3, 9.0, dtype=np.float32))
    assert np.abs(store.colors.numpy() / 255.0 - images.reshape(3, 64, 3)).max() <= 0.5 / 255 + 1e-7
    assert stats["n_views"] == 3
    convert_real_data(scene, tmp_path / "val", split="val")
    val = ViewStore(tmp_path / "val")
    assert val.n_views == 1 and val.meta["split"] == "val"
    with pytest.raises(R2LError, match="8x8"):
        convert_real_data(scene, tmp_path / "bad", H=16, W=16)


def test_convert_real_lego_100(lego_100, tmp_path):
    from r2l.data.registry import load_scene

    scene = load_scene("blender", lego_100)
    stats = convert_real_data(scene, tmp_path, split="train")
    store = ViewStore(tmp_path)
    images, poses = scene.split("train")
    assert store.n_views == len(images) == 100 and (store.H, store.W) == (100, 100)
    np.testing.assert_array_equal(store.colors.numpy(), np.round(images * 255).astype(np.uint8).reshape(100, -1, 3))
    np.testing.assert_array_equal(store.poses.numpy(), poses)
    assert stats["ratio"] <= 0.1
    # world rays rebuilt from the store equal the scene's own rays
    o, d = scene.rays(poses[17])
    r_o, r_d = store.rays_at(torch.full((5,), 17), torch.tensor([0, 99, 5050, 9900, 9999]))
    torch.testing.assert_close(r_o, o[[0, 99, 5050, 9900, 9999]], atol=1e-6, rtol=0)
    torch.testing.assert_close(r_d, d[[0, 99, 5050, 9900, 9999]], atol=1e-6, rtol=0)


def test_view_size_at_a_width_is_capped_at_the_scene_and_keeps_the_aspect():
    """pseudo_data.resolution and evaluate.video_resolution: a width, at most the scene's (504x378 -> 128x96)."""
    scene = _llff_scene()
    scene.H, scene.W = 378, 504
    assert scene.size_at_width(128) == (96, 128)
    assert scene.size_at_width(None) == (378, 504)
    assert scene.size_at_width(1000) == (378, 504)  # never upsampled
    assert scene.size_at_width(100) == (75, 100)


def test_a_teacher_of_another_scene_is_refused_before_rendering(tmp_path):
    scene = _blender_scene()
    scene.digest = "a" * 64
    teacher = FakeTeacher()
    teacher.info = {**scene.identity(), "name": "lego"}
    with pytest.raises(R2LError, match=r"teacher.pt: made for another scene than 'toy': name 'lego'"):
        generate_pseudo_data(teacher, scene, tmp_path / "pd", n_views=2, teacher_path=tmp_path / "teacher.pt")
    teacher.info = {**scene.identity(), "data_sha256": "b" * 64}  # same name, other bytes
    with pytest.raises(R2LError, match="data_sha256"):
        generate_pseudo_data(teacher, scene, tmp_path / "pd", n_views=2, teacher_path=tmp_path / "teacher.pt")
    assert teacher.calls == 0
    teacher.info = scene.identity()
    generate_pseudo_data(teacher, scene, tmp_path / "pd", n_views=2, views_per_shard=2)
    assert teacher.calls > 0


# ----------------------------------------------------------------------------- several jobs (pseudo_data.jobs)


def _render_in_parts(teacher_for, scene, root: Path, parts: int, **kw) -> list[Path]:
    """Render a store as ``parts`` jobs (part folders under ``root``), gather it; returns the part folders."""
    folders = [root / f"part_{k}" for k in range(parts)]
    for k, folder in enumerate(folders):
        generate_pseudo_data(teacher_for(), scene, folder, part=(k, parts), **kw)
    gather_pseudo_data(root, folders)
    return folders


def _grid_teacher(scene: Scene):
    """A small real grid teacher with random weights (its float arithmetic, not a fake's)."""
    from r2l.bench import random_teacher

    return random_teacher("grid", None, "fp32", torch.device("cpu"), scene)


def test_part_shards_cover_every_shard_once():
    assert [list(part_shards(7, k, 3)) for k in range(3)] == [[0, 1], [2, 3], [4, 5, 6]]
    assert [list(part_shards(3, k, 3)) for k in range(3)] == [[0], [1], [2]]
    assert list(part_shards(5, 0, 1)) == [0, 1, 2, 3, 4]
    with pytest.raises(R2LError, match="part 3 does not exist"):
        part_shards(5, 3, 3)


def test_k_jobs_render_the_same_bytes_as_one_job(tmp_path):
    """3 jobs (with a real grid teacher, two views a teacher call) give shard files byte-identical to one job's,
    gathered into a store whose views equal the one-job store's."""
    scene = _blender_scene()
    kw = dict(n_views=7, H=H, W=W, seed=4, views_per_shard=2, chunk=2 * H * W)
    generate_pseudo_data(_grid_teacher(scene), scene, tmp_path / "one", **kw)
    folders = _render_in_parts(lambda: _grid_teacher(scene), scene, tmp_path / "three", 3, **kw)
    reference = _shard_bytes(tmp_path / "one")
    assert [list(_shard_bytes(f)) for f in folders] == [[shard_name(0)], [shard_name(1)], [shard_name(2), shard_name(3)]]
    merged = {name: data for f in folders for name, data in _shard_bytes(f).items()}
    assert merged == reference and len(reference) == 4
    one, three = ViewStore(tmp_path / "one"), ViewStore(tmp_path / "three")
    assert torch.equal(one.colors, three.colors) and torch.equal(one.poses, three.poses)
    assert one.has_depth and torch.equal(one.depths, three.depths) and torch.equal(one.alphas, three.alphas)
    assert one.colors.float().std() > 1  # the teacher really rendered something
    meta = json.loads((tmp_path / "three" / META_NAME).read_text())
    assert meta["depth"] is True and json.loads((folders[0] / PART_NAME).read_text())["store"]["depth"] is True
    assert meta["shard_files"] == ["part_0/shard_00000.npz", "part_1/shard_00001.npz", "part_2/shard_00002.npz",
                                   "part_2/shard_00003.npz"]
    assert meta["parts"] == 3 and meta["stats"]["views_rendered"] == 7
    assert meta["stats"]["bytes_total"] == sum(len(b) for b in reference.values())


@pytest.mark.parametrize("teacher_cls", [FakeTeacher, DepthTeacher])
def test_views_per_teacher_call_do_not_change_the_views(teacher_cls, tmp_path):
    scene = _blender_scene()
    kw = dict(n_views=5, H=H, W=W, seed=2, views_per_shard=5)
    for name, chunk in (("per_view", None), ("three_views", 3 * H * W), ("half_view", H * W // 2)):
        teacher = teacher_cls()
        generate_pseudo_data(teacher, scene, tmp_path / name, chunk=chunk, **kw)
        assert teacher.calls == {"per_view": 5, "three_views": 2, "half_view": 10}[name]
    assert _shard_bytes(tmp_path / "per_view") == _shard_bytes(tmp_path / "three_views") == _shard_bytes(
        tmp_path / "half_view")


def test_a_killed_part_job_resumes_its_own_shards(tmp_path):
    scene, kw = _blender_scene(), dict(n_views=7, H=H, W=W, seed=4, views_per_shard=2)
    generate_pseudo_data(FakeTeacher(), scene, tmp_path / "one", **kw)
    part = tmp_path / "store" / "part_1"
    with pytest.raises(RuntimeError, match="killed"):
        generate_pseudo_data(FakeTeacher(fail_after=2), scene, part, part=(1, 2), **kw)  # shards 2, 3: dies in 3
    assert list(_shard_bytes(part)) == [shard_name(2)] and not (part / PART_NAME).exists()
    teacher = FakeTeacher()
    generate_pseudo_data(teacher, scene, part, part=(1, 2), **kw)
    assert teacher.calls == 1  # shard 3 only (one view)
    generate_pseudo_data(FakeTeacher(), scene, tmp_path / "store" / "part_0", part=(0, 2), **kw)
    gather_pseudo_data(tmp_path / "store", [tmp_path / "store" / "part_0", part])
    assert torch.equal(ViewStore(tmp_path / "store").colors, ViewStore(tmp_path / "one").colors)


def test_gather_refuses_unfinished_or_mismatched_parts(tmp_path):
    scene, kw = _blender_scene(), dict(n_views=6, H=H, W=W, views_per_shard=2)
    folders = [tmp_path / f"part_{k}" for k in range(2)]
    generate_pseudo_data(FakeTeacher(), scene, folders[0], seed=0, part=(0, 2), **kw)
    with pytest.raises(DataError, match=r"part_1/part.json: missing"):
        gather_pseudo_data(tmp_path, folders)
    generate_pseudo_data(FakeTeacher(), scene, folders[1], seed=1, part=(1, 2), **kw)
    with pytest.raises(DataError, match=r"part_1/part.json: was rendered with other settings"):
        gather_pseudo_data(tmp_path, folders)
    generate_pseudo_data(FakeTeacher(), scene, folders[1], seed=0, part=(1, 2), **kw)
    with pytest.raises(DataError, match="is part 1 of 2, expected part 0 of 2"):
        gather_pseudo_data(tmp_path, folders[::-1])
    (folders[1] / shard_name(2)).unlink()
    with pytest.raises(DataError, match="shard_00002.npz: shard is missing although its part finished"):
        gather_pseudo_data(tmp_path, folders)
    assert not (tmp_path / META_NAME).exists()


def test_gather_removes_parts_of_another_job_count(tmp_path):
    scene, kw = _blender_scene(), dict(n_views=6, H=H, W=W, seed=0, views_per_shard=2)
    _render_in_parts(FakeTeacher, scene, tmp_path, 3, **kw)
    generate_pseudo_data(FakeTeacher(), scene, tmp_path, **kw)  # an old single-folder store in the same place
    (tmp_path / META_NAME).unlink()
    _render_in_parts(FakeTeacher, scene, tmp_path, 2, **kw)
    assert sorted(p.name for p in tmp_path.iterdir()) == [META_NAME, "part_0", "part_1"]
    assert ViewStore(tmp_path).n_views == 6


def test_a_store_lists_only_shards_inside_it(tmp_path):
    scene, kw = _blender_scene(), dict(n_views=4, H=H, W=W, seed=0, views_per_shard=2)
    _render_in_parts(FakeTeacher, scene, tmp_path / "store", 2, **kw)
    meta_path = tmp_path / "store" / META_NAME
    meta = json.loads(meta_path.read_text())
    meta["shard_files"][1] = "../elsewhere/shard_00001.npz"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DataError, match="lies outside the store folder"):
        ViewStore(tmp_path / "store")
    meta["shard_files"] = meta["shard_files"][:1]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DataError, match="must list the 2 shard paths"):
        ViewStore(tmp_path / "store")


# ----------------------------------------------------------------------------- the teacher's depth and opacity


def test_shard_round_trip_with_depths_and_alphas(tmp_path):
    rng = np.random.default_rng(0)
    poses, focals = rng.random((2, 4, 4)).astype(np.float32), np.full(2, 9.0, dtype=np.float32)
    colors = rng.integers(0, 256, (2, H * W, 3)).astype(np.uint8)
    depths = rng.uniform(2, 6, (2, H * W)).astype(np.float16)
    alphas = rng.integers(0, 256, (2, H * W)).astype(np.uint8)
    write_shard(tmp_path / "d.npz", 4, poses, focals, colors, H, W, depths=depths, alphas=alphas)
    arrs = read_shard(tmp_path / "d.npz", H, W, 2, 4, depth=True)
    np.testing.assert_array_equal(arrs["depths"], depths)
    np.testing.assert_array_equal(arrs["alphas"], alphas)
    assert arrs["depths"].dtype == np.float16 and arrs["alphas"].dtype == np.uint8
    write_shard(tmp_path / "d2.npz", 4, poses, focals, colors, H, W, depths=depths, alphas=alphas)
    assert (tmp_path / "d.npz").read_bytes() == (tmp_path / "d2.npz").read_bytes()  # deterministic
    write_shard(tmp_path / "plain.npz", 4, poses, focals, colors, H, W)
    with np.load(tmp_path / "plain.npz") as z:
        assert z.files == ["first_view", "hw", "poses", "focals", "colors"]  # the format without depth, unchanged
    assert "depths" not in read_shard(tmp_path / "plain.npz", H, W, 2, 4)
    with pytest.raises(DataError, match="plain.npz: shard lacks the teacher's depths and alphas"):
        read_shard(tmp_path / "plain.npz", H, W, 2, 4, depth=True)
    write_shard(tmp_path / "bad.npz", 4, poses, focals, colors, H, W, depths=depths[:, :-1], alphas=alphas)
    with pytest.raises(DataError, match=r"bad.npz: depths has shape \(2, 59\) float16, expected \(2, 60\)"):
        read_shard(tmp_path / "bad.npz", H, W, 2, 4)
    with pytest.raises(R2LError, match="together"):
        write_shard(tmp_path / "half.npz", 4, poses, focals, colors, H, W, depths=depths)


def test_teacher_render_outputs_match_render_rays():
    scene = _llff_scene()
    teacher = _grid_teacher(scene)
    rays_o, rays_d = scene.rays(scene.poses[0])
    out = teacher.render_outputs(rays_o, rays_d)
    assert {k: (tuple(v.shape), v.dtype, v.device.type) for k, v in out.items()} == {
        "rgb": ((20, 3), torch.float32, "cpu"), "acc": ((20,), torch.float32, "cpu"),
        "depth": ((20,), torch.float32, "cpu")}
    assert torch.equal(out["rgb"], teacher.render_rays(rays_o, rays_d))
    assert ((out["acc"] >= 0) & (out["acc"] <= 1 + 1e-5)).all() and out["acc"].std() > 0.01
    empty = teacher.render_outputs(rays_o[:0], rays_d[:0])
    assert {k: tuple(v.shape) for k, v in empty.items()} == {"rgb": (0, 3), "acc": (0,), "depth": (0,)}


@pytest.mark.parametrize("make_scene", [_blender_scene, _llff_scene])
def test_a_grid_teacher_store_holds_its_depth_and_opacity(make_scene, tmp_path):
    """depth_at / alpha_at give the teacher's depth + (1 - acc) * far and acc, to float16 / uint8 rounding."""
    scene = make_scene()
    teacher = _grid_teacher(scene)
    generate_pseudo_data(teacher, scene, tmp_path, n_views=3, H=H, W=W, seed=1, views_per_shard=2, chunk=2 * H * W)
    store = ViewStore(tmp_path)
    assert store.has_depth and store.meta["depth"] is True and store.meta["far"] == scene.far
    assert store.depths.shape == (3, H * W) and store.depths.dtype == torch.float16
    assert store.alphas.shape == (3, H * W) and store.alphas.dtype == torch.uint8
    view, pix = torch.tensor([0, 1, 2, 2, 0]), torch.tensor([0, 17, 59, 30, 44])
    out = teacher.render_outputs(*store.render_rays_at(view, pix))
    depth = out["depth"] + (1 - out["acc"]) * scene.far
    got_depth, got_alpha = store.depth_at(view, pix), store.alpha_at(view, pix)
    assert got_depth.dtype == torch.float32 and got_alpha.dtype == torch.float32
    torch.testing.assert_close(got_depth, depth, rtol=2e-3, atol=1e-4)  # float16: 11 significant bits
    torch.testing.assert_close(got_alpha, out["acc"].clamp(0, 1), rtol=0, atol=0.5 / 255 + 1e-4)


def test_stores_without_depth(tmp_path):
    generate_pseudo_data(FakeTeacher(), _blender_scene(), tmp_path / "fake", n_views=2, H=H, W=W, views_per_shard=2)
    convert_real_data(_blender_scene(), tmp_path / "real")
    for name in ("fake", "real"):
        store = ViewStore(tmp_path / name)
        assert store.meta["depth"] is False and not store.has_depth and store.depths is None and store.alphas is None
        with pytest.raises(DataError, match=f"{name}/meta.json: this view store has no teacher depths"):
            store.depth_at(torch.tensor([0]), torch.tensor([0]))
        with pytest.raises(DataError, match="no teacher depths"):
            store.alpha_at(torch.tensor([0]), torch.tensor([0]))


def test_depth_store_values_and_a_shard_without_depth(tmp_path):
    scene, kw = _blender_scene(), dict(n_views=4, H=H, W=W, seed=0, views_per_shard=2)
    generate_pseudo_data(DepthTeacher(), scene, tmp_path, **kw)
    store = ViewStore(tmp_path)
    o, d = get_rays(store.poses[3], H, W, float(store.focals[3]))
    acc = torch.sigmoid(4.0 * d[:, 0])
    expected = (acc * (2.0 + o.norm(dim=-1)) + (1 - acc) * scene.far).to(torch.float16)
    torch.testing.assert_close(store.depths[3], expected, atol=0, rtol=1e-3)
    assert torch.equal(store.alphas[3], torch.round(acc * 255).to(torch.uint8))
    arrs = read_shard(tmp_path / shard_name(1), H, W, 2, 2)
    write_shard(tmp_path / shard_name(1), 2, arrs["poses"], arrs["focals"], arrs["colors"], H, W)  # no depths
    with pytest.raises(DataError, match=f"{shard_name(1)}: shard lacks the teacher's depths") as err:
        ViewStore(tmp_path)
    assert err.value.path == tmp_path / shard_name(1)
    teacher = DepthTeacher()
    generate_pseudo_data(teacher, scene, tmp_path, **kw)
    assert teacher.calls == 2  # that shard only, rendered again with its depths
    assert torch.equal(ViewStore(tmp_path).depths, store.depths)


def test_a_store_rendered_without_depth_is_rendered_again_with_it(tmp_path):
    scene, kw = _blender_scene(), dict(n_views=4, H=H, W=W, seed=0, views_per_shard=2)
    generate_pseudo_data(FakeTeacher(), scene, tmp_path, **kw)  # same teacher id: only the plan's depth differs
    assert json.loads((tmp_path / "plan.json").read_text())["depth"] is False
    teacher = DepthTeacher()
    generate_pseudo_data(teacher, scene, tmp_path, **kw)
    assert teacher.calls == 4 and ViewStore(tmp_path).has_depth


@pytest.mark.parametrize("scale", [float("nan"), 1e6])  # 1e6 overflows float16
def test_non_finite_depth_is_refused(scale, tmp_path):
    with pytest.raises(R2LError, match="non-finite depths"):
        generate_pseudo_data(DepthTeacher(depth_scale=scale), _blender_scene(), tmp_path, n_views=1, H=H, W=W,
                             views_per_shard=1)
