"""The workflow plans without r2l's heavy dependencies (issue 19 §5): the Snakefile and workflow/rules import only
torch-free modules, so a Snakemake environment of its own (no torch, numpy or image libraries) can parse it,
dry-run it and drive ``--sdm conda``."""

import os
import re
import subprocess
import sys
from pathlib import Path

from helpers import ROOT, job_counts, run_snakemake

# r2l's dependencies that Snakemake and its plugins do not bring: each replaced by a package whose import fails
BLOCKED = ("torch", "imageio", "imageio_ffmpeg", "matplotlib", "tqdm", "pycolmap", "lpips")
ALSO_BLOCKED = ("numpy", "pandas")  # the SLURM plugin imports pandas (so numpy) as Snakemake starts; r2l needs neither
RULES = {"all", "builtin_scene", "train_teacher", "pseudo_data_part", "pseudo_data", "real_data", "train_student",
         "finetune", "evaluate", "comparison_figure", "curves", "video", "summary"}


def blocking_env(folder: Path, blocked: tuple[str, ...] = BLOCKED) -> dict[str, str]:
    """The environment of a Python in which importing any of ``blocked`` raises ImportError."""
    for name in blocked:
        (folder / name).mkdir(parents=True)
        (folder / name / "__init__.py").write_text(f"raise ImportError('{name} is blocked in this test')\n")
    path = [str(folder), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path)}


def test_the_dry_run_needs_no_torch(tmp_path):
    env = blocking_env(tmp_path / "blocked")
    for name in BLOCKED:  # the blocking works
        check = subprocess.run([sys.executable, "-c", f"import {name}"], env=env, capture_output=True, text=True)
        assert check.returncode == 1 and f"{name} is blocked" in check.stderr, (name, check.stderr)
    work = tmp_path / "work"
    result = run_snakemake(work, "-n", env=env)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    assert "is blocked" not in out, out[-4000:]
    stats = job_counts(out)
    assert set(stats) == RULES, stats
    assert stats["pseudo_data_part"] == 4 and stats["train_student"] == 3, stats  # 2 parts per scene; 1 compared
    for scene in ("builtin", "builtin_ff"):
        assert f"results/{scene}/video.mp4" in out  # the same DAG everywhere: an MP4


def test_the_workflow_imports_only_light_modules(tmp_path):
    """What the Snakefile and workflow/rules import of r2l loads without numpy and pandas too (Snakemake alone)."""
    sources = [ROOT / "Snakefile", *sorted((ROOT / "workflow" / "rules").glob("*.smk"))]
    modules = sorted({m for path in sources for m in re.findall(r"^from (r2l[\w.]*) import", path.read_text(), re.M)})
    assert "r2l.core.config" in modules, modules
    env = blocking_env(tmp_path / "blocked", BLOCKED + ALSO_BLOCKED)
    code = "; ".join(f"import {m}" for m in modules)
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
