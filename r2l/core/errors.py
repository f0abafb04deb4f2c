"""User-facing errors: a problem with the user's input or config, reported in one clear line."""

from __future__ import annotations

from pathlib import Path


class R2LError(Exception):
    """An error the user can fix (bad data, bad config, missing file); printed without a traceback."""


class DataError(R2LError):
    """A problem with one input file or folder; the message starts with the path."""

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")
