"""After a kill of the whole run (Snakemake and its jobs), the command the user typed resumes: no --unlock, no
--rerun-incomplete; a second run while the first is alive is refused, naming it."""

import os
import signal
import subprocess
import time
from pathlib import Path

from r2l.core.runlock import HOLDER, LOCKS, claim, read_holder

from helpers import snakemake_command

TARGET = "results/builtin_ff/pseudo_data/meta.json"  # the teacher, then two pseudo-data jobs


def command(workdir: Path) -> list[str]:
    return snakemake_command(workdir, TARGET)


def wait_for(path: Path, seconds: float = 120) -> None:
    end = time.monotonic() + seconds
    while not (path.is_file() and path.stat().st_size > 0):
        assert time.monotonic() < end, f"{path} did not appear"
        time.sleep(0.2)


def test_the_same_command_resumes_after_a_kill(tmp_path):
    first = subprocess.Popen(command(tmp_path), start_new_session=True, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        wait_for(tmp_path / "logs" / "builtin_ff" / "train_teacher.log")  # the teacher is training
        assert read_holder(tmp_path)["pid"] == first.pid
        second = subprocess.run(command(tmp_path), capture_output=True, text=True, timeout=600)
        assert second.returncode != 0
        assert f"r2l: another run is working in this folder (pid {first.pid}," in second.stderr
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # Snakemake and its job, as a closed laptop or a dead node would
        first.wait()
    assert any((tmp_path / LOCKS).iterdir())  # what made Snakemake refuse the next run until --unlock
    assert any((tmp_path / ".snakemake" / "incomplete").rglob("*"))  # ... and ask for --rerun-incomplete
    again = subprocess.run(command(tmp_path), capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"r2l: removed the locks of an earlier run that was stopped (pid {first.pid}," in again.stderr
    assert (tmp_path / TARGET).is_file() and not (tmp_path / LOCKS).exists()


def test_claim_leaves_foreign_locks_alone(tmp_path):
    """Locks with no record of their holder on this host (an older r2l, another machine) are Snakemake's call."""
    (tmp_path / LOCKS).mkdir(parents=True)
    (tmp_path / LOCKS / "0.input.lock").write_text("x\n")
    assert claim(tmp_path) is None and (tmp_path / LOCKS / "0.input.lock").is_file()
    assert read_holder(tmp_path)["pid"] == os.getpid()  # recorded now
    (tmp_path / HOLDER).write_text('{"pid": 1, "host": "elsewhere", "started": "x", "command": "y"}')
    assert claim(tmp_path) is None and (tmp_path / LOCKS / "0.input.lock").is_file()
