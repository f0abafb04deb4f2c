"""Training histories as CSV (round trip, what the teacher and student loops record, resume) and the curves figure."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pandas as pd
import pytest
from helpers import Killed, analytic_stores, kill_at, tiny_student, tiny_teacher

from r2l.core.errors import DataError
from r2l.core.metrics import psnr_from_mse
from r2l.data.views import ViewStore
from r2l.report.curves import (
    COLORS,
    COLUMNS,
    DPI,
    EXTRA_COLORS,
    FIGSIZE,
    curve_styles,
    curves_figure,
    draw_curves,
    legend_labels,
    read_history,
    record_row,
    write_history,
)
from r2l.stages.student import DistillConfig, finetune_student, lr_at, store_psnr, train_student
from r2l.stages.teacher import train_teacher


# ----------------------------------------------------------------------------- the CSV itself


def test_record_row_merges_a_validation_into_its_step():
    rows = []
    record_row(rows, 0, val_psnr=12.5, seconds=0.0)
    record_row(rows, 1, loss=0.01, train_psnr=20.0, lr=5e-4, seconds=0.25)
    record_row(rows, 1, val_psnr=21.0, seconds=0.25, loss=None)  # same step: merged; None does not overwrite
    record_row(rows, 11, loss=0.001, train_psnr=30.0, lr=4e-4, seconds=2.5)
    assert rows == [
        {"step": 0, "loss": None, "train_psnr": None, "val_psnr": 12.5, "lr": None, "seconds": 0.0},
        {"step": 1, "loss": 0.01, "train_psnr": 20.0, "val_psnr": 21.0, "lr": 5e-4, "seconds": 0.25},
        {"step": 11, "loss": 0.001, "train_psnr": 30.0, "val_psnr": None, "lr": 4e-4, "seconds": 2.5},
    ]
    with pytest.raises(ValueError, match="psnr"):
        record_row(rows, 12, psnr=1.0)


def test_csv_round_trip(tmp_path):
    rows = []
    record_row(rows, 0, val_psnr=12.5, seconds=0.0)
    record_row(rows, 1, loss=0.01, train_psnr=20.0, lr=5e-4, seconds=0.25)
    record_row(rows, 1, val_psnr=21.0)
    record_row(rows, 11, loss=0.001, train_psnr=30.0, lr=4e-4, seconds=2.5)
    path = write_history(tmp_path / "stage" / "history.csv", rows)
    assert path.read_text() == (
        "step,loss,train_psnr,val_psnr,lr,seconds\n"
        "0,,,12.5,,0\n"
        "1,0.01,20,21,0.0005,0.25\n"
        "11,0.001,30,,0.0004,2.5\n"
    )
    assert [p.name for p in path.parent.iterdir()] == ["history.csv"]  # no temp file left
    frame = pd.read_csv(path)
    assert list(frame.columns) == list(COLUMNS) and frame["step"].tolist() == [0, 1, 11]
    np.testing.assert_allclose(frame["loss"], [np.nan, 0.01, 0.001])
    np.testing.assert_allclose(frame["val_psnr"], [12.5, 21.0, np.nan])
    np.testing.assert_allclose(frame["lr"], [np.nan, 5e-4, 4e-4])
    np.testing.assert_allclose(frame["seconds"], [0.0, 0.25, 2.5])
    pd.testing.assert_frame_equal(read_history(path), frame)
    assert write_history(tmp_path / "empty.csv", []).read_text() == "step,loss,train_psnr,val_psnr,lr,seconds\n"


def test_read_history_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_history(tmp_path / "missing.csv")
    (tmp_path / "bad.csv").write_text("step,loss\n1,0.5\n")
    with pytest.raises(DataError, match="columns"):
        read_history(tmp_path / "bad.csv")


# ----------------------------------------------------------------------------- the teacher loop

def teacher_cfg():
    """The tiny NeRF teacher validating every 20 steps, without the learning check."""
    return tiny_teacher("nerf", {"val_every": 20, "check_learned": False})


@pytest.fixture(scope="module")
def teacher_csv(orbit_scene, tmp_path_factory):
    """An uninterrupted tiny NeRF teacher run (40 steps): its history.csv."""
    d = tmp_path_factory.mktemp("teacher")
    train_teacher(orbit_scene, teacher_cfg(), d / "model.pt", d / "resume", history_path=d / "history.csv")
    return d / "history.csv"


def test_teacher_history_rows(teacher_csv):
    h = read_history(teacher_csv)
    # a row every log_every (5) steps from the first, the last step, and the validations at 20 and 40 (final)
    assert h["step"].tolist() == [1, 6, 11, 16, 20, 21, 26, 31, 36, 40]
    validated = h["val_psnr"].notna()
    assert h["step"][validated].tolist() == [20, 40]
    assert h["loss"][~validated].notna().all() and h.loc[h["step"] == 20, "loss"].isna().all()
    assert h.loc[h["step"] == 40, "loss"].notna().all()  # the last logged step carries the final validation
    trained = h["loss"].notna()
    np.testing.assert_allclose(h["lr"][trained], 1e-2 * 0.1 ** ((h["step"][trained] - 1) / 1000), rtol=1e-6)
    assert (h["train_psnr"][trained] > 5).all() and (h["loss"][trained] > 0).all()
    assert h["seconds"].notna().all() and (np.diff(h["seconds"]) >= 0).all() and h["seconds"].iloc[-1] > 0


def test_teacher_resumed_csv_equals_the_uninterrupted_one(orbit_scene, teacher_csv, tmp_path):
    out, csv = tmp_path / "model.pt", tmp_path / "history.csv"
    with pytest.raises(Killed):
        train_teacher(orbit_scene, teacher_cfg(), out, tmp_path / "resume", on_step=kill_at(25), history_path=csv)
    ref = read_history(teacher_csv)
    partial = read_history(csv)  # written with the checkpoint at step 20
    assert partial["step"].tolist() == [s for s in ref["step"] if s <= 20]
    train_teacher(orbit_scene, teacher_cfg(), out, tmp_path / "resume", history_path=csv)
    resumed = read_history(csv)
    cols = ["step", "loss", "train_psnr", "val_psnr", "lr"]
    pd.testing.assert_frame_equal(resumed[cols], ref[cols], rtol=1e-5)
    assert (np.diff(resumed["seconds"]) >= 0).all()


# ----------------------------------------------------------------------------- the student loop

@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """Pseudo views (12) and validation views (2) of the built-in scene's analytic ground truth."""
    return analytic_stores(tmp_path_factory.mktemp("stores"), side=16, n_train=4, pseudo=(12, 12), val=(2, 2))


def student_cfg(**over) -> DistillConfig:
    """The tiny student validating every 3 steps and logging every 2, with ``over``."""
    return tiny_student({"val_every": 3, "log_every": 2, **over})


@pytest.fixture(scope="module")
def student_run(stores, tmp_path_factory):
    """An uninterrupted tiny distillation (8 steps) and a 4-step finetuning of it: their folder."""
    d = tmp_path_factory.mktemp("student")
    train_student([stores["pseudo"]], student_cfg(), d / "student.pt", d / "rs", val_store=stores["val"],
                  history_path=d / "student.csv")
    finetune_student(d / "student.pt", stores["pseudo"], stores["val"], student_cfg(val_every=2), 4, d / "ft.pt",
                     d / "rf", history_path=d / "finetuned.csv")
    return d


def test_student_history_rows(student_run):
    h = read_history(student_run / "student.csv")
    # validation before training (0), every 3 steps and at the end; a row every 2 steps from the first and the last
    assert h["step"].tolist() == [0, 1, 3, 5, 6, 7, 8]
    assert h["step"][h["val_psnr"].notna()].tolist() == [0, 3, 6, 8]
    assert h["step"][h["loss"].notna()].tolist() == [1, 3, 5, 7, 8]
    trained = h["loss"].notna()
    np.testing.assert_allclose(h["train_psnr"][trained], [psnr_from_mse(x) for x in h["loss"][trained]], rtol=1e-6)
    np.testing.assert_allclose(h["lr"][trained], [lr_at(s - 1, student_cfg()) for s in h["step"][trained]], rtol=1e-6)
    assert h.loc[0, "seconds"] == 0.0 and (np.diff(h["seconds"]) >= 0).all()
    ft = read_history(student_run / "finetuned.csv")
    assert ft["step"].tolist() == [8, 9, 10, 11, 12]  # continues the student's steps; validated before it starts
    assert ft["step"][ft["val_psnr"].notna()].tolist() == [8, 10, 12] and np.isnan(ft.loc[0, "loss"])
    assert ft.loc[0, "val_psnr"] == pytest.approx(h["val_psnr"].iloc[-1], abs=1e-5)  # the same weights, same views


def test_student_resumed_csv_equals_the_uninterrupted_one(stores, student_run, tmp_path):
    calls = []

    def dies_at_step_6(model):  # the third validation is the one after step 6; the last checkpoint is at step 3
        calls.append(1)
        if len(calls) == 3:
            raise Killed
        return store_psnr(model, val, 2.0, 6.0, 0, 1024)

    val = ViewStore(stores["val"])
    csv = tmp_path / "history.csv"
    with pytest.raises(Killed):
        train_student([stores["pseudo"]], student_cfg(), tmp_path / "s.pt", tmp_path / "r", val_fn=dies_at_step_6,
                      history_path=csv)
    assert read_history(csv)["step"].tolist() == [0, 1, 3]
    train_student([stores["pseudo"]], student_cfg(), tmp_path / "s.pt", tmp_path / "r", val_store=stores["val"],
                  history_path=csv)
    ref, resumed = read_history(student_run / "student.csv"), read_history(csv)
    cols = ["step", "loss", "train_psnr", "val_psnr", "lr"]
    pd.testing.assert_frame_equal(resumed[cols], ref[cols], rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- the figure


def _colour_pixels(img: np.ndarray, hex_colour: str) -> int:
    rgb = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(img[..., :3].astype(int) - rgb).max(axis=-1) <= 40).sum())


def test_curves_figure(teacher_csv, student_run, tmp_path):
    out = curves_figure({"teacher": teacher_csv, "student": student_run / "student.csv",
                         "finetuned": student_run / "finetuned.csv"}, tmp_path / "fig" / "curves.png", title="toy")
    img = iio.imread(out)
    assert img.shape[:2] == (round(FIGSIZE[1] * DPI), round(FIGSIZE[0] * DPI))
    assert img[..., :3].std() > 10 and len(np.unique(img[..., :3].reshape(-1, 3), axis=0)) > 50  # not blank
    for model, colour in COLORS.items():
        assert _colour_pixels(img, colour) > 100, model  # every stage is drawn in its colour
    assert [p.name for p in out.parent.iterdir()] == ["curves.png"]
    only = curves_figure({"teacher": teacher_csv}, tmp_path / "teacher_only.png")  # any subset of the stages
    assert _colour_pixels(iio.imread(only), COLORS["student"]) < _colour_pixels(img, COLORS["student"])
    with pytest.raises(ValueError, match="unknown model"):
        curves_figure({"nerf": teacher_csv}, tmp_path / "x.png")


def test_legend_names_the_student_family(tmp_path):
    """Hand-made histories: the legend says ``student (grid)`` / ``finetuned (grid)`` when the family is given."""
    models = ["teacher", "student", "finetuned"]
    assert legend_labels(models) == models
    assert legend_labels(models, {"student": "grid", "finetuned": "grid"}) == [
        "teacher", "student (grid)", "finetuned (grid)"]
    assert legend_labels(models, {"teacher": "grid", "student": "r2l", "finetuned": None}) == [
        "teacher", "student (r2l)", "finetuned"]
    paths = {}
    for k, model in enumerate(models):
        rows = []
        for step in range(0, 50, 5):
            record_row(rows, 50 * k + step, loss=0.1 / (step + 1), train_psnr=10 + step / 5, lr=1e-3, seconds=step)
        record_row(rows, 50 * k + 45, val_psnr=15.0 + k)
        paths[model] = write_history(tmp_path / f"{model}.csv", rows)
    plain = iio.imread(curves_figure(paths, tmp_path / "plain.png", title="toy"))
    named = iio.imread(curves_figure(paths, tmp_path / "grid.png", title="toy",
                                     families={"student": "grid", "finetuned": "grid"}))
    assert plain.shape == named.shape and not np.array_equal(plain, named)  # the legend text differs
    for model, colour in COLORS.items():
        assert _colour_pixels(named, colour) > 100, model


def _hand_history(path, first_step: int, seconds_per_step: float, val: float):
    """Ten logged rows from ``first_step`` (every 5 steps) and one validation at the last; seconds in proportion."""
    rows = []
    for step in range(0, 50, 5):
        record_row(rows, first_step + step, loss=0.1 / (step + 1), train_psnr=10 + step / 5, lr=1e-3,
                   seconds=seconds_per_step * step)
    record_row(rows, first_step + 45, val_psnr=val)
    return write_history(path, rows)


def test_extra_family_curves(tmp_path):
    """An extra family (r2l) beside the primary (grid): two more curves in every panel, own colours, dashed,
    labelled ``student (r2l)``, its finetuning's clock offset by its own student's end."""
    paths = {"teacher": _hand_history(tmp_path / "t.csv", 0, 1.0, 15.0),
             "student_r2l": _hand_history(tmp_path / "sr.csv", 50, 4.0, 14.0),  # ends at 180 s = 3 min
             "student": _hand_history(tmp_path / "s.csv", 50, 1.0, 16.0),  # ends at 45 s = 0.75 min
             "finetuned": _hand_history(tmp_path / "f.csv", 95, 1.0, 17.0),
             "finetuned_r2l": _hand_history(tmp_path / "fr.csv", 95, 2.0, 13.0)}
    fig = draw_curves(paths, "toy", families={"student": "grid", "finetuned": "grid"})
    ax_step, ax_min, ax_loss = fig.axes[:3]
    assert (len(ax_step.lines), len(ax_min.lines), len(ax_loss.lines)) == (10, 10, 5)  # 2 + 2 + 1 per curve
    labels = ["teacher", "student (grid)", "finetuned (grid)", "student (r2l)", "finetuned (r2l)"]
    assert [ln.get_label() for ln in ax_loss.lines] == labels
    assert [t.get_text() for t in ax_step.get_legend().get_texts()] == labels
    assert [ln.get_color() for ln in ax_loss.lines] == [*COLORS.values(), *EXTRA_COLORS[:2]]
    assert [ln.get_linestyle() for ln in ax_loss.lines] == ["-", "-", "-", "--", "--"]
    # PSNR against minutes: the validation marks (second line of each curve) at the offset end of each stage
    val_minutes = [float(ax_min.lines[2 * k + 1].get_xdata()[0]) for k in range(5)]
    assert val_minutes == pytest.approx([0.75, 0.75, 0.75 + 0.75, 3.0, 3.0 + 1.5])
    png = iio.imread(curves_figure(paths, tmp_path / "curves.png", title="toy"))
    for colour in (*COLORS.values(), *EXTRA_COLORS[:2]):
        assert _colour_pixels(png, colour) > 100, colour
    for bad in ("teacher_r2l", "student_", "nerf"):
        with pytest.raises(ValueError, match="unknown model"):
            curves_figure({"teacher": paths["teacher"], bad: paths["student"]}, tmp_path / "x.png")


def test_curve_styles_order_and_colours():
    keys = ["finetuned_r2l", "teacher", "student_mlp", "student_r2l", "student"]
    curves = curve_styles(keys, {"student": "grid"})
    # the primary first, then each extra family in order of first appearance: its student, then its finetuned
    assert [c.key for c in curves] == ["teacher", "student", "student_r2l", "finetuned_r2l", "student_mlp"]
    assert [c.label for c in curves] == ["teacher", "student (grid)", "student (r2l)", "finetuned (r2l)",
                                         "student (mlp)"]
    assert [c.model for c in curves] == ["teacher", "student", "student", "finetuned", "student"]
    assert [c.color for c in curves] == [COLORS["teacher"], COLORS["student"], *EXTRA_COLORS[:3]]
    assert len({c.color for c in curves}) == 5
    assert legend_labels(["student_r2l", "finetuned"], {"finetuned": "grid"}) == ["student (r2l)", "finetuned (grid)"]
