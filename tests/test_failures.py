"""A failed job's r2l line is said again at the end of the run's output (Snakemake's onerror, and `r2l run`)."""

import subprocess
import textwrap
import sys
from pathlib import Path

from r2l.core.failures import failed_jobs, failure_lines, last_error

from helpers import DEFAULT_CONFIG, run_r2l, run_snakemake
SNAKEMAKE_LOG = """Select jobs to execute...
Error in rule train_teacher:
    message: None
    jobid: 2
    input: scene
    output: results/bad/teacher/model.pt, results/bad/teacher/history.csv
    log: logs/bad/train_teacher.log (check log file(s) for error details)
Error in rule video:
    jobid: 9
Shutting down, this might take some time.
"""


def test_failure_lines_from_the_logs(tmp_path):
    (tmp_path / "logs" / "bad").mkdir(parents=True)
    (tmp_path / "logs" / "bad" / "train_teacher.log").write_text(
        "2026-12-02 07:16:24,217 INFO torch uses 1 CPU thread(s)\n"
        "2026-12-02 07:16:24,218 ERROR scene/transforms_train.json: 'frames' must be a non-empty list\n"
        "Traceback-free tail\n")
    (tmp_path / "run.log").write_text(SNAKEMAKE_LOG)
    assert failed_jobs(tmp_path / "run.log") == [("train_teacher", "logs/bad/train_teacher.log"), ("video", None)]
    assert last_error(tmp_path / "logs" / "bad" / "train_teacher.log") == (
        "scene/transforms_train.json: 'frames' must be a non-empty list")
    assert last_error(tmp_path / "missing.log") is None
    assert failure_lines([tmp_path / "run.log"], tmp_path) == [  # rule logs: relative to the working directory
        "r2l: rule train_teacher failed: scene/transforms_train.json: 'frames' must be a non-empty list "
        "(log: logs/bad/train_teacher.log)",
        "r2l: rule video failed: see Snakemake output above"]


def bad_scene(tmp_path: Path) -> Path:
    scene = tmp_path / "scene"
    scene.mkdir()
    for split in ("train", "val", "test"):
        (scene / f"transforms_{split}.json").write_text('{"camera_angle_x": 0.5, "frames": "oops"}')
    config = tmp_path / "bad.yaml"
    config.write_text(f"scenes:\n  bad: {{format: blender, path: {scene}, resolution: 32}}\nrun_scenes: [bad]\n")
    return config


def test_the_failed_job_s_line_ends_the_output(tmp_path):
    config = bad_scene(tmp_path)
    work = tmp_path / "work"
    want = f"{tmp_path / 'scene' / 'transforms_train.json'}: 'frames' must be a non-empty list"
    run = run_r2l("run", "--directory", str(work), "--configfile", str(DEFAULT_CONFIG), str(config), timeout=600)
    assert run.returncode != 0
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("r2l: rule ") and f"failed: {want} (log: logs/bad/" in last, run.stderr[-2000:]
    # plain Snakemake: onerror says it again below Snakemake's report of the failed job
    plain = run_snakemake(work, configfiles=(DEFAULT_CONFIG, config), timeout=600)
    tail = plain.stderr.strip().splitlines()[-10:]
    assert plain.returncode != 0 and any(line.startswith("r2l: rule ") and want in line for line in tail), tail


def test_fewer_gpus_than_asked_is_said_on_the_console(tmp_path):
    """A warning that changes what runs goes to the console as well as to the rule's log."""
    script = textwrap.dedent(f"""
        import types
        import r2l.stages.distributed as distributed
        from r2l.workflow import stage
        distributed.TRAINERS["noop"] = lambda: 7
        smk = types.SimpleNamespace(log=["{tmp_path}/job.log"], output=[], config={{}}, wildcards={{}}, threads=1,
                                    params=types.SimpleNamespace(), input=types.SimpleNamespace())
        with stage(smk):
            assert distributed.run_training("noop", {{}}, 1, "{tmp_path}", wanted=2) == 7
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    want = "the config asks for 2 GPUs for this job but Snakemake granted 1"
    assert result.stderr.startswith(f"r2l: warning: {want}"), result.stderr
    assert want in (tmp_path / "job.log").read_text()
