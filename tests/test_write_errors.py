"""A failed write (full disk, permissions) is one line naming the file and the cause, and leaves nothing: on
/dev/full, and on a real 1 MB file system (a tmpfs, where the test may mount one) filled during a checkpoint and a
view-store write."""

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


@pytest.fixture
def small_disk(tmp_path):
    """A real file system of 1 MB (a tmpfs mounted for the test; needs root, skipped where mounting is refused)."""
    folder = tmp_path / "disk"
    folder.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], check=True,
                       capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as err:
        pytest.skip(f"cannot mount a small tmpfs here ({type(err).__name__}): the /dev/full tests stand in for it")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False, timeout=30)


def _fill(folder, leave: int) -> None:
    """Fill ``folder``'s file system until ``leave`` bytes or fewer are free."""
    import shutil

    with open(folder / "filler", "wb") as f:
        while shutil.disk_usage(folder).free > leave:
            f.write(b"\0" * min(65536, max(4096, shutil.disk_usage(folder).free - leave)))
            f.flush()
            os.fsync(f.fileno())


def test_a_checkpoint_on_a_full_file_system(small_disk):
    """torch's own writer on a real full disk: one line naming the file and the space left; no temp file."""
    _fill(small_disk, 64 * 1024)
    target = small_disk / "resume" / "ckpt_000000100.pt"
    target.parent.mkdir()
    with pytest.raises(R2LError) as err:
        atomic_torch_save({"weights": {"w": torch.zeros(256 * 1024)}, "step": 100}, target)  # 1 MB of float32
    assert str(err.value).startswith(f"{target}: cannot write it: no space left on device (")
    assert list(target.parent.iterdir()) == []


def test_a_view_store_on_a_full_file_system_then_the_rerun(small_disk, tmp_path):
    """A store's shards fill the disk: one line naming the shard, no meta.json (the store is not taken as complete),
    no temp file; with the space freed the same call writes the bytes an uninterrupted write gives."""
    from helpers import object_and_forward_scenes

    from r2l.stages.pseudo_data import convert_real_data

    scene = object_and_forward_scenes(tmp_path / "scenes", 64)["ff"]  # 7 training views of 64 x 48: 9 KB each
    convert_real_data(scene, tmp_path / "whole", views_per_shard=2)
    _fill(small_disk, 8 * 1024)  # less than a shard of 2 views
    store = small_disk / "real"
    with pytest.raises(R2LError) as err:
        convert_real_data(scene, store, views_per_shard=2)
    assert str(err.value) == f"{store / 'shard_00000.npz'}: cannot write it: No space left on device"
    assert not (store / "meta.json").exists() and not [p for p in store.iterdir() if not p.name.startswith("shard_")]
    (small_disk / "filler").unlink()
    convert_real_data(scene, store, views_per_shard=2)
    names = sorted(p.name for p in (tmp_path / "whole").iterdir())
    assert names == sorted(p.name for p in store.iterdir()) and "meta.json" in names
    assert all((store / n).read_bytes() == (tmp_path / "whole" / n).read_bytes() for n in names if n != "meta.json")
