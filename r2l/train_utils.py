"""Pieces every training loop shares: device choice, seeding, atomic checkpoints, NaN guard, progress.

Checkpoints are plain dicts of tensors, numbers, strings, lists and dicts, so they load with
``torch.load(..., weights_only=True)`` and can never run code. A resume folder holds
``ckpt_{step:09d}.pt`` files; the newest loadable one wins and a corrupt newest one falls back to the
one before it with a warning.
"""

from __future__ import annotations

import logging
import math
import pickle
import random
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from r2l.atomic import atomic_write
from r2l.errors import R2LError

log = logging.getLogger("r2l")


def pick_device(name: str | None = None) -> torch.device:
    """``name`` ("cuda", "cpu", "cuda:1", or None/"auto" for CUDA when present, else CPU)."""
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise R2LError(f"device {name!r} was asked for but CUDA is not available on this machine")
    return torch.device(name)


def setup_fast_math(device: torch.device) -> None:
    """TF32 matmuls on GPU (quality holds for these networks); no-op on CPU."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA when ``enabled``; a disabled context elsewhere."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled and device.type == "cuda")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; returns a CPU generator for ray sampling."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


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


def check_finite(loss: torch.Tensor, step: int, resume_dir: str | Path) -> None:
    """Stop with a clear error when the loss is NaN or infinite (the last good checkpoint stays)."""
    value = float(loss)
    if not math.isfinite(value):
        raise R2LError(
            f"loss became {value} at step {step}; training stopped. The last good checkpoint is kept in "
            f"{resume_dir}: lower the learning rate or check the data, then rerun to resume from it."
        )


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB of images in [0, 1] from their mean squared error."""
    return -10.0 * math.log10(max(mse, 1e-12))


def progress(total: int, initial: int = 0, desc: str = "") -> tqdm:
    """A progress bar with rate and time left, written to stderr (the rule's log under Snakemake).

    In a log file (not a terminal) the bar is redrawn every 15 s instead of every 2 s, so logs stay short.
    """
    interval = 2.0 if sys.stderr.isatty() else 15.0
    return tqdm(
        total=total, initial=initial, desc=desc, file=sys.stderr, dynamic_ncols=True, mininterval=interval, smoothing=0.05
    )


def setup_logging(log_file: str | Path | None = None) -> None:
    """Log r2l messages to stderr (and to ``log_file`` when given)."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        handlers.append(logging.FileHandler(log_file))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", handlers=handlers, force=True)
