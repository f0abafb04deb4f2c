"""What every training loop shares besides checkpoints: device choice, fast maths, seeding, random-state
capture, learning-rate setting, the non-finite guard and history thinning."""

from __future__ import annotations

import contextlib
import math
import random
from pathlib import Path

import numpy as np
import torch

from r2l.core.devices import claim_gpu
from r2l.core.errors import R2LError


def pick_device(name: str | None = None) -> torch.device:
    """``name`` ("cuda", "cpu", "cuda:1", or None/"auto" for CUDA when present, else CPU).

    "auto" with several visible GPUs gives this process one of its own (``cuda:i``, made the current device): the
    first that no other process holds, claimed with a lock file held until the process ends
    (:func:`r2l.core.devices.claim_gpu`), so that concurrent jobs (``--resources gpu=G``) use different GPUs.
    """
    if name in (None, "", "auto"):
        if not torch.cuda.is_available():
            return torch.device("cpu")
        count = torch.cuda.device_count()
        if count < 2:
            return torch.device("cuda")
        index = claim_gpu(count)
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise R2LError(f"device {name!r} was asked for but CUDA is not available on this machine")
    return torch.device(name)


# The arithmetic a stage computes in (one setting per stage, recorded in every model file):
# - "fp32": float32 everywhere, TF32 off (what the R2L authors trained and evaluated with);
# - "tf32": float32 tensors, matmuls and convolutions on CUDA's TF32 tensor cores (no effect on CPU);
# - "bf16": bf16 autocast (matmuls in bfloat16, on CUDA and on CPU) with float32 weights and losses.
# Positional encodings are computed in float32 under every setting (r2l.models.nerf.posenc).
PRECISIONS = ("fp32", "tf32", "bf16")


def check_precision(precision: str) -> str:
    """``precision`` when it is one of :data:`PRECISIONS`; R2LError otherwise."""
    if precision not in PRECISIONS:
        raise R2LError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


@contextlib.contextmanager
def computing_in(device: torch.device, precision: str):
    """Run the body at ``precision`` on ``device``: bf16 autocast for "bf16"; CUDA's TF32 switches on for "tf32"
    and off otherwise (they are process-wide, so they are restored on exit)."""
    check_precision(precision)
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"
    try:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


# Learning-rate decay horizons of nerf-pytorch and the R2L authors' configs, teacher and student alike:
# Blender (object-centric) scenes decay over 500k steps, LLFF (forward-facing, NDC) scenes over 250k.
PAPER_LR_DECAY_STEPS = {False: 500_000, True: 250_000}  # keyed by ndc


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; returns a CPU generator for ray sampling."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def rng_state(generators: dict[str, torch.Generator], device: torch.device) -> dict:
    """The states of ``generators`` (by name) and of torch's global CPU (and CUDA) generators."""
    state = {name: gen.get_state() for name, gen in generators.items()}
    state["torch"] = torch.get_rng_state()
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, generators: dict[str, torch.Generator], device: torch.device) -> None:
    """Restore what :func:`rng_state` captured (the global states only where they were stored)."""
    for name, gen in generators.items():
        gen.set_state(state[name])
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def set_group_lr(optimizer: torch.optim.Optimizer, lr_of_group) -> None:
    """Set every parameter group's ``lr`` to ``lr_of_group(group)``."""
    for group in optimizer.param_groups:
        group["lr"] = lr_of_group(group)


def check_finite(loss: torch.Tensor, step: int, resume_dir: str | Path) -> None:
    """Stop with a clear error when the loss is NaN or infinite (the last good checkpoint stays)."""
    value = float(loss)
    if not math.isfinite(value):
        raise R2LError(
            f"loss became {value} at step {step}; training stopped. The last good checkpoint is kept in "
            f"{resume_dir}: lower the learning rate or check the data, then rerun to resume from it."
        )


def check_finite_weights(model: torch.nn.Module, step: int, resume_dir: str | Path) -> None:
    """Refuse to checkpoint non-finite weights: stop with a clear error (the last good checkpoint stays)."""
    for name, p in model.state_dict().items():
        if p.is_floating_point() and not torch.isfinite(p).all():
            raise R2LError(
                f"weights {name} became non-finite at step {step}; training stopped. The last good checkpoint is "
                f"kept in {resume_dir}: lower the learning rate, then rerun to resume from it."
            )


def thin(history: list, n: int = 200) -> list:
    """At most ``n`` evenly spread entries of a history list (first and last kept)."""
    if len(history) <= n:
        return list(history)
    return [history[i] for i in sorted(set(np.linspace(0, len(history) - 1, n).round().astype(int).tolist()))]


def chunked(fn, rays_o: torch.Tensor, rays_d: torch.Tensor, chunk: int):
    """Apply ``fn(rays_o, rays_d)`` to slices of at most ``chunk`` rays and concatenate.

    rays_o, rays_d: (n_rays, 3). ``fn`` returns a tensor ``(m, ...)``, a dict or a tuple of them; the result
    has the same structure with the slices joined along the first axis. Raises ValueError for zero rays.
    """
    outs = [fn(rays_o[i : i + chunk], rays_d[i : i + chunk]) for i in range(0, rays_o.shape[0], chunk)]
    if not outs:
        raise ValueError("chunked() needs at least one ray")
    if isinstance(outs[0], dict):
        return {k: torch.cat([o[k] for o in outs], dim=0) for k in outs[0]}
    if isinstance(outs[0], tuple):
        return tuple(torch.cat(parts, dim=0) for parts in zip(*outs))
    return torch.cat(outs, dim=0)
