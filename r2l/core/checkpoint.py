"""Checkpoints: plain dicts written atomically and read with ``weights_only=True``.

Checkpoints hold tensors, numbers, strings, lists and dicts only, so loading one can never run code. A
resume folder holds ``ckpt_{step:09d}.pt`` files; the newest loadable one wins and a corrupt newest one
falls back to the one before it with a warning.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from r2l.core.atomic import atomic_write
from r2l.core.errors import R2LError
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


def load_latest_checkpoint(
    resume_dir: str | Path, map_location="cpu", check: Callable[[dict], None] | None = None
) -> dict | None:
    """Newest usable checkpoint in ``resume_dir``, or None.

    check: called on a loaded checkpoint; it raises (KeyError, ValueError, ...) when the checkpoint cannot be
    used, e.g. :func:`check_state_dict` for each module it restores. Any failure to read or check a checkpoint
    (truncated, garbled, missing keys) falls back to the one before it with a warning; an R2LError from
    ``check`` (a deliberate refusal, such as another network) is raised.
    """
    for path in sorted(Path(resume_dir).glob("ckpt_*.pt"), reverse=True):
        try:
            ckpt = load_checkpoint(path, map_location)
            if not isinstance(ckpt, dict):
                raise TypeError(f"holds a {type(ckpt).__name__}, not a dict")
            if check is not None:
                check(ckpt)
            return ckpt
        except R2LError:
            raise
        except Exception as err:  # noqa: BLE001  (whatever a damaged file raises, the older checkpoint is tried)
            log.warning("checkpoint %s is unusable (%s: %s); falling back to an older one", path,
                        type(err).__name__, str(err).splitlines()[0] if str(err) else "")
    return None


def check_state_dict(state, module: torch.nn.Module, shapes: bool = True) -> None:
    """ValueError unless ``state`` holds exactly ``module``'s tensors (names, dtypes and, when ``shapes``, shapes:
    a grid field changes its shapes while it trains, so its checkpoints are checked without them)."""
    want = module.state_dict()
    if not isinstance(state, dict) or set(state) != set(want):
        raise ValueError("its weights do not match the network's parameters")
    for name, tensor in want.items():
        got = state[name]
        if not isinstance(got, torch.Tensor) or got.dtype != tensor.dtype or (shapes and got.shape != tensor.shape):
            raise ValueError(f"its {name} does not match the network's")
