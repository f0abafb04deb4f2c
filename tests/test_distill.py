"""Student distillation: config, lr schedule, hard-example pool, a short real run, resume, NaN guard, finetuning."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

import r2l.stages.student as distill
from r2l.core.checkpoint import load_checkpoint, load_latest_checkpoint
from r2l.core.errors import R2LError
from r2l.data.views import ViewStore
from r2l.models.r2lnet import R2LNet, R2LNetConfig
from r2l.models.students import load_student
from r2l.stages.student import (
    DistillConfig,
    HardPool,
    distill_config_from_dict,
    finetune_student,
    lr_at,
    resolve_lr_decay,
    store_psnr,
    train_step,
    train_student,
)

from helpers import Killed, kill_on_call, tiny_student

# ----------------------------------------------------------------------------- config and schedule


def test_config_defaults_are_the_paper_values():
    cfg = DistillConfig()
    assert (cfg.steps, cfg.batch_rays, cfg.hard_ratio, cfg.hard_mul) == (1_200_000, 81_920, 0.2, 20)
    assert (cfg.lr, cfg.warmup_lr, cfg.warmup_steps, cfg.lr_decay_steps) == (5e-4, 1e-4, 200, None)  # the format's
    assert resolve_lr_decay(cfg, ndc=False).lr_decay_steps == 500_000
    assert resolve_lr_decay(cfg, ndc=True).lr_decay_steps == 250_000
    assert cfg.n_hard == 16_384 and cfg.hard_mul * cfg.batch_rays == 1_638_400
    assert cfg.network == R2LNetConfig()


def test_config_from_dict():
    cfg = distill_config_from_dict({"steps": 10, "lr": "5e-4", "precision": "bf16", "network": {"depth": 8, "width": 32}})
    assert cfg.steps == 10 and cfg.lr == 5e-4 and cfg.precision == "bf16"
    assert cfg.network == R2LNetConfig(depth=8, width=32)
    with pytest.raises(R2LError, match="unknown key.*stepz"):
        distill_config_from_dict({"stepz": 1})
    with pytest.raises(R2LError, match="student.network.*unknown key.*widht"):
        distill_config_from_dict({"network": {"widht": 3}})
    with pytest.raises(R2LError, match="hard_ratio"):
        distill_config_from_dict({"hard_ratio": 1.5})
    with pytest.raises(R2LError, match="steps"):
        distill_config_from_dict({"steps": 2.5})
    with pytest.raises(R2LError, match="depth"):
        distill_config_from_dict({"network": {"depth": 7}})


def test_lr_schedule_hand_values():
    cfg = DistillConfig(lr_decay_steps=500_000)  # a Blender scene's
    assert lr_at(0, cfg) == pytest.approx(1e-4, rel=1e-12)
    assert lr_at(100, cfg) == pytest.approx(3e-4, rel=1e-12)
    assert lr_at(200, cfg) == pytest.approx(5e-4, rel=1e-12)
    assert lr_at(500_200, cfg) == pytest.approx(5e-5, rel=1e-12)
    assert lr_at(1_000_200, cfg) == pytest.approx(5e-6, rel=1e-12)
    assert lr_at(250_200, cfg) == pytest.approx(5e-4 / math.sqrt(10), rel=1e-12)


# ----------------------------------------------------------------------------- hard-example pool


def _rays(ids, loss=None):
    """Rays tagged by id in rays_o[:, 0]; rgb chosen so that the squared error against 0.5 is ``loss``."""
    ids = torch.as_tensor(ids, dtype=torch.float32)
    o = torch.stack([ids, torch.zeros_like(ids), torch.zeros_like(ids)], -1)
    d = torch.stack([torch.zeros_like(ids), torch.zeros_like(ids), -torch.ones_like(ids)], -1)
    rgb = torch.full((len(ids), 3), 0.5)
    if loss is not None:
        rgb = rgb + torch.as_tensor(loss, dtype=torch.float32).sqrt()[:, None]
    return o, d, rgb


def _no_geo(n):
    """The teacher depth and opacity of rays from a store without them (real views): NaN."""
    return torch.full((n, 2), float("nan"))


def test_pool_fill_phase_keeps_the_hardest():
    pool = HardPool(capacity=6, n_hard=2)
    losses = [[0.1, 0.9, 0.3, 0.8, 0.2], [0.5, 0.1, 0.7, 0.6, 0.0], [0.0, 0.2, 0.1, 0.3, 0.9]]
    for b, loss in enumerate(losses):
        assert pool.draw() is None  # nothing handed out before the pool is full
        ids = [10 * b + i for i in range(5)]
        o, d, rgb = _rays(ids)
        slots = pool.add(o, d, rgb, torch.tensor(loss))
        assert slots.tolist() == [2 * b, 2 * b + 1]  # appended
    assert pool.full and pool.size == 6
    # per batch the two highest losses, hardest first: (1, 3), (12, 13), (24, 23)
    assert pool.rays_o[:, 0].tolist() == [1, 3, 12, 13, 24, 23]


def test_pool_full_overwrites_exactly_the_drawn_slots():
    pool = HardPool(capacity=8, n_hard=3, seed=3)
    for b in range(3):  # 3 + 3 + 2 (the last add only fills the remaining 2 slots)
        o, d, rgb = _rays([100 + 10 * b + i for i in range(4)])
        pool.add(o, d, rgb, torch.tensor([4.0, 3.0, 2.0, 1.0]))
    assert pool.full and pool.rays_o[:, 0].tolist() == [100, 101, 102, 110, 111, 112, 120, 121]
    for round_ in range(4):
        before = pool.rays_o.clone()
        drawn_o, _, _, _ = pool.draw()
        slots = pool.drawn.clone()
        assert len(set(slots.tolist())) == 3  # distinct slots
        assert torch.equal(drawn_o, before[slots])  # the drawn rays are those slots' rays
        o, d, rgb = _rays([7, 8, 9, 6], loss=None)
        pool.add(o, d, rgb, torch.tensor([0.1, 0.3, 0.2, 0.0]))
        # exactly the drawn slots changed, hardest first: 8 (0.3), 9 (0.2), 7 (0.1)
        assert pool.rays_o[slots, 0].tolist() == [8, 9, 7]
        untouched = torch.ones(8, dtype=torch.bool)
        untouched[slots] = False
        assert torch.equal(pool.rays_o[untouched], before[untouched])
        assert pool.drawn is None


def test_train_step_uses_and_feeds_the_pool():
    """With a zero output layer the prediction is exactly 0.5, so every per-ray loss is known by hand."""
    torch.manual_seed(0)
    cfg = DistillConfig(batch_rays=5, hard_ratio=0.4, hard_mul=1, network=R2LNetConfig(depth=4, width=8))
    model = R2LNet(cfg.network)
    torch.nn.init.zeros_(model.tail.weight)
    torch.nn.init.zeros_(model.tail.bias)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.0)  # weights stay put
    pool = HardPool(capacity=4, n_hard=2, seed=0)
    geom = {"near": 2.0, "far": 6.0}
    gen = torch.Generator().manual_seed(0)
    # fill phase: two steps, no pool rays in the batch (loss = mean of the fresh losses)
    for b in range(2):
        batch = (*_rays([10 * b + i for i in range(5)], loss=[0.09, 0.09, 0.04, 0.01, 0.0]), _no_geo(5))
        loss = train_step(model, optimizer, batch, pool, geom, cfg, torch.device("cpu"), gen)
        assert float(loss) == pytest.approx(0.23 / 5, rel=1e-5)
    assert pool.full and sorted(pool.rays_o[:, 0].tolist()) == [0, 1, 10, 11]
    before_o, before_rgb = pool.rays_o.clone(), pool.rgb.clone()
    fresh_losses = [0.0, 0.01, 0.16, 0.04, 0.0025]
    batch = (*_rays([20, 21, 22, 23, 24], loss=fresh_losses), _no_geo(5))
    loss = train_step(model, optimizer, batch, pool, geom, cfg, torch.device("cpu"), gen)
    # 5 fresh + 2 pool rays (each pool ray has loss 0.09)
    assert float(loss) == pytest.approx((sum(fresh_losses) + 2 * 0.09) / 7, rel=1e-5)
    changed = (pool.rays_o[:, 0] != before_o[:, 0]).nonzero().flatten()
    assert len(changed) == 2 and sorted(pool.rays_o[changed, 0].tolist()) == [22, 23]
    torch.testing.assert_close(pool.rgb[pool.rays_o[:, 0] == 22][0], torch.full((3,), 0.9))
    keep = pool.rays_o[:, 0] == before_o[:, 0]
    assert torch.equal(pool.rgb[keep], before_rgb[keep])


# ----------------------------------------------------------------------------- real runs (conftest's builtin_stores)


def test_short_distillation_raises_val_psnr(builtin_stores, tmp_path):
    """A small student distilled from the analytic ground truth: held-out PSNR rises well above the start."""
    cfg = tiny_student({"steps": 150, "batch_rays": 512, "val_every": 75, "warmup_steps": 10, "lr": 1e-3,
                        "warmup_lr": 2e-4, "ckpt_every": 1000, "network": R2LNetConfig(depth=6, width=64, n_freqs=6)})
    out = tmp_path / "student.pt"
    metrics = train_student([builtin_stores["pseudo"]], cfg, out, tmp_path / "resume", val_store=builtin_stores["val"])
    start, end = metrics["val_psnr_before"], metrics["val_psnr"]
    print(f"short distillation: val PSNR {start:.2f} -> {end:.2f} dB ({metrics['val_history']})")
    assert metrics["finished"] and [s for s, _ in metrics["val_history"]] == [0, 75, 150]
    assert end > start + 5.0
    student = load_student(out, device="cpu")
    assert student.meta["kind"] == "student" and student.meta["step"] == 150
    assert student.meta["val_psnr"] == pytest.approx(end)
    # the loaded renderer reproduces the validation number
    val = ViewStore(builtin_stores["val"])
    assert store_psnr(student.model, val, 2.0, 6.0, 0, 4096) == pytest.approx(end, abs=1e-4)
    ckpt = load_checkpoint(out)
    assert ckpt["near"] == 2.0 and ckpt["far"] == 6.0 and ckpt["ndc"] is False and "optimizer" in ckpt


def test_resume_after_kill_continues_the_same_run(builtin_stores, tmp_path):
    cfg = tiny_student({"val_every": 1})
    full = train_student([builtin_stores["pseudo"]], cfg, tmp_path / "a.pt", tmp_path / "ra", val_fn=lambda m: 10.0)
    killer = kill_on_call(6, 10.0)  # dies during the validation after step 5 (the last checkpoint is at step 3)
    with pytest.raises(Killed):
        train_student([builtin_stores["pseudo"]], cfg, tmp_path / "b.pt", tmp_path / "rb", val_fn=killer)
    assert load_latest_checkpoint(tmp_path / "rb")["step"] == 3
    assert not (tmp_path / "b.pt").exists()
    resumed = train_student([builtin_stores["pseudo"]], cfg, tmp_path / "b.pt", tmp_path / "rb", val_fn=lambda m: 10.0)
    assert resumed["final_step"] == full["final_step"] == 8
    a, b = np.array(full["loss_history"]), np.array(resumed["loss_history"])
    assert a[:, 0].tolist() == b[:, 0].tolist() == list(range(1, 9))
    np.testing.assert_allclose(b[:, 1], a[:, 1], rtol=1e-5)  # the same loss curve (pool not yet in use)
    wa, wb = load_checkpoint(tmp_path / "a.pt")["weights"], load_checkpoint(tmp_path / "b.pt")["weights"]
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-4, atol=1e-6)


def test_max_steps_stops_and_resumes(builtin_stores, tmp_path):
    cfg = tiny_student({"ckpt_every": 100})
    part = train_student([builtin_stores["pseudo"]], cfg, tmp_path / "s.pt", tmp_path / "r", val_fn=lambda m: 1.0,
                         max_steps=5)
    assert part == {**part, "finished": False, "step": 5} and not (tmp_path / "s.pt").exists()
    done = train_student([builtin_stores["pseudo"]], cfg, tmp_path / "s.pt", tmp_path / "r", val_fn=lambda m: 1.0)
    assert done["finished"] and done["final_step"] == 8 and [r[0] for r in done["loss_history"]] == list(range(1, 9))


def test_fewer_steps_than_the_checkpoints_start_over(builtin_stores, tmp_path):
    """Rerun with fewer steps in the folder of a longer run: its checkpoints past the new end are removed (not
    resumed, not left to crowd out the new run's own), and the result is the fresh short run's."""
    stores, fn = [builtin_stores["pseudo"]], (lambda m: 1.0)
    train_student(stores, tiny_student({"ckpt_every": 2}), tmp_path / "long.pt", tmp_path / "r", val_fn=fn)
    assert sorted(p.name for p in (tmp_path / "r").glob("ckpt_*.pt")) == ["ckpt_000000006.pt", "ckpt_000000008.pt"]
    short = tiny_student({"ckpt_every": 2, "steps": 5})
    done = train_student(stores, short, tmp_path / "s.pt", tmp_path / "r", val_fn=fn)
    fresh = train_student(stores, short, tmp_path / "f.pt", tmp_path / "rf", val_fn=fn)
    assert done["final_step"] == fresh["final_step"] == 5
    assert sorted(p.name for p in (tmp_path / "r").glob("ckpt_*.pt")) == ["ckpt_000000004.pt", "ckpt_000000005.pt"]
    ws, wf = load_checkpoint(tmp_path / "s.pt")["weights"], load_checkpoint(tmp_path / "f.pt")["weights"]
    assert all(torch.equal(ws[k], wf[k]) for k in wf)


@pytest.mark.parametrize("ckpt_every, last_good", [(4, 4), (1, 5)])
def test_nan_stops_with_checkpoint_kept(builtin_stores, tmp_path, monkeypatch, ckpt_every, last_good):
    """A NaN learning rate from step 5 on poisons the weights: R2LError, the last finite checkpoint stays."""
    real = distill.lr_at
    monkeypatch.setattr(distill, "lr_at", lambda step, cfg: float("nan") if step >= 5 else real(step, cfg))
    cfg = tiny_student({"ckpt_every": ckpt_every})
    with pytest.raises(R2LError, match="non-finite|became nan"):
        train_student([builtin_stores["pseudo"]], cfg, tmp_path / "s.pt", tmp_path / "r", val_fn=lambda m: 1.0)
    ckpt = load_latest_checkpoint(tmp_path / "r")
    assert ckpt["step"] == last_good
    assert all(torch.isfinite(v).all() for v in ckpt["weights"].values())
    assert not (tmp_path / "s.pt").exists()


def test_finetune_continues_step_and_optimizer_and_selects_on_val(builtin_stores, tmp_path):
    cfg = tiny_student({"steps": 6, "val_every": 2})
    train_student([builtin_stores["pseudo"]], cfg, tmp_path / "student.pt", tmp_path / "rs", val_fn=lambda m: 10.0)
    student = load_checkpoint(tmp_path / "student.pt")
    assert student["step"] == 6 and all(int(s["step"]) == 6 for s in student["optimizer"]["state"].values())

    psnrs = iter([12.0, 13.0, 16.0, 14.0, 11.0])  # validations at steps 6 (before), 8, 10, 12, 14
    seen = []

    def val_fn(model):
        seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return next(psnrs)

    lrs = []
    real = distill.lr_at
    out = tmp_path / "finetuned.pt"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(distill, "lr_at", lambda step, c: lrs.append(step) or real(step, c))
        metrics = finetune_student(tmp_path / "student.pt", builtin_stores["pseudo"], builtin_stores["val"], cfg, 8,
                                   out, tmp_path / "rf", val_fn=val_fn)
    assert lrs == list(range(6, 14))  # the schedule goes on from the student's step
    assert [s for s, _ in metrics["val_history"]] == [6, 8, 10, 12, 14]
    assert metrics["val_psnr"] == 16.0 and metrics["val_step"] == 10 and metrics["val_psnr_before"] == 12.0
    assert metrics["final_step"] == 14
    ckpt = load_latest_checkpoint(tmp_path / "rf")
    # Adam's per-parameter step counters carried over: 6 student steps + 8 finetuning steps
    assert ckpt["step"] == 14 and all(int(s["step"]) == 14 for s in ckpt["optimizer"]["state"].values())
    ft = load_checkpoint(out)
    assert ft["kind"] == "finetuned" and ft["step"] == 10 and "optimizer" not in ft
    for k, v in seen[2].items():  # the written weights are those validated at step 10
        assert torch.equal(ft["weights"][k], v)
    assert not torch.equal(ft["weights"]["tail.weight"], seen[-1]["tail.weight"])
    renderer = load_student(out, device="cpu")
    assert renderer.meta["kind"] == "finetuned" and renderer.meta["step"] == 10
    assert renderer.meta["metrics"]["val_psnr_before"] == 12.0 and renderer.meta["val_psnr"] == 16.0


def test_finetune_keeps_the_start_when_val_only_drops(builtin_stores, tmp_path):
    cfg = tiny_student({"steps": 3, "val_every": 2})
    train_student([builtin_stores["pseudo"]], cfg, tmp_path / "student.pt", tmp_path / "rs", val_fn=lambda m: 10.0)
    start = load_checkpoint(tmp_path / "student.pt")["weights"]
    psnrs = iter([20.0, 19.0, 18.0, 17.0])  # steps 3 (before), 4, 6, 7
    metrics = finetune_student(tmp_path / "student.pt", builtin_stores["pseudo"], builtin_stores["val"], cfg, 4,
                               tmp_path / "f.pt", tmp_path / "rf", val_fn=lambda m: next(psnrs))
    assert metrics["val_step"] == 3 and metrics["val_psnr"] == 20.0
    ft = load_checkpoint(tmp_path / "f.pt")
    assert all(torch.equal(ft["weights"][k], start[k]) for k in start)


def test_finetune_rejects_another_network(builtin_stores, tmp_path):
    cfg = tiny_student({"steps": 2})
    train_student([builtin_stores["pseudo"]], cfg, tmp_path / "student.pt", tmp_path / "rs", val_fn=lambda m: 1.0)
    other = dataclasses.replace(cfg, network=R2LNetConfig(depth=6, width=16, n_freqs=4))
    with pytest.raises(R2LError, match="another student network"):
        finetune_student(tmp_path / "student.pt", builtin_stores["pseudo"], builtin_stores["val"], other, 2,
                         tmp_path / "f.pt", tmp_path / "rf")


def test_split_counts_proportional_to_rays():
    from types import SimpleNamespace

    from r2l.stages.student import split_counts, view_indices

    a = SimpleNamespace(n_views=30, H=10, W=10)  # 3000 rays
    b = SimpleNamespace(n_views=10, H=10, W=10)  # 1000 rays
    assert split_counts(1000, [a, b]) == [750, 250]
    assert sum(split_counts(1001, [a, b, b])) == 1001
    assert view_indices(10, 3) == [0, 4, 9] and view_indices(3, 0) == [0, 1, 2] and view_indices(3, 8) == [0, 1, 2]


def test_two_stores_train_together(builtin_stores, tmp_path):
    cfg = tiny_student({"steps": 2})
    m = train_student([builtin_stores["pseudo"], builtin_stores["val"]], cfg, tmp_path / "s.pt", tmp_path / "r",
                      val_fn=lambda m: 1.0)
    assert m["finished"] and m["rays_per_step"] == 256 + 51


def test_stores_with_other_geometry_rejected(builtin_stores, tmp_path):
    import json
    import shutil

    from r2l.core.errors import DataError

    other = tmp_path / "other"
    shutil.copytree(builtin_stores["val"], other)
    meta = json.loads((other / "meta.json").read_text())
    (other / "meta.json").write_text(json.dumps({**meta, "far": 8.0}))
    with pytest.raises(DataError, match="render geometry"):
        train_student([builtin_stores["pseudo"], other], tiny_student({"steps": 1}), tmp_path / "s.pt", tmp_path / "r")


def test_forward_facing_student_samples_in_ndc(tmp_path):
    """An LLFF scene: the student trains and finetunes on NDC rays with near 0, far 1."""
    from r2l.data.builtin import write_llff
    from r2l.data.registry import load_scene
    from r2l.stages.pseudo_data import convert_real_data

    write_llff(tmp_path / "scene", seed=0, width=16, height=12, n_views=8)
    scene = load_scene("llff", tmp_path / "scene")
    convert_real_data(scene, tmp_path / "train", "train")
    convert_real_data(scene, tmp_path / "val", "val")
    cfg = tiny_student({"steps": 2, "batch_rays": 64})
    train_student([tmp_path / "train"], cfg, tmp_path / "s.pt", tmp_path / "rs", val_store=tmp_path / "val")
    m = finetune_student(tmp_path / "s.pt", tmp_path / "train", tmp_path / "val", cfg, 2, tmp_path / "f.pt", tmp_path / "rf")
    student = load_student(tmp_path / "f.pt", device="cpu")
    assert (student.near, student.far, student.meta["ndc"]) == (0.0, 1.0, True)
    assert m["base_step"] == 2 and m["final_step"] == 4
    img = student.render_rays(*scene.rays(scene.poses[0])).reshape(scene.H, scene.W, 3)
    assert img.shape == (12, 16, 3) and bool(torch.isfinite(img).all())


def test_llff_finetuning_keeps_the_last_checkpoint_because_its_val_views_are_training_views(tmp_path, caplog):
    """Selecting on views the student trains on cannot see overfitting: the last checkpoint is written, and the
    log says why; Blender-style stores with real validation views still select (see the tests above)."""
    import logging

    from r2l.data.builtin import write_llff
    from r2l.data.registry import load_scene
    from r2l.data.views import read_meta
    from r2l.stages.pseudo_data import convert_real_data

    write_llff(tmp_path / "scene", seed=0, width=16, height=12, n_views=8)
    scene = load_scene("llff", tmp_path / "scene")
    convert_real_data(scene, tmp_path / "train", "train")
    convert_real_data(scene, tmp_path / "val", "val")
    assert read_meta(tmp_path / "val")["views_in_train"] is True
    assert read_meta(tmp_path / "train")["views_in_train"] is False
    cfg = tiny_student({"steps": 2, "batch_rays": 64, "val_every": 1})
    train_student([tmp_path / "train"], cfg, tmp_path / "s.pt", tmp_path / "rs", val_fn=lambda m: 10.0)
    psnrs = iter([20.0, 19.0, 18.0])  # before, after step 3, after step 4: the best is the start
    with caplog.at_level(logging.WARNING, logger="r2l"):
        m = finetune_student(tmp_path / "s.pt", tmp_path / "train", tmp_path / "val", cfg, 2, tmp_path / "f.pt",
                             tmp_path / "rf", val_fn=lambda model: next(psnrs))
    assert m["val_step"] == 4 and m["val_psnr"] == 18.0  # the last, not the best
    assert "optimizer" not in load_checkpoint(tmp_path / "f.pt")  # only a distilled student carries it
    assert "are training views" in caplog.text and "keeping the last finetuning checkpoint" in caplog.text


def test_finetuning_refuses_a_student_of_another_scene(builtin_stores, tmp_path):
    cfg = tiny_student({"steps": 1})
    train_student([builtin_stores["pseudo"]], cfg, tmp_path / "s.pt", tmp_path / "rs", val_fn=lambda m: 10.0)
    ckpt = load_checkpoint(tmp_path / "s.pt")
    ckpt["scene"] = {**ckpt["scene"], "name": "lego"}
    torch.save(ckpt, tmp_path / "other.pt")
    with pytest.raises(R2LError, match=r"other.pt: made for another scene .* name 'lego'"):
        finetune_student(tmp_path / "other.pt", builtin_stores["pseudo"], builtin_stores["val"], cfg, 1,
                         tmp_path / "f.pt", tmp_path / "rf", val_fn=lambda m: 10.0)
