"""A failed write (full disk, permissions) is one line naming the file and the cause, and leaves nothing."""

import errno
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from r2l.core import atomic
from r2l.core.atomic import atomic_write, atomic_write_text, write_error
from r2l.core.checkpoint import atomic_torch_save
from r2l.core.errors import R2LError

FULL = "/dev/full"  # every write to it fails with ENOSPC, as on a full disk


def write_to_full(_tmp):
    with open(FULL, "wb") as f:
        f.write(b"x" * 4096)
        f.flush()


@pytest.mark.skipif(not os.path.exists(FULL), reason="needs /dev/full (Linux)")
def test_full_disk_is_one_line_and_leaves_nothing(tmp_path):
    target = tmp_path / "meta.json"
    target.write_text("old")
    with pytest.raises(R2LError) as err:
        atomic_write(target, write_to_full)
    assert str(err.value) == f"{target}: cannot write it: No space left on device"
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["meta.json"]


@pytest.mark.skipif(not os.path.exists(FULL), reason="needs /dev/full (Linux)")
def test_torch_writer_failure_on_a_full_disk(tmp_path, monkeypatch):
    """torch.save's C++ writer hides the errno; with the disk (nearly) full the cause is named from the space left."""
    with pytest.raises(RuntimeError) as raw:
        torch.save({"w": torch.zeros(1000)}, FULL)  # what torch itself says: no word of space
    assert "space" not in str(raw.value).lower()
    monkeypatch.setattr(atomic, "_free_bytes", lambda folder: 12_000)
    error = write_error(tmp_path / "ckpt.pt", raw.value)
    assert str(error) == f"{tmp_path / 'ckpt.pt'}: cannot write it: no space left on device (0.0 MB free)"
    monkeypatch.setattr(atomic, "_free_bytes", lambda folder: 10 << 30)  # space left: torch's first line instead
    assert str(write_error(tmp_path / "ckpt.pt", raw.value)).startswith(f"{tmp_path / 'ckpt.pt'}: cannot write it: ")


def test_other_errors_pass_through(tmp_path):
    assert write_error(tmp_path / "x", ValueError("bad")) is None
    assert write_error(tmp_path / "x", OSError(errno.ENOENT, "gone")) is None
    assert write_error(tmp_path / "x", RuntimeError("shape mismatch")) is None
    with pytest.raises(ValueError, match="bad"):
        atomic_write(tmp_path / "x", lambda tmp: (_ for _ in ()).throw(ValueError("bad")))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o555)
    with pytest.raises(R2LError, match="cannot write it: Permission denied"):
        atomic_torch_save({"a": 1}, folder / "model.pt")


@pytest.mark.skipif(not os.path.exists(FULL), reason="needs /dev/full (Linux)")
def test_a_stage_reports_a_failed_write_in_one_line(tmp_path):
    """Through the rule scripts' wrapper: exit 1 and one line on stderr, no traceback."""
    script = textwrap.dedent(f"""
        import types
        from r2l.workflow import stage
        smk = types.SimpleNamespace(log=["{tmp_path}/x.log"], output=[], config={{}}, wildcards={{}}, threads=1,
                                    params=types.SimpleNamespace(), input=types.SimpleNamespace())
        with stage(smk):
            with open("{FULL}", "wb") as f:
                f.write(b"x" * 4096)
                f.flush()
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                            timeout=120)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip() == "r2l: a file of this job: cannot write it: No space left on device"
    assert atomic_write_text(tmp_path / "ok.txt", "fine").read_text() == "fine"
