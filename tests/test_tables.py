"""metrics.csv and the summary tables: columns, mean rows, gains, speed-ups, published numbers."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from r2l.core.errors import DataError
from r2l.report.published import BLENDER_PSNR, LLFF_PSNR, TABLE2, match_paper_scene, published_psnr
from r2l.report.tables import (
    COLUMNS,
    LEGACY_COLUMNS,
    model_label,
    read_metrics,
    summary_markdown,
    write_metrics_csv,
    write_summary,
)


def row(scene: str, model: str, psnr: float, ms: float, mflops: float, minutes: float, lpips=None,
        family: str = "r2l") -> dict:
    """A hand-made metrics row (the teacher's family None)."""
    return {
        "scene": scene, "model": model, "family": None if model == "teacher" else family, "psnr": psnr, "ssim": 0.9,
        "lpips": lpips, "mflops_per_ray": mflops,
        "ms_per_frame": ms, "fps": 1000.0 / ms, "params": 5_917_187 if model != "teacher" else 1_191_688,
        "size_mb": 23.7 if model != "teacher" else 4.8, "train_minutes": minutes, "device": "NVIDIA H100", "precision": "bf16",
    }


@pytest.fixture
def two_scenes(tmp_path):
    """lego_100 (a paper scene) and toy (not one), three models each."""
    a = tmp_path / "lego_100" / "metrics.csv"
    b = tmp_path / "toy" / "metrics.csv"
    write_metrics_csv([row("lego_100", "teacher", 30.0, 1000.0, 303.82, 60.0),
                       row("lego_100", "student", 31.0, 40.0, 11.79, 30.0),
                       row("lego_100", "finetuned", 32.0, 40.0, 11.79, 5.0)], a)
    write_metrics_csv([row("toy", "teacher", 28.0, 600.0, 303.82, 50.0, lpips=0.2),
                       row("toy", "student", 27.5, 30.0, 11.79, 20.0, lpips=0.1),
                       row("toy", "finetuned", 29.0, 30.0, 11.79, 4.0, lpips=0.05)], b)
    return [a, b]


def test_metrics_csv_columns_and_empty_cells(two_scenes):
    text = two_scenes[0].read_text().splitlines()
    assert text[0] == ",".join(COLUMNS) and COLUMNS[:3] == ["scene", "model", "family"]
    assert text[1].split(",")[2] == ""  # the teacher has no family
    assert text[1].split(",")[5] == ""  # lpips None -> empty cell
    df = pd.read_csv(two_scenes[0])
    assert list(df.columns) == COLUMNS and list(df["model"]) == ["teacher", "student", "finetuned"]
    assert df["lpips"].isna().all()
    assert df["family"].isna().tolist() == [True, False, False] and list(df["family"][1:]) == ["r2l", "r2l"]


def test_metrics_row_keys_are_checked(tmp_path):
    bad = row("x", "teacher", 1, 1, 1, 1)
    del bad["device"]
    with pytest.raises(ValueError, match="differ from the columns"):
        write_metrics_csv([bad], tmp_path / "m.csv")


def test_summary_csv_one_row_per_model_and_scene(two_scenes, tmp_path):
    write_summary(two_scenes, tmp_path / "summary.csv", tmp_path / "summary.md")
    df = pd.read_csv(tmp_path / "summary.csv")
    assert list(df.columns) == COLUMNS
    assert len(df) == 6
    assert df.groupby("scene")["model"].apply(sorted).to_dict() == {
        "lego_100": ["finetuned", "student", "teacher"], "toy": ["finetuned", "student", "teacher"]}


def test_comparison_gains_speedups_and_paper_numbers(two_scenes, tmp_path):
    table = write_summary(two_scenes, tmp_path / "s.csv", tmp_path / "s.md").set_index("scene")
    lego, toy, mean, paper_mean = (table.loc[k] for k in ("lego_100", "toy", "mean", "mean (paper scenes)"))
    assert lego["student_gain_db"] == pytest.approx(1.0) and toy["student_gain_db"] == pytest.approx(-0.5)
    assert lego["finetuned_gain_db"] == pytest.approx(2.0) and toy["finetuned_gain_db"] == pytest.approx(1.0)
    assert mean["student_gain_db"] == pytest.approx(0.25) and mean["finetuned_gain_db"] == pytest.approx(1.5)
    assert lego["student_speedup"] == pytest.approx(25.0) and toy["student_speedup"] == pytest.approx(20.0)
    assert mean["student_speedup"] == pytest.approx(22.5)  # mean of per-scene speed-ups
    assert mean["teacher_psnr"] == pytest.approx(29.0) and mean["finetuned_psnr"] == pytest.approx(30.5)
    assert lego["flops_reduction"] == pytest.approx(303.82 / 11.79)
    assert lego["r2l_train_minutes"] == pytest.approx(35.0) and toy["r2l_train_minutes"] == pytest.approx(24.0)
    assert lego["paper_scene"] == "lego"
    assert (lego["paper_nerf_psnr"], lego["paper_r2l_psnr"]) == (31.42, 32.53)
    assert lego["paper_gain_db"] == pytest.approx(1.11)
    assert toy["paper_scene"] == "" and math.isnan(toy["paper_nerf_psnr"])
    assert math.isnan(mean["paper_nerf_psnr"])  # not every scene is a paper scene
    assert paper_mean["teacher_psnr"] == pytest.approx(30.0) and paper_mean["paper_r2l_psnr"] == 32.53


def test_summary_markdown(two_scenes, tmp_path):
    write_summary(two_scenes, tmp_path / "s.csv", tmp_path / "s.md")
    md = (tmp_path / "s.md").read_text()
    for heading in ("## teacher\n", "## student (r2l)\n", "## finetuned (r2l)\n", "## Student vs teacher"):
        assert heading in md
    assert "| lego_100 (lego) | r2l | 30.00 | 31.00 | +1.00 | 32.00 | +2.00 | 25.0 | 25.0 | 25.8 | 35.0 |" in md
    assert "| 35.0 | 31.42 | 32.53 | +1.11 |" in md
    assert "| toy | r2l | 28.00 | 27.50 | -0.50 |" in md
    assert "| **mean** | r2l | 29.00 | 29.25 | +0.25 | 30.50 | +1.50 | 22.5 | 22.5 |" in md
    assert "| scene | family | PSNR (dB) |" in md and "| toy | r2l | 27.50 | 0.9000 | 0.1000 |" in md  # student table
    assert "| ours teacher (mean) | 4.8 |" in md and "| ours finetuned (r2l, mean) | 23.7 | 11.79 |" in md
    # the teacher's mean row; LPIPS mean over the one scene that has it, params with separators
    assert "| **mean** | 29.00 | 0.9000 | 0.2000 | 303.82 | 800.0 |" in md
    assert "1,191,688" in md
    assert "| lego_100 | 30.00 | 0.9000 |  | 303.82 |" in md  # missing LPIPS stays empty
    assert "| paper NeRF | 2.4 | 303.82 | 30.47 | 27.68 |  |" in md
    assert "| paper R2L | 23.7 | 11.79 | 31.87 | 27.79 |  |" in md
    assert "2203.17261" in md


def test_missing_model_leaves_cells_empty(tmp_path):
    p = tmp_path / "m.csv"
    write_metrics_csv([row("fern", "teacher", 26.0, 500.0, 227.87, 10.0)], p)
    table = write_summary([p], tmp_path / "s.csv", tmp_path / "s.md").set_index("scene")
    assert math.isnan(table.loc["fern", "student_gain_db"]) and math.isnan(table.loc["fern", "student_speedup"])
    assert table.loc["mean", "paper_nerf_psnr"] == 26.86  # every scene is a paper scene: mean row has it
    assert "mean (paper scenes)" not in table.index
    md = (tmp_path / "s.md").read_text()
    assert "| fern (fern) |  | 26.00 |  |  |  |  |  |  |  |  | 26.86 | 26.87 | +0.01 |" in md
    assert "## student" not in md


def test_paper_scene_mapping(two_scenes, tmp_path):
    table = write_summary(two_scenes, tmp_path / "s.csv", tmp_path / "s.md",
                          paper_scene={"toy": "fern", "lego_100": "not-a-paper-scene"}).set_index("scene")
    assert table.loc["toy", "paper_nerf_psnr"] == 26.86
    assert table.loc["lego_100", "paper_scene"] == ""


def test_read_metrics_rejects_bad_files(tmp_path, two_scenes):
    bad = tmp_path / "bad.csv"
    bad.write_text("scene,model,psnr\nx,teacher,30\n")
    with pytest.raises(DataError, match="columns"):
        read_metrics([bad])
    with pytest.raises(DataError, match="not found"):
        read_metrics([tmp_path / "nope.csv"])
    with pytest.raises(DataError, match="duplicate"):
        read_metrics([two_scenes[0], two_scenes[0]])
    wrong = tmp_path / "wrong.csv"
    write_metrics_csv([row("x", "teacher", 1, 1, 1, 1)], wrong)
    wrong.write_text(wrong.read_text().replace("teacher", "nerf"))
    with pytest.raises(DataError, match="unknown model"):
        read_metrics([wrong])


def test_published_numbers():
    assert len(BLENDER_PSNR) == 8 and len(LLFF_PSNR) == 7
    nerf_mean = sum(v[0] for v in BLENDER_PSNR.values()) / 8
    r2l_mean = sum(v[1] for v in BLENDER_PSNR.values()) / 8
    assert nerf_mean == pytest.approx(TABLE2["nerf"]["psnr_synthetic"], abs=0.01)
    assert r2l_mean == pytest.approx(TABLE2["r2l"]["psnr_synthetic"], abs=0.01)
    assert published_psnr("lego") == (31.42, 32.53)
    assert match_paper_scene("lego_400") == "lego" and match_paper_scene("Lego") == "lego"
    assert match_paper_scene("builtin") is None and published_psnr(None) is None
    # the workflow passes every run scene's paper_scene, None meaning "match by name" (the config default)
    assert match_paper_scene("flower", {"flower": None}) == "flower"
    assert match_paper_scene("my_fern", {"my_fern": "fern"}) == "fern"


def test_grid_student_is_named_in_the_summary(tmp_path):
    """A scene distilled into the grid family beside one of the R2L MLP: every table says which is which."""
    a, b = tmp_path / "lego_100.csv", tmp_path / "fern.csv"
    write_metrics_csv([row("lego_100", "teacher", 30.0, 1000.0, 303.82, 60.0),
                       row("lego_100", "student", 29.0, 20.0, 0.03, 10.0, family="grid"),
                       row("lego_100", "finetuned", 29.5, 20.0, 0.03, 2.0, family="grid")], a)
    write_metrics_csv([row("fern", "teacher", 26.0, 500.0, 227.87, 10.0),
                       row("fern", "student", 25.0, 40.0, 11.79, 5.0),
                       row("fern", "finetuned", 26.5, 40.0, 11.79, 1.0)], b)
    table = write_summary([a, b], tmp_path / "s.csv", tmp_path / "s.md").set_index("scene")
    assert table.loc["lego_100", "family"] == "grid" and table.loc["fern", "family"] == "r2l"
    assert table.loc["mean", "family"] == ""  # the scenes' families differ
    df = pd.read_csv(tmp_path / "s.csv")
    assert list(df.columns) == COLUMNS
    assert df.fillna({"family": ""}).set_index(["scene", "model"])["family"].to_dict() == {
        ("lego_100", "teacher"): "", ("lego_100", "student"): "grid", ("lego_100", "finetuned"): "grid",
        ("fern", "teacher"): "", ("fern", "student"): "r2l", ("fern", "finetuned"): "r2l"}
    md = (tmp_path / "s.md").read_text()
    assert "## student\n" in md and "## finetuned\n" in md  # mixed families: the heading names none
    assert "| lego_100 | grid | 29.00 |" in md and "| fern | r2l | 25.00 |" in md
    assert "| lego_100 (lego) | grid | 30.00 | 29.00 | -1.00 |" in md
    assert "| fern (fern) | r2l | 26.00 | 25.00 | -1.00 |" in md
    assert "| ours finetuned (grid, mean) | 23.7 | 0.03 |  |  | 29.50 |" in md
    assert "| ours finetuned (r2l, mean) | 23.7 | 11.79 |  |  | 26.50 |" in md
    write_metrics_csv([row("lego_100", "student", 29.0, 20.0, 0.03, 10.0, family="grid")], b)
    md = summary_markdown(read_metrics([b]))
    assert "## student (grid)\n" in md and "| **mean** | grid | 29.00 |" in md


def test_metrics_csv_without_the_family_column_still_reads(two_scenes, tmp_path):
    """A metrics.csv written before the family column: read with an empty family, summarised beside a new one."""
    old = tmp_path / "old.csv"
    pd.read_csv(two_scenes[1]).drop(columns=["family"]).to_csv(old, index=False)
    assert old.read_text().splitlines()[0] == ",".join(LEGACY_COLUMNS)
    df = read_metrics([old])
    assert list(df.columns) == COLUMNS and len(df) == 3 and df["family"].isna().all()
    assert df.loc[df["model"] == "student", "psnr"].item() == 27.5
    table = write_summary([two_scenes[0], old], tmp_path / "s.csv", tmp_path / "s.md").set_index("scene")
    assert table.loc["toy", "family"] == "" and table.loc["lego_100", "family"] == "r2l"
    assert table.loc["toy", "student_gain_db"] == pytest.approx(-0.5)
    md = (tmp_path / "s.md").read_text()
    assert "| toy |  | 28.00 | 27.50 | -0.50 |" in md and "## student\n" in md  # unknown: not named
    assert "| ours student (r2l, mean) |" in md and "| ours student (family unknown, mean) |" in md
    assert list(pd.read_csv(tmp_path / "s.csv").columns) == COLUMNS


def test_model_label():
    assert model_label("student", "grid") == "student (grid)" and model_label("finetuned", "r2l") == "finetuned (r2l)"
    assert model_label("student", None) == model_label("student", "") == "student"
    assert model_label("student", math.nan) == "student"  # an empty cell of metrics.csv
    assert model_label("teacher", "grid") == "teacher"


@pytest.fixture
def two_families(tmp_path):
    """fern: a teacher and the grid (primary) and r2l student and finetuned rows; toy: the grid family only."""
    a, b = tmp_path / "fern" / "metrics.csv", tmp_path / "toy" / "metrics.csv"
    write_metrics_csv([row("fern", "teacher", 27.0, 500.0, 227.87, 10.0),
                       row("fern", "student", 25.0, 20.0, 0.03, 6.0, family="grid"),
                       row("fern", "finetuned", 26.0, 25.0, 0.03, 2.0, family="grid"),
                       row("fern", "student", 22.0, 50.0, 11.79, 8.0),
                       row("fern", "finetuned", 23.5, 40.0, 11.79, 1.0)], a)
    write_metrics_csv([row("toy", "teacher", 30.0, 600.0, 303.82, 20.0),
                       row("toy", "student", 29.0, 30.0, 0.03, 5.0, family="grid"),
                       row("toy", "finetuned", 31.0, 30.0, 0.03, 1.0, family="grid")], b)
    return [a, b]


def test_summary_row_per_scene_and_student_family(two_families, tmp_path):
    """Two families of one scene: a comparison row each, the teacher repeated, gains by hand; means per family."""
    table = write_summary(two_families, tmp_path / "s.csv", tmp_path / "s.md")
    assert list(zip(table["scene"], table["family"])) == [
        ("fern", "grid"), ("fern", "r2l"), ("toy", "grid"), ("mean", "grid"), ("mean (paper scenes)", "grid"),
        ("mean", "r2l")]
    fern_grid, fern_r2l, toy, mean_grid, paper_grid, mean_r2l = (table.iloc[k] for k in range(6))
    assert fern_grid["teacher_psnr"] == fern_r2l["teacher_psnr"] == 27.0
    assert fern_grid["student_gain_db"] == pytest.approx(-2.0) and fern_r2l["student_gain_db"] == pytest.approx(-5.0)
    assert fern_grid["finetuned_gain_db"] == pytest.approx(-1.0)
    assert fern_r2l["finetuned_gain_db"] == pytest.approx(-3.5)
    assert fern_grid["student_speedup"] == pytest.approx(25.0) and fern_r2l["student_speedup"] == pytest.approx(10.0)
    assert fern_r2l["finetuned_speedup"] == pytest.approx(12.5)
    assert fern_grid["flops_reduction"] == pytest.approx(227.87 / 0.03)
    assert fern_grid["r2l_train_minutes"] == pytest.approx(8.0) and fern_r2l["r2l_train_minutes"] == pytest.approx(9.0)
    assert fern_grid["paper_r2l_psnr"] == fern_r2l["paper_r2l_psnr"] == 26.87 and toy["paper_scene"] == ""
    # each family's means over its own rows: the fern teacher counts once in each
    assert mean_grid["teacher_psnr"] == pytest.approx(28.5) and mean_grid["student_gain_db"] == pytest.approx(-1.5)
    assert paper_grid["student_gain_db"] == pytest.approx(-2.0)  # fern only
    assert mean_r2l["teacher_psnr"] == pytest.approx(27.0) and mean_r2l["student_gain_db"] == pytest.approx(-5.0)
    assert mean_r2l["paper_nerf_psnr"] == 26.86  # the r2l rows are all paper scenes
    md = (tmp_path / "s.md").read_text()
    assert "| fern (fern) | grid | 27.00 | 25.00 | -2.00 | 26.00 | -1.00 | 25.0 | 20.0 |" in md
    assert "| fern (fern) | r2l | 27.00 | 22.00 | -5.00 | 23.50 | -3.50 | 10.0 | 12.5 |" in md
    assert "| **mean** | grid | 28.50 | 27.00 | -1.50 |" in md and "| **mean** | r2l | 27.00 | 22.00 | -5.00 |" in md


def test_model_and_table2_tables_with_two_families_in_a_scene(two_families, tmp_path):
    write_summary(two_families, tmp_path / "s.csv", tmp_path / "s.md")
    df = pd.read_csv(tmp_path / "s.csv")
    assert len(df) == 8 and list(df.columns) == COLUMNS
    assert list(zip(df["scene"], df["model"], df["family"].fillna(""))) == [
        ("fern", "teacher", ""), ("fern", "student", "grid"), ("fern", "finetuned", "grid"),
        ("fern", "student", "r2l"), ("fern", "finetuned", "r2l"), ("toy", "teacher", ""),
        ("toy", "student", "grid"), ("toy", "finetuned", "grid")]
    md = (tmp_path / "s.md").read_text()
    student = md[md.index("## student\n"):md.index("## finetuned\n")]  # mixed families: the heading names none
    lines = [ln for ln in student.splitlines() if ln.startswith("| ") and not ln.startswith("| scene")]
    assert [ln.split(" | ")[:3] for ln in lines] == [
        ["| fern", "grid", "25.00"], ["| fern", "r2l", "22.00"], ["| toy", "grid", "29.00"],
        ["| **mean**", "grid", "27.00"], ["| **mean**", "r2l", "22.00"]]
    assert "| **mean** | 28.50 |" in md  # the teacher table: one row per scene, one mean
    assert "| ours student (grid, mean) | 23.7 | 0.03 |  |  | 27.00 |" in md
    assert "| ours student (r2l, mean) | 23.7 | 11.79 |  |  | 22.00 |" in md
    assert "| ours finetuned (grid, mean) | 23.7 | 0.03 |  |  | 28.50 |" in md
    assert "| ours finetuned (r2l, mean) | 23.7 | 11.79 |  |  | 23.50 |" in md
    assert "| ours teacher (mean) | 4.8 | 265.85 |  |  | 28.50 |" in md


def test_read_metrics_rejects_duplicate_family_rows_and_a_second_teacher(two_families, tmp_path):
    df = read_metrics(two_families)
    assert len(df) == 8 and df.loc[(df["model"] == "student") & (df["family"] == "r2l"), "psnr"].item() == 22.0
    dup = tmp_path / "dup" / "metrics.csv"
    write_metrics_csv([row("fern", "teacher", 27.0, 500.0, 227.87, 10.0),
                       row("fern", "student", 25.0, 20.0, 0.03, 6.0, family="grid"),
                       row("fern", "student", 24.0, 20.0, 0.03, 6.0, family="grid")], dup)
    with pytest.raises(DataError, match=r"dup/metrics\.csv: duplicate \(scene, model, family\) row "
                                        r"\('fern', 'student', 'grid'\)"):
        read_metrics([dup])
    teachers = tmp_path / "teachers" / "metrics.csv"
    write_metrics_csv([row("fern", "teacher", 27.0, 500.0, 227.87, 10.0),
                       row("fern", "teacher", 26.0, 500.0, 227.87, 10.0, family="grid") | {"family": "grid"}], teachers)
    with pytest.raises(DataError, match=r"teachers/metrics\.csv: duplicate teacher row of scene 'fern'"):
        read_metrics([teachers])
    with pytest.raises(DataError, match=r"toy/metrics\.csv: duplicate teacher row of scene 'toy'; the first is in"):
        read_metrics([two_families[1], two_families[1]])  # across files: the file repeating it is named
