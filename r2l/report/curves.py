"""Training curves: each training stage's history as a CSV, and one figure of them per scene.

A training loop keeps its history as a list of rows (dicts with the keys :data:`COLUMNS`) and adds to
it with :func:`record_row`; :func:`write_history` writes it as ``history.csv`` beside the model
(``results/{scene}/{teacher,student,finetuned}/history.csv``). The columns:

- ``step``: optimiser steps taken when the row was recorded (the global step: finetuning continues
  the student's count, so its first row is the student's last step).
- ``loss``: the training loss of step ``step``'s batch, computed before that step's update (teacher:
  coarse + fine colour MSE for NeRF, MSE + regulariser for the grid; student and finetuning: colour MSE
  over the fresh + hard-pool rays).
- ``train_psnr``: the TRAINING-BATCH PSNR in dB of that step (teacher: of the final image's colour MSE;
  student: ``psnr_from_mse(loss)``, on fresh + hard rays, so it reads below the validation PSNR once
  the hard pool is in use). It is noisy and measured on seen rays: the validation PSNR is the score.
- ``val_psnr``: mean per-image PSNR in dB of the validation views, on rows where the stage validated
  (empty elsewhere).
- ``lr``: the learning rate of that step (the grid teacher: its grid parameters' rate; its network's
  rate moves in proportion).
- ``seconds``: this stage's training seconds so far (validation time excluded, accumulated over
  resumes).

A row is recorded every ``log_every`` steps (the first and the last step included) and at every
validation (the student's and finetuning's before their first step too); a validation at a logged step
shares its row. Missing values are empty cells. The stages rewrite the CSV at every checkpoint, so a
long run can be watched, and keep the rows in their checkpoints, so a resumed run writes them all.

:func:`curves_figure` draws a scene's three CSVs side by side (PSNR against steps, PSNR against
training minutes, loss against steps on a log scale), with matplotlib; the legend names the student and
finetuned curves with their student family when given (``student (grid)``). Extra student families trained
beside the primary (``results/{scene}/student_{family}/history.csv``, ``finetuned_{family}/``) are drawn in the
same panels, dashed, in colours of their own (:func:`curve_styles`).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pandas as pd

from r2l.core.atomic import atomic_write, atomic_write_text
from r2l.core.errors import DataError
from r2l.report.tables import model_label

COLUMNS = ("step", "loss", "train_psnr", "val_psnr", "lr", "seconds")
MODELS = ("teacher", "student", "finetuned")
COLORS = {"teacher": "#1f77b4", "student": "#ff7f0e", "finetuned": "#2ca02c"}  # matplotlib's first three
EXTRA_MODELS = ("student", "finetuned")  # an extra student family's histories: student_FAMILY, finetuned_FAMILY
EXTRA_COLORS = ("#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")  # matplotlib's next
EXTRA_LINESTYLE = "--"  # an extra family's training-batch and loss lines
MARKERS = {"teacher": "o", "student": "s", "finetuned": "^"}  # finetuning's first dot sits on the student's last
FIGSIZE = (15.0, 4.5)  # inches
DPI = 100  # the PNG is FIGSIZE * DPI pixels: 1500 x 450


def record_row(rows: list[dict], step: int, **values) -> None:
    """Add ``values`` (columns of :data:`COLUMNS`) at ``step`` to a history.

    They fill the last row when it is at the same step (a validation after a logged step), else a new row
    is appended with the other columns None. None values never overwrite.
    """
    unknown = sorted(set(values) - set(COLUMNS[1:]))
    if unknown:
        raise ValueError(f"unknown history column(s) {unknown}; the columns are {COLUMNS}")
    if not rows or rows[-1]["step"] != step:
        rows.append({"step": int(step), **dict.fromkeys(COLUMNS[1:])})
    rows[-1].update({k: float(v) for k, v in values.items() if v is not None})


def history_frame(rows: list[dict]) -> pd.DataFrame:
    """History rows (dicts with the keys of :data:`COLUMNS`) -> a DataFrame in column order (None -> NaN)."""
    frame = pd.DataFrame(list(rows), columns=list(COLUMNS), dtype=float)
    return frame.astype({"step": "int64"})


def write_history(path: str | Path, rows: list[dict]) -> Path:
    """Write a training history as CSV (see the module docstring) atomically; missing values are empty cells."""
    return atomic_write_text(path, history_frame(rows).to_csv(index=False, na_rep="", float_format="%.8g"))


def read_history(path: str | Path) -> pd.DataFrame:
    """Read a ``history.csv``; checks the columns (DataError when it is missing or they differ)."""
    if not Path(path).is_file():
        raise DataError(path, "training history not found")
    frame = pd.read_csv(path)
    if list(frame.columns) != list(COLUMNS):
        raise DataError(path, f"columns {list(frame.columns)} differ from the expected {list(COLUMNS)}")
    return frame


class Curve(NamedTuple):
    """How one history of :func:`curves_figure` is drawn: its key, model, legend label, colour, line style, marker."""

    key: str
    model: str
    label: str
    color: str
    linestyle: str
    marker: str


def parse_key(key: str) -> tuple[str, str | None] | None:
    """A ``histories`` key -> ``(model, extra family)``: ``"student"`` -> ``("student", None)``, ``"finetuned_r2l"``
    -> ``("finetuned", "r2l")``; None for an unknown key."""
    if key in MODELS:
        return key, None
    model, _, family = key.partition("_")
    return (model, family) if model in EXTRA_MODELS and family else None


def curve_styles(keys, families: dict[str, str | None] | None = None) -> list[Curve]:
    """How each of ``keys`` (see :func:`curves_figure`) is drawn, in drawing order: the primary models in
    :data:`MODELS` order (colours :data:`COLORS`, solid), then each extra family in order of first appearance, its
    student then finetuned (colours :data:`EXTRA_COLORS` in turn, dashed). ValueError for an unknown key."""
    unknown = sorted(k for k in keys if parse_key(k) is None)
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; expected some of {MODELS} or {EXTRA_MODELS} + '_FAMILY'")
    labels = dict(zip(keys, legend_labels(list(keys), families), strict=True))
    curves = [Curve(m, m, labels[m], COLORS[m], "-", MARKERS[m]) for m in MODELS if m in labels]
    extras = list(dict.fromkeys(parse_key(k)[1] for k in keys if parse_key(k)[1]))
    for i, family in enumerate(extras):
        for j, model in enumerate(EXTRA_MODELS):
            key = f"{model}_{family}"
            if key in labels:
                color = EXTRA_COLORS[(len(EXTRA_MODELS) * i + j) % len(EXTRA_COLORS)]
                curves.append(Curve(key, model, labels[key], color, EXTRA_LINESTYLE, MARKERS[model]))
    return curves


def _minutes_offsets(frames: dict[str, pd.DataFrame]) -> dict[str, float]:
    """Minutes added to each stage's own clock: a finetuning starts where its own student's training ended."""
    offsets = dict.fromkeys(frames, 0.0)
    for key in frames:
        model, family = parse_key(key) or (key, None)
        student = frames.get("student" if family is None else f"student_{family}")
        if model == "finetuned" and student is not None and student["seconds"].notna().any():
            offsets[key] = float(student["seconds"].max()) / 60.0
    return offsets


def _plot_psnr(ax, frame: pd.DataFrame, x: pd.Series, curve: Curve) -> None:
    """Training-batch PSNR as a thin line, validation PSNR as markers, against ``x`` (two lines on ``ax``)."""
    train = frame["train_psnr"].notna()
    ax.plot(x[train], frame["train_psnr"][train], color=curve.color, ls=curve.linestyle, lw=0.8, alpha=0.6)
    val = frame["val_psnr"].notna()
    ax.plot(x[val], frame["val_psnr"][val], curve.marker, color=curve.color, ms=5, alpha=0.9)


def legend_labels(models: list[str], families: dict[str, str | None] | None = None) -> list[str]:
    """The legend entry of each model: its name, ``student (grid)`` for a student or finetuned student whose family
    ``families`` gives, ``student (r2l)`` for an extra family's key ``student_r2l``
    (:func:`r2l.report.tables.model_label`)."""
    families = families or {}
    parsed = [parse_key(m) or (m, None) for m in models]
    return [model_label(model, extra or families.get(m)) for m, (model, extra) in zip(models, parsed, strict=True)]


def _style(axes, curves: list[Curve], title: str) -> None:
    """Titles, labels, grids and the legend (one entry per curve) of the three panels."""
    from matplotlib.lines import Line2D  # matplotlib is imported only to draw

    ax_step, ax_min, ax_loss = axes
    ax_step.set(xlabel="optimiser step", ylabel="PSNR (dB)", title="PSNR against steps")
    ax_min.set(xlabel="training minutes (validation excluded)", ylabel="PSNR (dB)",
               title="PSNR against training time")
    ax_loss.set(xlabel="optimiser step", ylabel="training loss", title="loss (log scale)", yscale="log")
    for ax in axes:
        ax.grid(True, alpha=0.3)
    handles = [Line2D([], [], color=c.color, ls=c.linestyle, lw=0.8, marker=c.marker, ms=5, label=c.label)
               for c in curves]
    ax_step.legend(handles=handles, fontsize=8, loc="best", title="line: training batch, marks: validation",
                   title_fontsize=8)
    ax_step.figure.suptitle(title)


def draw_curves(histories: dict[str, str | Path], title: str = "", families: dict[str, str | None] | None = None):
    """The matplotlib Figure of :func:`curves_figure` (not saved). Per curve (:func:`curve_styles`) its panels get
    two lines each (training batch, validation marks) and the loss panel one, labelled as in the legend."""
    from matplotlib.figure import Figure  # kept out of the training stages' imports

    curves = curve_styles(list(histories), families)
    frames = {key: read_history(path) for key, path in histories.items()}
    offsets = _minutes_offsets(frames)
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    axes = fig.subplots(1, 3)
    for curve in curves:
        frame = frames[curve.key]
        _plot_psnr(axes[0], frame, frame["step"], curve)
        _plot_psnr(axes[1], frame, frame["seconds"] / 60.0 + offsets[curve.key], curve)
        loss = frame["loss"].notna() & (frame["loss"] > 0)
        axes[2].plot(frame["step"][loss], frame["loss"][loss], color=curve.color, ls=curve.linestyle, lw=0.8,
                     label=curve.label)
    _style(axes, curves, f"{title}: training curves" if title else "training curves")
    return fig


def curves_figure(histories: dict[str, str | Path], out_png: str | Path, title: str = "",
                  families: dict[str, str | None] | None = None) -> Path:
    """Draw the training curves of a scene into ``out_png`` (FIGSIZE * DPI pixels); returns its path.

    histories: key -> its ``history.csv``; keys: ``teacher``, ``student``, ``finetuned`` (the primary family) and
    ``student_FAMILY``, ``finetuned_FAMILY`` (an extra family's, drawn dashed, labelled ``student (FAMILY)``); any
    other key is a ValueError. Three panels: PSNR against steps, PSNR against training minutes (a finetuning's
    clock starts at its own student's last minute, as its steps continue the student's), and the loss against
    steps on a log scale. families: the primary's family of ``student`` and ``finetuned`` (missing or None:
    unknown), in the legend.
    """
    fig = draw_curves(histories, title, families)
    atomic_write(out_png, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI), suffix=".png")
    return Path(out_png)
