"""Tests of r2l.core.atomic: outputs appear complete or not at all, temps never stay behind."""

from __future__ import annotations

import json
import os
import stat

import pytest

from r2l.core.atomic import atomic_folder, atomic_write, atomic_write_json, atomic_write_text
from r2l.core.errors import R2LError


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


def test_text_and_json_round_trip_with_normal_permissions(tmp_path):
    path = atomic_write_text(tmp_path / "sub" / "a.txt", "héllo\n")
    assert path.read_bytes() == "héllo\n".encode()
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~_umask()
    atomic_write_json(tmp_path / "b.json", {"z": 1, "a": [1, 2]})
    assert (tmp_path / "b.json").read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "z": 1\n}'
    assert json.loads((tmp_path / "b.json").read_text()) == {"a": [1, 2], "z": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.json", "sub"]


def test_writer_gets_suffix_and_failure_keeps_the_old_file(tmp_path):
    target = tmp_path / "v.mp4"
    target.write_text("old")
    seen = []

    def broken(tmp):
        seen.append(tmp)
        tmp.write_text("half")
        raise RuntimeError("encoder died")

    with pytest.raises(RuntimeError, match="encoder died"):
        atomic_write(target, broken, suffix=".mp4")
    assert seen[0].name.startswith(".v.mp4.") and seen[0].name.endswith(".tmp.mp4") and seen[0].parent == tmp_path
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]
    atomic_write(target, lambda tmp: tmp.write_text("new"))
    assert target.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]


def test_folder_complete_or_absent(tmp_path):
    dest = tmp_path / "out" / "scene"
    stale = tmp_path / "out" / ".scene.tmp-dead"
    stale.mkdir(parents=True)
    (stale / "junk").write_text("x")

    def broken(scratch):
        (scratch / "a").write_text("1")
        raise ValueError("bad input")

    with pytest.raises(ValueError):
        atomic_folder(dest, broken)
    assert os.listdir(tmp_path / "out") == []  # the stale scratch and the failed one are both gone

    def fill(scratch):
        (scratch / "inner").mkdir()
        (scratch / "inner" / "f").write_text("data")
        return scratch / "inner"  # move a sub-folder into place

    assert atomic_folder(dest, fill) == dest
    assert os.listdir(tmp_path / "out") == ["scene"] and (dest / "f").read_text() == "data"
    assert stat.S_IMODE(dest.stat().st_mode) == 0o777 & ~_umask()
    (dest / "g").write_text("not empty")

    def other(scratch):
        (scratch / "h").write_text("2")

    with pytest.raises(R2LError, match="cannot move"):
        atomic_folder(dest, other)
    assert sorted(os.listdir(dest)) == ["f", "g"] and os.listdir(tmp_path / "out") == ["scene"]
