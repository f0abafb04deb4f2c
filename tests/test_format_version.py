"""Model and checkpoint files record their layout as ``format_version``: today's (format 3) files round-trip, with
one checkpoint layout for every stage and the same metric names and loss rows in teacher and student files; files
of format 2, of its layout without the key (format 1) and early files (format 0) load and render as before, in
today's names; a newer format is refused in one line naming the file; and a resume reads the teacher's and the
student's checkpoints of formats 1 and 2 bit for bit."""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import shutil
from pathlib import Path

import pytest
import torch
from helpers import TINY_GRID_NET, TINY_NET, Killed, analytic_stores, builtin_orbit, kill_at, quick_grid_teacher

from r2l.cli import main
from r2l.core.checkpoint import CHECKPOINT_KEYS, FORMAT_VERSION, load_checkpoint
from r2l.core.errors import DataError, R2LError
from r2l.core.metrics import psnr_from_mse
from r2l.data.registry import load_scene
from r2l.models.load import describe_model, load_model, model_camera, read_model_file
from r2l.models.students import load_student
from r2l.models.teacher import load_teacher
from r2l.stages.student import DistillConfig, finetune_student, train_student
from r2l.stages.teacher import train_teacher

RES = 16
MODELS = ("teacher", "student", "grid", "finetuned")
RESUMES = {"resume_teacher": ("teacher", "grid"), "resume_student": ("student", "student"),
           "resume_grid": ("student", "student"), "resume_ft": ("student", "finetuned")}  # -> (stage, kind)
# the metrics every model file records, teacher and student alike (r2l.stages.loop.common_metrics)
COMMON_METRICS = {"val_psnr", "val_step", "loss_history", "final_loss", "val_history", "train_seconds",
                  "total_train_seconds", "base_step", "final_step", "device", "device_name", "processes"}
TEACHER_METRICS_V2 = ("val_psnr", "train_seconds", "steps", "device", "device_name", "loss_history", "val_history")

pytestmark = pytest.mark.usefixtures("quiet_logging")


def _teacher_cfg(steps: int = 2):
    return quick_grid_teacher({"steps": steps, "ckpt_every": 2})


def _student_cfg(**kw) -> DistillConfig:
    base = dict(steps=4, batch_rays=128, warmup_steps=1, lr_decay_steps=100, val_every=0, val_views=1, ckpt_every=2,
                log_every=1, device="cpu", chunk=1024, network=TINY_NET, grid=TINY_GRID_NET)
    return DistillConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Model files written by today's code (a grid teacher, r2l and grid students, a finetuned student) and the
    pseudo-data store the students learned from."""
    d = tmp_path_factory.mktemp("files")
    scene = builtin_orbit(d / "scene", n_train=4, n_val=1, resolution=RES, spp=1)
    train_teacher(scene, _teacher_cfg(), d / "teacher.pt", d / "resume_teacher")
    store = analytic_stores(d, side=RES, n_train=4, pseudo=(4, 4))["pseudo"]
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


def _model_as_format_2(ckpt: dict) -> None:
    """Today's model file as format 2 wrote it: a teacher's metrics only those of then, ``final_step`` as
    ``steps``, loss rows ``[step index, loss, train PSNR]``; a student's loss rows ``[steps done, loss]``."""
    metrics = ckpt["metrics"]
    if ckpt["kind"] in ("nerf", "grid"):
        metrics["steps"] = metrics.pop("final_step")
        metrics["loss_history"] = [[step - 1, loss, psnr] for step, loss, psnr in metrics["loss_history"]]
        ckpt["metrics"] = {k: metrics[k] for k in TEACHER_METRICS_V2}
    else:
        metrics["loss_history"] = [[step, loss] for step, loss, _ in metrics["loss_history"]]
    ckpt["format_version"] = 2


def _model_as_format_1(ckpt: dict) -> None:
    """Today's model file as r2l wrote it before format versions: format 2's dict without ``format_version``."""
    _model_as_format_2(ckpt)
    ckpt.pop("format_version")


def _checkpoint_as_format_2(ckpt: dict) -> None:
    """Today's checkpoint as format 2 wrote it: a teacher's ``model``, loop state at the top level and loss rows
    ``[step index, loss, train PSNR]``; a student's ``loop`` with its step and loss rows ``[steps done, loss]``,
    ``best`` and ``pool``."""
    new = dict(ckpt)
    ckpt.clear()
    loop = {k: v for k, v in new["loop"].items() if k != "best"}
    common = {k: new[k] for k in ("optimizer", "config", "rng")}
    if new["stage"] == "teacher":
        history = [[step - 1, loss, psnr] for step, loss, psnr in new["history"]]
        ckpt.update(model=new["weights"], **common, step=new["step"], train_seconds=loop["train_seconds"],
                    history=history, val_history=loop["val_history"], curve=loop["curve"])
    else:
        history = [[step, loss] for step, loss, _ in new["history"]]
        ckpt.update(weights=new["weights"], **common, loop={**loop, "step": new["step"], "history": history},
                    best=new["loop"]["best"], pool=new["extra"]["pool"])
    ckpt["format_version"] = 2


# ----------------------------------------------------------------------------- writing


@pytest.mark.parametrize("name", MODELS)
def test_written_files_record_the_format_and_round_trip(files, name):
    raw = load_checkpoint(files[name])
    assert raw["format_version"] == FORMAT_VERSION == 3 and type(raw["format_version"]) is int
    assert describe_model(files[name])["format_version"] == FORMAT_VERSION
    read = read_model_file(files[name])  # format 3 is today's layout: read as written
    assert read.keys() == raw.keys() and read["metrics"] == raw["metrics"] and read["config"] == raw["config"]
    assert all(torch.equal(read["weights"][k], w) for k, w in raw["weights"].items())
    model = load_model(files[name], "cpu")
    assert model.meta["format_version"] == FORMAT_VERSION
    assert torch.equal(model.render_rays(*_rays()), _render(files[name]))


@pytest.mark.parametrize("name", MODELS)
def test_teacher_and_student_files_share_metric_names_and_loss_rows(files, name):
    """Every model file has the common metrics, its loss rows ``[steps done, loss, train PSNR]`` (teacher: 2 steps
    logged every step; students: 4 steps, the finetuned one 2 steps from step 4)."""
    raw = load_checkpoint(files[name])
    metrics, rows = raw["metrics"], raw["metrics"]["loss_history"]
    assert COMMON_METRICS <= metrics.keys()
    steps = {"teacher": [1, 2], "student": [1, 2, 3, 4], "grid": [1, 2, 3, 4], "finetuned": [5, 6]}[name]
    assert [row[0] for row in rows] == steps and metrics["final_step"] == steps[-1] and metrics["processes"] == 1
    assert metrics["base_step"] == steps[0] - 1 and metrics["final_loss"] == rows[-1][1]
    assert all(len(row) == 3 and math.isfinite(row[1]) and row[2] > 0 for row in rows)
    if name != "teacher":  # a student's loss is its colour MSE: the train PSNR is the loss's
        assert [row[2] for row in rows] == [psnr_from_mse(row[1]) for row in rows]


@pytest.mark.parametrize("resume", sorted(RESUMES))
def test_written_checkpoints_have_the_one_layout(files, resume):
    checkpoints = sorted((files["root"] / resume).glob("ckpt_*.pt"))
    assert checkpoints
    for path in checkpoints:
        ckpt = load_checkpoint(path)
        assert ckpt["format_version"] == FORMAT_VERSION and set(ckpt) == {*CHECKPOINT_KEYS, "format_version"}
        assert (ckpt["stage"], ckpt["kind"]) == RESUMES[resume] and ckpt["step"] == int(path.stem[5:])
        assert set(ckpt["loop"]) == {"base_step", "train_seconds", "init_seconds", "val_history", "curve", "best"}
        assert ckpt["extra"].keys() == (set() if resume == "resume_teacher" else {"pool"})
        assert [len(row) for row in ckpt["history"]] == [3] * len(ckpt["history"])


def test_a_training_checkpoint_is_refused_as_a_model_file_in_one_line(files):
    newest = sorted((files["root"] / "resume_grid").glob("ckpt_*.pt"))[-1]
    message = f"{newest}: a training checkpoint (resume point) of the student stage, not a model file"
    for read in (load_model, describe_model, load_student):
        with pytest.raises(DataError) as err:
            read(newest)
        assert str(err.value) == message


# ----------------------------------------------------------------------------- reading older formats


@pytest.mark.parametrize("name", MODELS)
def test_a_format_2_file_loads_in_todays_names_and_renders_the_same(files, name, tmp_path):
    old = _resave(files[name], tmp_path / "v2.pt", _model_as_format_2)
    assert describe_model(old)["format_version"] == 2 and load_model(old, "cpu").meta["format_version"] == 2
    assert torch.equal(_render(old), _render(files[name]))
    today, read = load_checkpoint(files[name])["metrics"], read_model_file(old)["metrics"]
    assert read == {k: today[k] for k in read}  # today's names and rows, those it has
    assert read["loss_history"] == today["loss_history"] and read["final_step"] == today["final_step"]
    assert set(today) - set(read) == ({"val_step", "final_loss", "total_train_seconds", "base_step", "processes"}
                                      if name == "teacher" else set())  # what format 2 did not record is absent


@pytest.mark.parametrize("name", MODELS)
def test_a_file_of_format_2s_layout_without_the_key_loads_and_renders_the_same(files, name, tmp_path):
    """Format 1: a file as r2l wrote it before format versions (format 2's dict without the key)."""
    old = _resave(files[name], tmp_path / "old.pt", _model_as_format_1)
    assert "format_version" not in load_checkpoint(old)
    assert describe_model(old)["format_version"] == 1
    assert torch.equal(_render(old), _render(files[name]))
    if name == "teacher":
        assert load_teacher(old, "cpu").meta["format_version"] == 1
    else:
        assert load_student(old, "cpu").meta["format_version"] == 1
        assert describe_model(old)["family"] == ("grid" if name == "grid" else "r2l")


def _early_student(ckpt: dict) -> None:
    """Today's r2l student as an early file: its network under config ``student``, no family, precision or scene;
    format 2's metrics."""
    _model_as_format_2(ckpt)
    config = ckpt["config"]
    ckpt["config"] = {"student": config.pop("network"), "amp": False,
                      **{k: v for k, v in config.items() if k not in ("family", "precision", "grid")}}
    for key in ("format_version", "scene"):
        ckpt.pop(key)


def _early_teacher(ckpt: dict) -> None:
    """Today's teacher as an early file: its precision as config ``amp``; format 2's metrics."""
    _model_as_format_2(ckpt)
    ckpt.pop("format_version")
    ckpt["config"]["amp"] = ckpt["config"].pop("precision") == "bf16"


@pytest.mark.parametrize("name", ["teacher", "student"])
def test_early_files_are_format_0_and_render_the_same(files, name, tmp_path):
    early = _resave(files[name], tmp_path / "early.pt", _early_teacher if name == "teacher" else _early_student)
    d = describe_model(early)
    assert d["format_version"] == 0 and d["precision"] == "fp32"
    assert torch.equal(_render(early), _render(files[name]))
    assert read_model_file(early)["metrics"]["loss_history"] == load_checkpoint(files[name])["metrics"]["loss_history"]
    if name == "student":
        assert d["family"] == "r2l" and d["scene"] is None and model_camera(load_model(early, "cpu")) is None
        assert d["network"] == dataclasses.asdict(TINY_NET)


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


def _set_versions(resume_dir: Path, version: int) -> None:
    """Rewrite every checkpoint of ``resume_dir`` with ``format_version`` = ``version``."""
    for path in resume_dir.glob("ckpt_*.pt"):
        _resave(path, path, lambda ckpt: ckpt.update(format_version=version))


def _as_old_checkpoints(resume_dir: Path, version: int) -> None:
    """Rewrite every checkpoint of ``resume_dir`` in its stage's layout of format 2 (``version`` 2) or of format 1
    (the same without ``format_version``)."""
    def change(ckpt: dict) -> None:
        _checkpoint_as_format_2(ckpt)
        if version == 1:
            ckpt.pop("format_version")

    for path in resume_dir.glob("ckpt_*.pt"):
        _resave(path, path, change)
        assert load_checkpoint(path).get("format_version", 1) == version and "stage" not in load_checkpoint(path)


@pytest.mark.parametrize("version", [1, 2])
def test_student_resumes_from_older_checkpoints_bit_for_bit(files, tmp_path, caplog, version):
    psnr = lambda model: 10.0  # noqa: E731
    cfg = _student_cfg(steps=6)
    train_student([files["store"]], cfg, tmp_path / "full.pt", tmp_path / "rf", val_fn=psnr)
    assert not train_student([files["store"]], cfg, tmp_path / "resumed.pt", tmp_path / "r", val_fn=psnr,
                             max_steps=4)["finished"]
    _as_old_checkpoints(tmp_path / "r", version)
    with caplog.at_level(logging.INFO, logger="r2l"):
        train_student([files["store"]], cfg, tmp_path / "resumed.pt", tmp_path / "r", val_fn=psnr)
    assert "resuming student from step 4 of" in caplog.text and "unusable" not in caplog.text
    full, resumed = load_checkpoint(tmp_path / "full.pt"), load_checkpoint(tmp_path / "resumed.pt")
    assert full["weights"].keys() == resumed["weights"].keys()
    assert all(torch.equal(full["weights"][k], resumed["weights"][k]) for k in full["weights"])
    assert full["metrics"]["loss_history"] == resumed["metrics"]["loss_history"]
    assert full["metrics"]["val_history"] == resumed["metrics"]["val_history"]


@pytest.mark.parametrize("version", [1, 2])
def test_teacher_resumes_from_older_checkpoints_bit_for_bit(files, tmp_path, caplog, version):
    scene = load_scene("builtin", files["root"] / "scene")
    train_teacher(scene, _teacher_cfg(4), tmp_path / "full.pt", tmp_path / "rf")
    with pytest.raises(Killed):
        train_teacher(scene, _teacher_cfg(4), tmp_path / "resumed.pt", tmp_path / "r", on_step=kill_at(3))
    _as_old_checkpoints(tmp_path / "r", version)
    with caplog.at_level(logging.INFO, logger="r2l"):
        train_teacher(scene, _teacher_cfg(4), tmp_path / "resumed.pt", tmp_path / "r")
    assert "resuming teacher from step 2 of" in caplog.text and "unusable" not in caplog.text
    full, resumed = load_checkpoint(tmp_path / "full.pt"), load_checkpoint(tmp_path / "resumed.pt")
    assert all(torch.equal(full["weights"][k], resumed["weights"][k]) for k in full["weights"])
    assert full["metrics"]["loss_history"] == resumed["metrics"]["loss_history"]


def test_another_stages_checkpoints_are_refused_in_one_line(files, tmp_path):
    shutil.copytree(files["root"] / "resume_teacher", tmp_path / "r")
    message = (f"{tmp_path / 'r'}: holds checkpoints of the teacher stage, not of the student; use another resume "
               "folder or delete it")
    with pytest.raises(R2LError) as err:
        train_student([files["store"]], _student_cfg(), tmp_path / "s.pt", tmp_path / "r", val_fn=lambda m: 10.0)
    assert str(err.value) == message


def test_resuming_from_a_newer_checkpoint_is_refused(files, tmp_path):
    psnr = lambda model: 10.0  # noqa: E731
    train_student([files["store"]], _student_cfg(), tmp_path / "s.pt", tmp_path / "r", val_fn=psnr, max_steps=2)
    _set_versions(tmp_path / "r", 999)
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
