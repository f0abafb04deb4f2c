"""Checkpoints and model files: plain dicts written atomically and read with ``weights_only=True``.

They hold tensors, numbers, strings, lists and dicts only, so loading one can never run code. A resume folder
holds ``ckpt_{step:09d}.pt`` files; the newest loadable one wins and a corrupt newest one falls back to the one
before it with a warning. Every file r2l writes records its layout as an integer ``format_version``
(:data:`FORMAT_VERSION`); a reader per version (:func:`read_versioned`) turns a loaded file into today's layout.
Every training checkpoint, the teacher's and the student's alike, has the keys :data:`CHECKPOINT_KEYS` (written by
:func:`r2l.stages.loop.run_loop`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from r2l.core.atomic import atomic_write
from r2l.core.errors import DataError, R2LError
from r2l.core.log import log

# The layout of the model and checkpoint files r2l writes: 3 = one checkpoint layout for every stage
# (CHECKPOINT_KEYS) and the same metric names and loss rows in teacher and student files; 2 = per-stage layouts,
# recording format_version; 1 = format 2's layout before the key existed; 0 = early model files. r2l.models.load
# reads model files of all four, r2l.stages.teacher and r2l.stages.student checkpoints of 1 to 3.
FORMAT_VERSION = 3

# A training checkpoint (format 3), any stage's: stage ("teacher" or "student": the task that wrote it), kind (the
# model file's kind it becomes: nerf, grid, student, finetuned), config (the stage's config dict), step (optimiser
# steps done), weights, optimizer (state dicts), rng (generator states by name), history (model.pt's loss rows
# [steps done, loss, train PSNR]), loop (the rest of the loop state, r2l.stages.loop.LOOP_KEYS) and extra (what
# only that task keeps: the student's hard-example pool); and format_version.
CHECKPOINT_KEYS = ("stage", "kind", "config", "step", "weights", "optimizer", "rng", "history", "loop", "extra")

Reader = Callable[[dict, Path], dict]  # (a loaded file of one format, its path) -> the file in today's layout


def atomic_torch_save(obj, path: str | Path) -> None:
    """Write ``obj`` to ``path`` through a temp file in the same folder and a rename."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def with_format_version(state: dict) -> dict:
    """``state`` (a new dict) with ``format_version`` = :data:`FORMAT_VERSION`: what every r2l file records."""
    return {**state, "format_version": FORMAT_VERSION}


def save_model_file(out: dict, path: str | Path) -> None:
    """Atomically write the model file ``out`` (a teacher or student dict) to ``path``, with its format version."""
    atomic_torch_save(with_format_version(out), path)


def stored_format(obj: dict, path: str | Path, unversioned: int = 1) -> int:
    """The format a loaded file declares (``format_version``; ``unversioned`` when it has none).

    DataError naming ``path`` for a value that is no format number, or a format newer than this r2l's.
    """
    version = obj.get("format_version", unversioned)
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise DataError(path, f"format_version {version!r} is not a file format number")
    if version > FORMAT_VERSION:
        raise DataError(path, f"file format {version} is newer than this r2l reads (format {FORMAT_VERSION} and "
                              "older): it was written by a newer r2l; update r2l to read it")
    return version


def read_versioned(obj: dict, path: str | Path, readers: dict[int, Reader], unversioned: int = 1) -> dict:
    """``obj`` (a loaded file) read by the reader of its format (:func:`stored_format`), in today's layout."""
    version = stored_format(obj, path, unversioned)
    if version not in readers:
        raise DataError(path, f"file format {version} cannot be read here (this file type has formats "
                              f"{', '.join(map(str, sorted(readers)))})")
    return readers[version](obj, Path(path))


def read_checkpoint_v3(ckpt: dict, path: Path) -> dict:
    """A checkpoint of format 3, today's layout; KeyError naming the first of :data:`CHECKPOINT_KEYS` it lacks."""
    for key in CHECKPOINT_KEYS:
        if key not in ckpt:
            raise KeyError(f"{key!r} (not a format-3 checkpoint)")
    return ckpt


# Any stage's checkpoints of today's format; the stages add readers of their older layouts (formats 1 and 2).
CHECKPOINT_READERS: dict[int, Reader] = {3: read_checkpoint_v3}


CHECKPOINT_GLOB = "ckpt_*.pt"  # the files of a resume folder, ``ckpt_{step:09d}.pt``: name order is step order


def save_checkpoint(resume_dir: str | Path, state: dict, step: int, keep: int = 2) -> Path:
    """Atomically write ``state`` (with its format version) as ``resume_dir/ckpt_{step}.pt``; keep the newest
    ``keep`` files."""
    resume_dir = Path(resume_dir)
    path = resume_dir / f"ckpt_{step:09d}.pt"
    atomic_torch_save(with_format_version(state), path)
    for old in sorted(resume_dir.glob(CHECKPOINT_GLOB))[:-keep]:
        old.unlink()
    return path


def remove_checkpoints_after(resume_dir: str | Path, step: int) -> list[Path]:
    """Remove the checkpoints of ``resume_dir`` written after ``step`` (by a run of more steps); returns them.

    A run of fewer steps must neither resume one (it would finish past its own end) nor leave it there
    (:func:`save_checkpoint` keeps the newest by step and would prune the run's own checkpoints instead)."""
    later = [p for p in Path(resume_dir).glob(CHECKPOINT_GLOB) if p.stem[5:].isdigit() and int(p.stem[5:]) > step]
    for path in later:
        path.unlink(missing_ok=True)  # the processes of a multi-GPU run all remove them
    return sorted(later)


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load one checkpoint safely (``weights_only=True``)."""
    return torch.load(path, map_location=map_location, weights_only=True)


def load_latest_checkpoint(
    resume_dir: str | Path, map_location="cpu", check: Callable[[dict], None] | None = None,
    readers: dict[int, Reader] | None = None,
) -> dict | None:
    """Newest usable checkpoint in ``resume_dir`` in today's layout, or None.

    readers: format version -> reader (:func:`read_versioned`; default :data:`CHECKPOINT_READERS`). check:
    called on the read checkpoint; it raises (KeyError, ValueError, ...) when the checkpoint cannot be used, e.g.
    :func:`check_state_dict` for each module it restores. Any failure to read or check a checkpoint (truncated,
    garbled, missing keys) falls back to the one before it with a warning; an R2LError (a deliberate refusal:
    another network, a format this r2l cannot read) is raised.
    """
    for path in sorted(Path(resume_dir).glob(CHECKPOINT_GLOB), reverse=True):
        try:
            ckpt = load_checkpoint(path, map_location)
            if not isinstance(ckpt, dict):
                raise TypeError(f"holds a {type(ckpt).__name__}, not a dict")
            ckpt = read_versioned(ckpt, path, CHECKPOINT_READERS if readers is None else readers)
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
