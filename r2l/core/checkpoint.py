"""Checkpoints: plain dicts written atomically and read with ``weights_only=True``.

Checkpoints hold tensors, numbers, strings, lists and dicts only, so loading one can never run code. A
resume folder holds ``ckpt_{step:09d}.pt`` files; the newest loadable one wins and a corrupt newest one
falls back to the one before it with a warning.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from r2l.core.atomic import atomic_write
from r2l.core.log import log


def atomic_torch_save(obj, path: str | Path) -> None:
    """Write ``obj`` to ``path`` through a temp file in the same folder and a rename."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def save_checkpoint(resume_dir: str | Path, state: dict, step: int, keep: int = 2) -> Path:
    """Atomically write ``state`` as ``resume_dir/ckpt_{step}.pt``; keep the newest ``keep`` files."""
    resume_dir = Path(resume_dir)
    path = resume_dir / f"ckpt_{step:09d}.pt"
    atomic_torch_save(state, path)
    for old in sorted(resume_dir.glob("ckpt_*.pt"))[:-keep]:
        old.unlink()
    return path


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load one checkpoint safely (``weights_only=True``)."""
    return torch.load(path, map_location=map_location, weights_only=True)


def load_latest_checkpoint(resume_dir: str | Path, map_location="cpu") -> dict | None:
    """Newest loadable checkpoint in ``resume_dir``, or None. Corrupt files are skipped with a warning."""
    for path in sorted(Path(resume_dir).glob("ckpt_*.pt"), reverse=True):
        try:
            return load_checkpoint(path, map_location)
        except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as err:  # truncated or garbled
            log.warning("checkpoint %s is unreadable (%s); falling back to an older one", path, err)
    return None
