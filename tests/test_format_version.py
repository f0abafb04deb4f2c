"""Model and checkpoint files record their layout as ``format_version``: files of today's layout without it (format
1) and early files (format 0) load and render as before, a newer format is refused in one line naming the file,
and a resume reads unversioned checkpoints bit for bit."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from r2l.cli import main
from r2l.core.checkpoint import FORMAT_VERSION, load_checkpoint
from r2l.core.errors import DataError
from r2l.data.builtin import BuiltinScene, blender_split_poses, write_blender
from r2l.data.registry import load_scene
from r2l.data.scene import Scene
from r2l.models.gridstudent import GridStudentConfig
from r2l.models.load import describe_model, load_model, model_camera
from r2l.models.r2lnet import R2LNetConfig
from r2l.models.students import load_student
from r2l.models.teacher import load_teacher, teacher_config_from_dict
from r2l.stages.pseudo_data import generate_pseudo_data
from r2l.stages.student import DistillConfig, finetune_student, train_student
from r2l.stages.teacher import train_teacher

RES = 16
TINY_GRID = {"resolution": 16, "resolution_init": 12, "upsample_steps": [], "density_components": 4,
             "app_components": 8, "app_dim": 8, "mlp_width": 16, "n_samples": 24, "occupancy_resolution": 8}
NET = R2LNetConfig(depth=4, width=16, n_points=8, n_freqs=4)
GRID_NET = GridStudentConfig(n_points=8, geometry_resolution=16, n_fine=2, resolutions=(8, 16), channels=3,
                             mlp_width=16)
MODELS = ("teacher", "student", "grid", "finetuned")


@pytest.fixture(autouse=True)
def quiet_logging(monkeypatch):
    """In-process ``r2l`` runs keep pytest's logging."""
    monkeypatch.setattr("r2l.core.log.setup_logging", lambda: None)


def _teacher_cfg(steps: int = 2):
    return teacher_config_from_dict({"kind": "grid", "steps": steps, "batch_rays": 64, "val_views": 1, "ckpt_every": 2,
                                     "device": "cpu", "check_learned": False, "chunk": 256, "grid": TINY_GRID})


def _student_cfg(**kw) -> DistillConfig:
    base = dict(steps=4, batch_rays=128, warmup_steps=1, lr_decay_steps=100, val_every=0, val_views=1, ckpt_every=2,
                log_every=1, device="cpu", chunk=1024, network=NET, grid=GRID_NET)
    return DistillConfig(**{**base, **kw})


def _scene() -> Scene:
    """The built-in scene's training cameras at RES x RES (images unused: pseudo-data only)."""
    poses = blender_split_poses(0, 4, 0, 0)["train"].astype(np.float32)
    focal = 0.5 * RES / math.tan(0.5 * 0.6911112070083618)
    return Scene(name="builtin0", format="blender", images=np.zeros((4, RES, RES, 3), np.float32), poses=poses,
                 H=RES, W=RES, focal=focal, near=2.0, far=6.0, splits={"train": np.arange(4)})


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Model files written by today's code (a grid teacher, r2l and grid students, a finetuned student) and the
    pseudo-data store the students learned from."""
    d = tmp_path_factory.mktemp("files")
    scene = load_scene("builtin", write_blender(d / "scene", seed=0, resolution=RES, n_train=4, n_val=1, n_test=1,
                                                 spp=1))
    train_teacher(scene, _teacher_cfg(), d / "teacher.pt", d / "resume_teacher")
    store = d / "pseudo"
    generate_pseudo_data(BuiltinScene(0).as_teacher(), _scene(), store, n_views=4, seed=0, views_per_shard=4)
    psnr = lambda model: 10.0  # noqa: E731  (validation is not what these files are for)
    train_student([store], _student_cfg(), d / "student.pt", d / "resume_student", val_fn=psnr)
    train_student([store], _student_cfg(family="grid"), d / "grid.pt", d / "resume_grid", val_fn=psnr)
    finetune_student(d / "student.pt", store, store, _student_cfg(), 2, d / "finetuned.pt", d / "resume_ft",
                     val_fn=psnr)
    return {**{m: d / f"{m}.pt" for m in MODELS}, "store": store, "root": d}


def _rays(n: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """n rays (n, 3) from around (0, 0, 4) towards the scene's centre."""
    gen = torch.Generator().manual_seed(0)
    rays_o = torch.tensor([0.0, 0.0, 4.0]) + 0.3 * torch.randn(n, 3, generator=gen)
    rays_d = -rays_o + 0.2 * torch.randn(n, 3, generator=gen)
    return rays_o, rays_d / rays_d.norm(dim=-1, keepdim=True)


def _resave(src: Path, dst: Path, change) -> Path:
    """``src``'s dict with ``change(dict)`` applied, saved to ``dst`` as torch.save writes it."""
    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    change(ckpt)
    torch.save(ckpt, dst)
    return dst


def _render(path: Path) -> torch.Tensor:
    """path's model rendered on :func:`_rays`: (20, 3)."""
    return load_model(path, "cpu").render_rays(*_rays())


# ----------------------------------------------------------------------------- writing


@pytest.mark.parametrize("name", MODELS)
def test_written_files_record_the_format_and_round_trip(files, name):
    raw = load_checkpoint(files[name])
    assert raw["format_version"] == FORMAT_VERSION == 2 and type(raw["format_version"]) is int
    assert describe_model(files[name])["format_version"] == FORMAT_VERSION
    model = load_model(files[name], "cpu")
    assert model.meta["format_version"] == FORMAT_VERSION
    assert torch.equal(model.render_rays(*_rays()), _render(files[name]))


@pytest.mark.parametrize("resume", ["resume_teacher", "resume_student", "resume_grid", "resume_ft"])
def test_written_checkpoints_record_the_format(files, resume):
    checkpoints = sorted((files["root"] / resume).glob("ckpt_*.pt"))
    assert checkpoints and all(load_checkpoint(p)["format_version"] == FORMAT_VERSION for p in checkpoints)


# ----------------------------------------------------------------------------- reading older formats


@pytest.mark.parametrize("name", MODELS)
def test_a_file_of_todays_layout_without_the_key_loads_and_renders_the_same(files, name, tmp_path):
    """Format 1: a file as r2l wrote it before format versions (today's dict without the key)."""
    old = _resave(files[name], tmp_path / "old.pt", lambda ckpt: ckpt.pop("format_version"))
    assert "format_version" not in load_checkpoint(old)
    assert describe_model(old)["format_version"] == 1
    assert torch.equal(_render(old), _render(files[name]))
    if name == "teacher":
        assert load_teacher(old, "cpu").meta["format_version"] == 1
    else:
        assert load_student(old, "cpu").meta["format_version"] == 1
        assert describe_model(old)["family"] == ("grid" if name == "grid" else "r2l")


def _early_student(ckpt: dict) -> None:
    """Today's r2l student as an early file: its network under config ``student``, no family, precision or scene."""
    config = ckpt["config"]
    ckpt["config"] = {"student": config.pop("network"), "amp": False,
                      **{k: v for k, v in config.items() if k not in ("family", "precision", "grid")}}
    for key in ("format_version", "scene"):
        ckpt.pop(key)


def _early_teacher(ckpt: dict) -> None:
    """Today's teacher as an early file: its precision as config ``amp``."""
    ckpt.pop("format_version")
    ckpt["config"]["amp"] = ckpt["config"].pop("precision") == "bf16"


@pytest.mark.parametrize("name", ["teacher", "student"])
def test_early_files_are_format_0_and_render_the_same(files, name, tmp_path):
    early = _resave(files[name], tmp_path / "early.pt", _early_teacher if name == "teacher" else _early_student)
    d = describe_model(early)
    assert d["format_version"] == 0 and d["precision"] == "fp32"
    assert torch.equal(_render(early), _render(files[name]))
    if name == "student":
        assert d["family"] == "r2l" and d["scene"] is None and model_camera(load_model(early, "cpu")) is None
        assert d["network"] == dataclasses.asdict(NET)


# ----------------------------------------------------------------------------- refusing newer formats


@pytest.mark.parametrize("name", MODELS)
def test_a_newer_format_is_refused_in_one_line_naming_the_file(files, name, tmp_path, capsys):
    newer = _resave(files[name], tmp_path / "newer.pt", lambda ckpt: ckpt.update(format_version=999))
    message = (f"{newer}: file format 999 is newer than this r2l reads (format {FORMAT_VERSION} and older): it was "
               "written by a newer r2l; update r2l to read it")
    loader = load_teacher if name == "teacher" else load_student
    for read in (load_model, describe_model, loader):
        with pytest.raises(DataError) as err:
            read(newer)
        assert str(err.value) == message
    assert main(["info", str(newer)]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [f"r2l: error: {message}"]


@pytest.mark.parametrize("value", ["2", 2.0, True, -1, None])
def test_a_format_that_is_no_number_is_refused(files, value, tmp_path):
    bad = _resave(files["student"], tmp_path / "bad.pt", lambda ckpt: ckpt.update(format_version=value))
    message = f"bad.pt: format_version {value!r} is not a file format number"
    with pytest.raises(DataError, match=re.escape(message)):
        load_model(bad)


# ----------------------------------------------------------------------------- checkpoints


def _strip_versions(resume_dir: Path, version: int | None = None) -> None:
    """Rewrite every checkpoint of ``resume_dir`` without ``format_version`` (or with ``version``)."""
    for path in resume_dir.glob("ckpt_*.pt"):
        _resave(path, path, lambda ckpt: ckpt.pop("format_version") if version is None else
                ckpt.update(format_version=version))


def test_student_resumes_from_unversioned_checkpoints_bit_for_bit(files, tmp_path):
    psnr = lambda model: 10.0  # noqa: E731
    cfg = _student_cfg(steps=6)
    train_student([files["store"]], cfg, tmp_path / "full.pt", tmp_path / "rf", val_fn=psnr)
    assert not train_student([files["store"]], cfg, tmp_path / "resumed.pt", tmp_path / "r", val_fn=psnr,
                             max_steps=4)["finished"]
    _strip_versions(tmp_path / "r")
    train_student([files["store"]], cfg, tmp_path / "resumed.pt", tmp_path / "r", val_fn=psnr)
    full, resumed = load_checkpoint(tmp_path / "full.pt"), load_checkpoint(tmp_path / "resumed.pt")
    assert full["weights"].keys() == resumed["weights"].keys()
    assert all(torch.equal(full["weights"][k], resumed["weights"][k]) for k in full["weights"])
    assert full["metrics"]["loss_history"] == resumed["metrics"]["loss_history"]


class Killed(Exception):
    pass


def _kill_at(step_to_die: int):
    def on_step(step, loss):
        if step == step_to_die:
            raise Killed()

    return on_step


def test_teacher_resumes_from_unversioned_checkpoints_bit_for_bit(files, tmp_path):
    scene = load_scene("builtin", files["root"] / "scene")
    train_teacher(scene, _teacher_cfg(4), tmp_path / "full.pt", tmp_path / "rf")
    with pytest.raises(Killed):
        train_teacher(scene, _teacher_cfg(4), tmp_path / "resumed.pt", tmp_path / "r", on_step=_kill_at(3))
    _strip_versions(tmp_path / "r")
    train_teacher(scene, _teacher_cfg(4), tmp_path / "resumed.pt", tmp_path / "r")
    full, resumed = load_checkpoint(tmp_path / "full.pt"), load_checkpoint(tmp_path / "resumed.pt")
    assert all(torch.equal(full["weights"][k], resumed["weights"][k]) for k in full["weights"])


def test_resuming_from_a_newer_checkpoint_is_refused(files, tmp_path):
    psnr = lambda model: 10.0  # noqa: E731
    train_student([files["store"]], _student_cfg(), tmp_path / "s.pt", tmp_path / "r", val_fn=psnr, max_steps=2)
    _strip_versions(tmp_path / "r", 999)
    (newest,) = (tmp_path / "r").glob("ckpt_*.pt")
    message = f"{newest}: file format 999 is newer than this r2l reads (format {FORMAT_VERSION} and older)"
    with pytest.raises(DataError, match="^" + re.escape(message)):
        train_student([files["store"]], _student_cfg(), tmp_path / "s.pt", tmp_path / "r", val_fn=psnr)


# ----------------------------------------------------------------------------- one place decides


def test_no_version_sniffing_is_left_in_the_package():
    """The format decides how a file is read: no code reads files "of r2l 0.1" by their keys any more."""
    package = Path(__file__).resolve().parents[1] / "r2l"
    hits = [f"{p.relative_to(package)}:{n}" for p in sorted(package.rglob("*.py"))
            for n, line in enumerate(p.read_text().splitlines(), 1) if "r2l 0.1" in line]
    assert hits == []
