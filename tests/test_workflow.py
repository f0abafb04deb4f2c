"""The whole workflow end to end on a tiny config: both built-in layouts, every stage, every product."""

import csv
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import imageio.v3 as iio
import pandas as pd
import pytest

from r2l.models.load import describe_model
from r2l.report.figures import SEPARATOR, figure_layout

from helpers import TEST_CONFIG, snakemake_command

SCENES = ["builtin", "builtin_ff"]
HISTORY = ["step", "loss", "train_psnr", "val_psnr", "lr", "seconds"]
COLUMNS = ("scene,model,family,psnr,ssim,lpips,mflops_per_ray,ms_per_frame,fps,params,size_mb,train_minutes,device,"
           "precision").split(",")


COMPARED = {"builtin": ["r2l"], "builtin_ff": []}  # .test/config/config.yaml: the families beside each scene's own


def snakemake(workdir: Path, *args: str, configfiles: tuple[Path, ...] = ()) -> subprocess.CompletedProcess:
    cmd = snakemake_command(workdir, *args, configfiles=(TEST_CONFIG, *configfiles))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=1500)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("workflow")
    result = snakemake(workdir)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return workdir


@pytest.mark.parametrize("scene", SCENES)
def test_every_product_exists(run, scene):
    res = run / "results" / scene
    for path in ["teacher/model.pt", "student/model.pt", "finetuned/model.pt", "pseudo_data/meta.json",
                 "real_data/train/meta.json", "real_data/val/meta.json", "comparison.png", "metrics.csv",
                 "teacher/history.csv", "student/history.csv", "finetuned/history.csv", "curves.png"]:
        assert (res / path).is_file(), path
    assert (res / "video.mp4").is_file() and not (res / "video.gif").exists()  # MP4 on every machine
    extras = [f"_{name}" for name in COMPARED[scene]]
    for name in COMPARED[scene]:  # each compared family's student and finetuned student, as the scene's own
        for path in ("model.pt", "history.csv"):
            assert (res / f"student_{name}" / path).is_file() and (res / f"finetuned_{name}" / path).is_file()
        assert describe_model(res / f"finetuned_{name}" / "model.pt")["family"] == name
    for model in ("teacher", "student", "finetuned", *(f"{m}{x}" for x in extras for m in ("student", "finetuned"))):
        assert len(list((res / "renders" / model).glob("*.png"))) == (3 if scene == "builtin" else 2)
    for rule in ("train_teacher", "pseudo_data.part_0", "pseudo_data.part_1", "train_student", "finetune", "evaluate",
                 *(f"{r}{x}" for x in extras for r in ("train_student", "finetune"))):
        assert (run / "benchmarks" / scene / f"{rule}.tsv").is_file(), rule
    for log in ("train_teacher", "pseudo_data.part_0", "pseudo_data.part_1", "pseudo_data", "train_student",
                "finetune", "evaluate", "curves", *(f"{r}{x}" for x in extras for r in ("train_student", "finetune"))):
        assert (run / "logs" / scene / f"{log}.log").is_file(), log
    figure = iio.imread(res / "comparison.png")
    panels = 5 + 2 * len(extras)  # gt, teacher, student, finetuned, error; 2 more per compared family
    H, W = iio.imread(res / "renders" / "teacher" / "000.png").shape[:2]
    band, scale = figure_layout(H, W)
    assert figure.shape[:2] == (band + scale * H, panels * (scale * W + SEPARATOR) - SEPARATOR)
    curves = iio.imread(res / "curves.png")
    assert curves.shape[:2] == (450, 1500) and curves[..., :3].std() > 10


@pytest.mark.parametrize("scene", SCENES)
def test_training_histories(run, scene):
    """.test/config/config.yaml: teacher 60 steps (log 10, val 30), student 40 (log 10, val 20), finetune 20 more (val 10)."""
    res = run / "results" / scene
    expected = {  # steps with a row, and those validated
        "teacher": ([1, 11, 21, 30, 31, 41, 51, 60], [30, 60]),
        "student": ([0, 1, 11, 20, 21, 31, 40], [0, 20, 40]),
        "finetuned": ([40, 41, 50, 51, 60], [40, 50, 60]),
    }
    for name in COMPARED[scene]:  # a compared family trains on the same schedule
        expected.update({f"student_{name}": expected["student"], f"finetuned_{name}": expected["finetuned"]})
    for model, (steps, validated) in expected.items():
        h = pd.read_csv(res / model / "history.csv")
        assert list(h.columns) == HISTORY, model
        assert h["step"].tolist() == steps and h["step"][h["val_psnr"].notna()].tolist() == validated, model
        assert (h["val_psnr"].dropna() > 5).all() and (h["lr"].dropna() > 0).all(), model
        assert h["seconds"].notna().all() and (h["seconds"].diff().dropna() >= 0).all(), model


@pytest.mark.parametrize("scene", ["builtin", "builtin_ff"])
def test_metrics_rows(run, scene):
    with open(run / "results" / scene / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == COLUMNS
    extra_models = ["student", "finetuned"] * len(COMPARED[scene])
    assert [r["model"] for r in rows] == ["teacher", "student", "finetuned", *extra_models]
    assert rows[0]["family"] == "" and rows[1]["family"] == rows[2]["family"] == "grid"  # the scene's own family
    assert [r["family"] for r in rows[3:]] == [name for name in COMPARED[scene] for _ in range(2)]
    for row in rows:
        assert row["scene"] == scene
        assert 5.0 < float(row["psnr"]) < 60.0
        assert 0.0 < float(row["ssim"]) <= 1.0
        assert float(row["ms_per_frame"]) > 0 and float(row["params"]) > 0
        assert row["precision"] == "fp32"  # the default config trains (and so times) every model in fp32
    student = rows[1]
    if student["family"] == "r2l":
        # depth 4, width 32, 16 points x 21 encodings x 3 = 1008 inputs: 2 x (1008*32 + 2*32*32 + 32*3) per ray
        want = 2 * (1008 * 32 + 2 * 32 * 32 + 32 * 3) / 1e6
    else:  # the grid family: its MLP's products traced + its lookups in closed form = the file's weights + lookups
        want = describe_model(run / "results" / scene / "student" / "model.pt")["mflops_per_ray"]
    assert float(student["mflops_per_ray"]) == pytest.approx(want, rel=1e-6)


def test_summary_and_rerun_is_a_no_op(run):
    text = (run / "results" / "summary.md").read_text()
    assert "builtin" in text and "builtin_ff" in text
    with open(run / "results" / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8  # teacher, student, finetuned of each scene; r2l's student and finetuned on builtin
    assert {(r["scene"], r["family"]) for r in rows if r["model"] != "teacher"} == {
        ("builtin", "grid"), ("builtin", "r2l"), ("builtin_ff", "grid")}
    assert "builtin | r2l" in text or "| r2l |" in text  # the summary has a row for the compared family
    again = snakemake(run, "-n")
    assert again.returncode == 0
    assert "Nothing to be done" in again.stdout + again.stderr


def test_a_deleted_model_file_is_trained_again(run, tmp_path):
    """Every model file is a target: with one gone (a failed --forcerun deletes it), the plain command plans its
    job (and what reads it) instead of "Nothing to be done"."""
    model = run / "results" / "builtin_ff" / "finetuned" / "model.pt"
    kept = tmp_path / "model.pt"
    model.rename(kept)
    try:
        plan = snakemake(run, "-n")
    finally:
        kept.rename(model)
    out = plan.stdout + plan.stderr
    assert plan.returncode == 0 and "Nothing to be done" not in out, out[-3000:]
    assert re.search(r"^finetune\s+1$", out, flags=re.M) and "train_teacher" not in out, out[-3000:]


def test_adding_a_compared_family_retrains_nothing_trained(run, tmp_path):
    """student.compare added to a finished scene (in the scene's entry): only the new family's student and
    finetuning run (and the evaluation, figures and tables that show it); the scene, teacher, pseudo-data and
    the scene's own student stay."""
    extra = tmp_path / "compare.yaml"
    extra.write_text("scenes:\n  builtin_ff:\n    student: {compare: [r2l]}\n")  # a scene's own stage override
    plan = snakemake(run, "-n", configfiles=(extra,))
    assert plan.returncode == 0, plan.stdout[-3000:] + plan.stderr[-3000:]
    out = plan.stdout + plan.stderr
    stats = dict(re.findall(r"^(\w+)\s+(\d+)$", out[out.index("Job stats"):], flags=re.M))
    assert {k: v for k, v in stats.items() if k not in ("all", "total")} == {
        "train_student": "1", "finetune": "1", "evaluate": "1", "comparison_figure": "1", "curves": "1",
        "summary": "1"}, out[-3000:]
    assert "extra=_r2l" in out and "train_teacher" not in out


def test_report_is_built(run):
    result = snakemake(run, "--report", str(run / "report.html"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    html = (run / "report.html").read_text(errors="replace")
    assert len(html) > 10_000
    for name in ("comparison.png", "metrics.csv", "summary.md", "curves.png"):
        assert name in html
    for scene in SCENES:  # the curves figure of every scene
        assert f"results/{scene}/curves.png" in html, scene
    assert "Reading the training curves" in html  # the workflow description (workflow/report/workflow.rst)


# Where the soak test kills the run (each pattern relative to the run folder; the kill comes as soon as a file
# matching it appears): inside the teacher (its first checkpoint), a pseudo-data part (its first shard of two),
# the grid student and its finetuning (their first checkpoints), evaluation (its log).
KILL_MOMENTS = (
    "resources/resume/builtin_ff/teacher/ckpt_*.pt",
    "results/builtin_ff/pseudo_data/part_1/shard_*.npz",
    "resources/resume/builtin_ff/student/ckpt_*.pt",
    "resources/resume/builtin_ff/finetune/ckpt_*.pt",
    "logs/builtin_ff/evaluate.log",
)


def _kill_when(workdir: Path, pattern: str, seconds: float = 600) -> bool:
    """Run the scene's metrics target and SIGKILL Snakemake and its jobs (a closed laptop, a dead node) when a file
    matching ``pattern`` appears; False when the run ended first."""
    cmd = snakemake_command(workdir, "results/builtin_ff/metrics.csv", configfiles=(TEST_CONFIG,))
    job = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    end = time.monotonic() + seconds
    try:
        while job.poll() is None and time.monotonic() < end:
            if any(workdir.glob(pattern)):
                os.killpg(job.pid, signal.SIGKILL)
                job.wait()
                return True
            time.sleep(0.05)
        return False
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()


def _weights(path: Path) -> dict:
    from r2l.models.load import read_model_file

    return read_model_file(path)["weights"]


def test_killed_at_every_stage_the_same_command_ends_as_an_uninterrupted_run(run, tmp_path):
    """The soak test: the run is killed inside each stage in turn and the same command started again each time; the
    models, the pseudo-data and the scores equal the uninterrupted run's (``run``) bit for bit."""
    import torch

    killed = [pattern for pattern in KILL_MOMENTS if _kill_when(tmp_path, pattern)]
    assert killed == list(KILL_MOMENTS)  # each kill came inside its stage
    final = snakemake(tmp_path, "results/builtin_ff/metrics.csv")
    assert final.returncode == 0, final.stdout[-3000:] + final.stderr[-3000:]
    logs = tmp_path / "logs" / "builtin_ff"  # each training stage went on from its checkpoint, the part kept its shard
    assert "resuming teacher from step 30" in (logs / "train_teacher.log").read_text()
    assert "resuming student from step 20" in (logs / "train_student.log").read_text()
    assert re.search(r"resuming student from step 5\d", (logs / "finetune.log").read_text())
    assert re.search(r"shards 1-2, 1 kept", (logs / "pseudo_data.part_1.log").read_text())
    got, want = tmp_path / "results" / "builtin_ff", run / "results" / "builtin_ff"
    for model in ("teacher", "student", "finetuned"):
        a, b = _weights(got / model / "model.pt"), _weights(want / model / "model.pt")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), model
    shards = sorted(p.relative_to(want) for p in want.glob("pseudo_data/part_*/shard_*.npz"))
    assert len(shards) == 3 and shards == sorted(p.relative_to(got) for p in got.glob("pseudo_data/part_*/shard_*.npz"))
    assert all((got / s).read_bytes() == (want / s).read_bytes() for s in shards)
    scores = ["model", "family", "psnr", "ssim", "lpips", "mflops_per_ray", "params"]
    mine, theirs = pd.read_csv(got / "metrics.csv"), pd.read_csv(want / "metrics.csv")
    pd.testing.assert_frame_equal(mine[scores], theirs[scores])
