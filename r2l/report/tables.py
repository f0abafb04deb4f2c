"""Result tables: the per-scene ``metrics.csv`` files and the all-scene summary (CSV + Markdown).

``results/{scene}/metrics.csv`` has exactly the columns :data:`COLUMNS`: one ``teacher`` row, and a
``student`` (trained on pseudo-data only) and a ``finetuned`` (then finetuned on the real training views) row
per student family trained for the scene (the primary family's first). ``family`` names the student family of
the student and finetuned rows (``r2l`` or ``grid``, :data:`r2l.models.students.FAMILIES`) and is empty for the
teacher; :func:`read_metrics` rejects a repeated (scene, model, family) and a second teacher row. Missing values
(LPIPS without offline weights, size without a model file) are empty cells, never invented. Files written before
the ``family`` column (:data:`LEGACY_COLUMNS`) still read, their family empty (unknown: such a file may come
from a grid student).

:func:`write_summary` concatenates them into ``summary.csv`` (same columns) and writes ``summary.md``:
one table per model, a row per (scene, family), with a mean row over scenes (the student and finetuned tables
name each row's student family; the heading too when every row's is the same: :func:`model_label`), a
student-vs-teacher table (a row per (scene, student family), the teacher's values repeated: PSNR gain in dB,
speed-up = teacher ms / student ms, FLOPs reduction) beside R2L's published per-scene PSNR where the paper
reports the scene, and R2L's Table 2 next to our means (a row per student family). Means are over the scenes
that have a value, per family when some scene has several (:func:`several_families`); the mean gain / speed-up
is the mean of the per-scene gains / speed-ups.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from r2l.core.atomic import atomic_write_text
from r2l.core.errors import DataError
from r2l.report.published import SOURCE, TABLE2, match_paper_scene, published_psnr

COLUMNS = [
    "scene", "model", "family", "psnr", "ssim", "lpips", "mflops_per_ray", "ms_per_frame",
    "fps", "params", "size_mb", "train_minutes", "device", "precision",
]
MODELS = ("teacher", "student", "finetuned")
LEGACY_COLUMNS = [c for c in COLUMNS if c != "family"]  # metrics.csv files written before the family column
# column -> (Markdown header, format spec); params get thousands separators.
_SHOW = {
    "psnr": ("PSNR (dB)", ".2f"), "ssim": ("SSIM", ".4f"), "lpips": ("LPIPS", ".4f"),
    "mflops_per_ray": ("MFLOPs/ray", ".2f"), "ms_per_frame": ("ms/frame", ".1f"), "fps": ("fps", ".2f"),
    "params": ("params", ",.0f"), "size_mb": ("size (MB)", ".2f"), "train_minutes": ("train (min)", ".1f"),
}


def model_label(model: str, family: str | None = None) -> str:
    """How tables and figures name a model: ``"student (grid)"`` for a student or finetuned student of a known
    family, else the model's name (the teacher, or a student whose family is unknown)."""
    known = isinstance(family, str) and family != ""
    return f"{model} ({family})" if known and model != "teacher" else model


def metrics_frame(rows: list[dict]) -> pd.DataFrame:
    """Rows (dicts with exactly :data:`COLUMNS`; None = missing) -> a DataFrame in column order."""
    for row in rows:
        if set(row) != set(COLUMNS):
            raise ValueError(f"metric row keys {sorted(row)} differ from the columns {COLUMNS}")
    return pd.DataFrame(rows, columns=COLUMNS)


def write_metrics_csv(rows: list[dict], path: str | Path) -> None:
    """Write metric rows (see :func:`metrics_frame`) to ``path`` atomically; missing values are empty cells."""
    atomic_write_text(path, metrics_frame(rows).to_csv(index=False, na_rep=""))


def _read_one(path: str | Path) -> pd.DataFrame:
    """One metrics CSV, its columns and model names checked; a legacy file gets an empty (NaN) family."""
    if not Path(path).is_file():
        raise DataError(path, "metrics file not found")
    df = pd.read_csv(path, dtype={"scene": str, "model": str, "family": str, "device": str, "precision": str},
                     keep_default_na=True)
    if list(df.columns) == LEGACY_COLUMNS:
        df.insert(COLUMNS.index("family"), "family", pd.Series([math.nan] * len(df), index=df.index, dtype=object))
    if list(df.columns) != COLUMNS:
        raise DataError(path, f"columns {list(df.columns)} differ from the expected {COLUMNS}")
    bad = sorted(set(df["model"]) - set(MODELS))
    if bad:
        raise DataError(path, f"unknown model name(s) {bad}; expected {list(MODELS)}")
    return df


def read_metrics(paths: list[str | Path]) -> pd.DataFrame:
    """Concatenate metrics CSVs (rows in input order), checking columns, model names and uniqueness.

    A scene may have several student and finetuned rows, one per family, but one teacher row; a repeated
    (scene, model, family) or a second teacher row is a DataError naming the file that repeats it. A file with
    :data:`LEGACY_COLUMNS` (no ``family``) reads with an empty family (NaN) on every row.
    """
    frames = [_read_one(path) for path in paths]
    sources = [str(path) for path, frame in zip(paths, frames, strict=True) for _ in range(len(frame))]
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)
    _check_unique(df, sources)
    return df


def _fam(value) -> str:
    """A family cell as a string: ``""`` for a missing or empty one."""
    return value if isinstance(value, str) else ""


def _check_unique(df: pd.DataFrame, sources: list[str]) -> None:
    """DataError at the first row repeating an earlier one: a second teacher row of its scene, or the same
    (scene, model, family). sources: the file of each row of ``df``."""
    fams = [("" if m == "teacher" else _fam(f)) for m, f in zip(df["model"], df["family"], strict=True)]
    keys = list(zip(df["scene"], df["model"], fams, strict=True))
    seen: dict[tuple, int] = {}
    for i, key in enumerate(keys):
        if key in seen:
            scene, model, fam = key
            what = (f"duplicate teacher row of scene {scene!r}" if model == "teacher" else
                    f"duplicate (scene, model, family) row {(scene, model, fam)}")
            raise DataError(sources[i], f"{what}; the first is in {sources[seen[key]]}")
        seen[key] = i


def _families(values) -> list[str]:
    """The distinct known families among ``values`` (missing and empty ones skipped), in order of appearance."""
    return list(dict.fromkeys(str(v) for v in values if isinstance(v, str) and v))


def scene_family(df: pd.DataFrame, scene: str) -> str:
    """The student families of a scene's student and finetuned rows joined by ``/`` (``"grid"``, ``"grid/r2l"``);
    ``""`` when unknown (no student row, or metrics.csv from before the family column)."""
    rows = df[(df["scene"] == scene) & df["model"].isin(("student", "finetuned"))]
    return "/".join(_families(rows["family"]))


def scene_families(df: pd.DataFrame, scene: str) -> list[str]:
    """The student families of a scene's student and finetuned rows in file order, ``""`` for an unknown one;
    ``[""]`` when the scene has no such row."""
    rows = df[(df["scene"] == scene) & df["model"].isin(("student", "finetuned"))]
    return list(dict.fromkeys(_fam(v) for v in rows["family"])) or [""]


def several_families(df: pd.DataFrame) -> bool:
    """Whether some scene of ``df`` has student or finetuned rows of more than one family."""
    return any(len(scene_families(df, s)) > 1 for s in dict.fromkeys(df["scene"]))


def common_family(df: pd.DataFrame, model: str) -> str | None:
    """The family every ``model`` row of ``df`` has, or None (families differ or some are unknown)."""
    values = df.loc[df["model"] == model, "family"]
    fams = _families(values)
    return fams[0] if len(fams) == 1 and values.notna().all() else None


def _value(df: pd.DataFrame, scene: str, model: str, col: str, family: str | None = None) -> float:
    """One numeric cell, NaN when the row or the value is missing. family: that of the student or finetuned row
    (``""``: unknown; None: any); the teacher's row ignores it."""
    hit = df[(df["scene"] == scene) & (df["model"] == model)]
    if family is not None and model != "teacher":
        hit = hit[hit["family"].map(_fam) == family]
    return float(hit[col].iloc[0]) if len(hit) and pd.notna(hit[col].iloc[0]) else math.nan


def _ratio(num: float, den: float) -> float:
    """num / den, NaN when either is missing or den is not positive."""
    return num / den if (den > 0 and not math.isnan(num)) else math.nan


def _scene_comparison(df: pd.DataFrame, scene: str, family: str, paper_scene: dict[str, str] | None) -> dict:
    """One row of :func:`comparison_table`: the scene's teacher against its ``family`` student and finetuned."""

    def v(model: str, col: str) -> float:
        return _value(df, scene, model, col, family)

    paper = match_paper_scene(scene, paper_scene)
    pub = published_psnr(paper) or (math.nan, math.nan)
    return {
        "scene": scene, "paper_scene": paper or "", "family": family,
        "teacher_psnr": v("teacher", "psnr"), "student_psnr": v("student", "psnr"),
        "student_gain_db": v("student", "psnr") - v("teacher", "psnr"),
        "finetuned_psnr": v("finetuned", "psnr"),
        "finetuned_gain_db": v("finetuned", "psnr") - v("teacher", "psnr"),
        "student_speedup": _ratio(v("teacher", "ms_per_frame"), v("student", "ms_per_frame")),
        "finetuned_speedup": _ratio(v("teacher", "ms_per_frame"), v("finetuned", "ms_per_frame")),
        "flops_reduction": _ratio(v("teacher", "mflops_per_ray"), v("finetuned", "mflops_per_ray")),
        "r2l_train_minutes": v("student", "train_minutes") + v("finetuned", "train_minutes"),
        "paper_nerf_psnr": pub[0], "paper_r2l_psnr": pub[1], "paper_gain_db": pub[1] - pub[0],
    }


def comparison_table(df: pd.DataFrame, paper_scene: dict[str, str] | None = None) -> pd.DataFrame:
    """A row per (scene, student family), then mean rows: the family, our PSNRs, gains over the teacher, speed-ups,
    FLOPs ratio, paper PSNRs.

    df: concatenated metrics (see :func:`read_metrics`). Rows: scenes in input order, each scene's families in
    file order, the teacher's values repeated in each. Row ``mean`` averages each column over the rows that have a
    value; its paper columns are filled only when the paper reports every scene. When it reports some but not
    all, a row ``mean (paper scenes)`` averages over those scenes only, so that our means and the paper's cover
    the same scenes. When some scene has several families (:func:`several_families`), these mean rows come once
    per family (in order of appearance, over that family's rows, the family named), so no scene counts twice.
    """
    rows = [_scene_comparison(df, s, f, paper_scene) for s in dict.fromkeys(df["scene"]) for f in scene_families(df, s)]
    table = pd.DataFrame(rows)
    if not len(table):
        return table
    groups = [table[table["family"] == f] for f in dict.fromkeys(table["family"])] if several_families(df) else [table]
    return pd.concat([table, pd.DataFrame([m for g in groups for m in _mean_rows(g)])], ignore_index=True)


def _mean_rows(table: pd.DataFrame) -> list[dict]:
    """The ``mean`` row of comparison rows, and ``mean (paper scenes)`` when the paper reports only some scenes."""
    paper_cols = ["paper_nerf_psnr", "paper_r2l_psnr", "paper_gain_db"]
    matched = table[table["paper_scene"] != ""]
    means = [_mean_row(table, "mean")]
    if len(matched) < len(table):
        means[0].update({c: math.nan for c in paper_cols})
        if len(matched):
            means.append(_mean_row(matched, "mean (paper scenes)"))
    return means


def _mean_row(table: pd.DataFrame, label: str) -> dict:
    """Column means (skipping missing values) of comparison rows, labelled ``label``; the family when they share one."""
    mean = table.drop(columns=["scene", "paper_scene", "family"]).mean(numeric_only=True, skipna=True)
    fams = _families(table["family"])
    same = len(fams) == 1 and (table["family"] != "").all()
    return {"scene": label, "paper_scene": "", "family": fams[0] if same else "", **mean.to_dict()}


def _fmt(value, spec: str) -> str:
    """A Markdown cell: formatted number, or empty for a missing one."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return format(value, spec) if isinstance(value, (int, float)) else str(value)


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def model_table(df: pd.DataFrame, model: str) -> str:
    """Markdown table of one model, a row per (scene, family) in input order, then a mean row (means over the rows
    with a value). The student and finetuned tables have a ``family`` column after the scene (empty where unknown)
    and, when some scene has several families (:func:`several_families`), a mean row per family."""
    sub = df[df["model"] == model]
    fam = [] if model == "teacher" else ["family"]
    rows = [[str(r["scene"])] + [_fmt(r[c], "") for c in fam] + [_fmt(float(r[c]), s) for c, (_, s) in _SHOW.items()]
            + [_fmt(r["device"], ""), _fmt(r["precision"], "")] for _, r in sub.iterrows()]
    if fam and several_families(df):
        keys = sub["family"].map(_fam)
        groups = [(f, sub[keys == f]) for f in dict.fromkeys(keys)]
    else:
        groups = [(common_family(df, model) or "", sub)]
    rows += [_model_mean_row(g, [f] if fam else []) for f, g in groups]
    return _md_table(["scene", *fam] + [h for h, _ in _SHOW.values()] + ["device", "timed at"], rows)


def _model_mean_row(sub: pd.DataFrame, family_cells: list[str]) -> list[str]:
    """The ``**mean**`` row of :func:`model_table` over ``sub``'s rows; device and precision when they share one."""
    means = sub[list(_SHOW)].apply(pd.to_numeric, errors="coerce").mean(skipna=True)
    same = [sub[c].dropna().unique() for c in ("device", "precision")]
    return (["**mean**", *family_cells] + [_fmt(float(means[c]), s) for c, (_, s) in _SHOW.items()]
            + [u[0] if len(u) == 1 else "" for u in same])


def _comparison_md(table: pd.DataFrame) -> str:
    """Markdown of :func:`comparison_table`."""
    cols = [
        ("teacher_psnr", "teacher PSNR", ".2f"), ("student_psnr", "student PSNR", ".2f"),
        ("student_gain_db", "student gain (dB)", "+.2f"), ("finetuned_psnr", "finetuned PSNR", ".2f"),
        ("finetuned_gain_db", "finetuned gain (dB)", "+.2f"), ("student_speedup", "speed-up student", ".1f"),
        ("finetuned_speedup", "speed-up finetuned", ".1f"), ("flops_reduction", "FLOPs reduction", ".1f"),
        ("r2l_train_minutes", "R2L train (min, student+finetune)", ".1f"),
        ("paper_nerf_psnr", "paper NeRF PSNR", ".2f"), ("paper_r2l_psnr", "paper R2L PSNR", ".2f"),
        ("paper_gain_db", "paper gain (dB)", "+.2f"),
    ]
    rows = []
    for _, r in table.iterrows():
        if str(r["scene"]).startswith("mean"):
            name = f"**{r['scene']}**"
        else:
            name = str(r["scene"]) + (f" ({r['paper_scene']})" if r["paper_scene"] else "")
        rows.append([name, _fmt(r["family"], "")] + [_fmt(r[c], s) for c, _, s in cols])
    return _md_table(["scene (paper scene)", "student family"] + [h for _, h, _ in cols], rows)


def _table2_md(df: pd.DataFrame) -> str:
    """R2L's Table 2 beside our teacher / student / finetuned means over scenes (one row per student family)."""
    rows = [[f"paper {name}", _fmt(t["size_mb"], ".1f"), _fmt(t["mflops_per_ray"], ".2f"),
             _fmt(t["psnr_synthetic"], ".2f"), _fmt(t["psnr_real"], ".2f"), ""] for name, t in
            (("NeRF", TABLE2["nerf"]), ("R2L", TABLE2["r2l"]))]
    for model in MODELS:
        sub = df[df["model"] == model]
        fams = sub["family"].where(sub["family"].notna() & (model != "teacher"), "").astype(str)
        groups = list(dict.fromkeys(fams))
        for fam in groups:
            m = sub[fams == fam][["size_mb", "mflops_per_ray", "psnr"]].apply(pd.to_numeric, errors="coerce").mean()
            what = fam or ("family unknown" if len(groups) > 1 else "")
            rows.append([f"ours {model} ({what + ', ' if what else ''}mean)", _fmt(float(m["size_mb"]), ".1f"),
                         _fmt(float(m["mflops_per_ray"]), ".2f"), "", "", _fmt(float(m["psnr"]), ".2f")])
    header = ["model", "size (MB)", "MFLOPs/ray", "PSNR synthetic (mean)", "PSNR real/LLFF (mean)",
              "PSNR (mean over our scenes)"]
    return _md_table(header, rows)


def summary_markdown(df: pd.DataFrame, paper_scene: dict[str, str] | None = None) -> str:
    """The whole ``summary.md`` text for the concatenated metrics ``df``."""
    parts = [
        "# r2l results", "",
        "PSNR and SSIM: higher is better; LPIPS (AlexNet): lower is better, empty when its weights were not "
        "available offline. family: the student family (r2l: the paper's MLP; grid: the grid-feature light "
        "field), empty where not recorded. MFLOPs/ray: 2 x linear-layer multiply-adds per ray (R2L's convention); "
        "a grid student's adds its feature lookups, counted in closed form. "
        "ms/frame: median full-frame render time after warm-up on the listed device. Empty cells are "
        "missing values.", "",
    ]
    for model in MODELS:
        if (df["model"] == model).any():
            parts += [f"## {model_label(model, common_family(df, model))}", "", model_table(df, model), ""]
    parts += ["## Student vs teacher (read beside R2L Table 2)", "",
              "Gain = student PSNR - teacher PSNR; speed-up = teacher ms / student ms; FLOPs reduction = "
              "teacher MFLOPs / finetuned MFLOPs. Paper columns: R2L's published PSNR for the matching scene.", "",
              _comparison_md(comparison_table(df, paper_scene)), "",
              "## R2L Table 2 (published) and our means", "", _table2_md(df), "", f"Source: {SOURCE}.", ""]
    return "\n".join(parts)


def write_summary(
    metric_csvs: list[str | Path], out_csv: str | Path, out_md: str | Path, paper_scene: dict[str, str] | None = None
) -> pd.DataFrame:
    """Concatenate per-scene metrics into ``out_csv`` and write the readable ``out_md``; returns the comparison table.

    paper_scene: optional map from our scene names to the paper's (e.g. ``{"lego_100": "lego"}``);
    unmapped names match themselves, then without a trailing ``_<digits>``.
    """
    df = read_metrics(list(metric_csvs))
    atomic_write_text(out_csv, df.to_csv(index=False, na_rep=""))
    atomic_write_text(out_md, summary_markdown(df, paper_scene))
    return comparison_table(df, paper_scene)
