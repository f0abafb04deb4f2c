"""What runs before the first line (issue 21 §9): the config schema read with libyaml, ``r2l info`` answering a file
that is no torch file without loading torch, and saying on a terminal that it loads torch when it does."""

from __future__ import annotations

import io
import subprocess
import sys

import torch
import yaml
from helpers import object_and_forward_scenes, save_student_file, student_net

from r2l.cli import main
from r2l.core.config import SCHEMA, load_schema

NOTE = "r2l info: reading {} (loading torch) ...\r\033[K"  # shown, then erased


class Terminal(io.StringIO):
    """A stderr that is a terminal."""

    def isatty(self) -> bool:
        return True


def test_the_schema_reads_the_same_with_libyaml():
    assert load_schema() == yaml.load(SCHEMA.read_text(), Loader=yaml.SafeLoader)
    assert len(load_schema()["properties"]) > 10


def test_info_on_a_file_that_is_no_torch_file_does_not_load_torch(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("a,b\n1,2\n")
    code = ("import sys; from r2l.cli import main; code = main(['info', sys.argv[1]]); "
            "print(code, 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code, str(notes)], capture_output=True, text=True, timeout=120)
    assert result.stdout == "1 False\n", result.stdout + result.stderr
    assert result.stderr == f"r2l: error: {notes}: not a torch file (a CSV/text file?)\n"


def test_info_says_on_a_terminal_while_it_loads_torch(tmp_path, monkeypatch, capsys):
    scene = object_and_forward_scenes(tmp_path / "scenes", 8)["orbit"]
    model = save_student_file(tmp_path / "model.pt", *student_net("r2l"), scene)
    stderr = Terminal()
    monkeypatch.setattr(sys, "stderr", stderr)
    assert main(["info", str(model)]) == 0
    assert stderr.getvalue() == NOTE.format(model)
    assert capsys.readouterr().out.splitlines()[:2] == [f"model      {model}", "kind       finetuned"]


def test_the_note_is_erased_before_an_error(tmp_path, monkeypatch):
    other = tmp_path / "other.pt"
    torch.save({"a": torch.zeros(2)}, other)
    stderr = Terminal()
    monkeypatch.setattr(sys, "stderr", stderr)
    assert main(["info", str(other)]) == 1
    assert stderr.getvalue() == NOTE.format(other) + (
        f"r2l: error: {other}: a torch file holding a dict (a) that is not an r2l model file\n")


def test_no_note_when_stderr_is_no_terminal(tmp_path, capsys):
    other = tmp_path / "other.pt"
    torch.save({"a": torch.zeros(2)}, other)
    assert main(["info", str(other)]) == 1
    assert capsys.readouterr().err == (f"r2l: error: {other}: a torch file holding a dict (a) that is not an r2l "
                                       "model file\n")
