"""The one training loop the teacher and the student stages run (:func:`run_loop`).

The loop owns what the stages share: resuming from the newest usable checkpoint of the resume folder (an older one
when the newest is corrupt), the steps, reading and checking the loss every ``log_every`` steps (the NaN guard; the
loss stays on the device in between), the history rows (model.pt's loss rows ``[steps done, loss, train PSNR]`` and
the ``history.csv`` rows of :mod:`r2l.report.curves`: step, loss, train PSNR, val PSNR, lr, seconds), validation
every ``val_every`` steps and once at the end, the best-validated weights when the task selects on validation,
checkpoints every ``ckpt_every`` steps in the one layout of every stage (:data:`r2l.core.checkpoint.CHECKPOINT_KEYS`;
non-finite weights refused), the metrics every model file shares (:func:`common_metrics`), the progress bar, the
training seconds (validation excluded, accumulated over resumes) and the finish. A :class:`Task` supplies what
differs: its networks, its step, its validation, its part of a checkpoint and its model file
(:class:`r2l.stages.teacher.TeacherTask`, :class:`r2l.stages.student.StudentTask`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple, Protocol

import torch
from tqdm import tqdm

from r2l.core.checkpoint import load_latest_checkpoint, remove_checkpoints_after, save_checkpoint
from r2l.core.errors import R2LError
from r2l.core.log import log, progress
from r2l.core.metrics import psnr_from_mse
from r2l.core.runtime import check_finite, check_finite_weights, thin
from r2l.report.curves import record_row, write_history


@dataclass
class LoopState:
    """What the loop carries from step to step (and, through the task's checkpoint layout, across resumes).

    step: optimiser steps taken (the global count: finetuning continues the student's); base_step: the step the
    run started from; history: model.pt's loss rows ``[steps done, loss, train PSNR]``, every family alike (the
    train PSNR is that of the colour MSE: the teacher's final image, the student's loss); val_history: ``[step,
    val PSNR or None]`` rows; curve: the rows of ``history.csv``; best: ``{psnr, step, weights}`` of the best
    validation when the task selects on it (empty before); resumed: restored from a checkpoint. A checkpoint
    keeps ``step`` and ``history`` at its top level and the rest (:data:`LOOP_KEYS`) under ``loop``.
    """

    step: int = 0
    base_step: int = 0
    train_seconds: float = 0.0
    init_seconds: float = 0.0
    history: list = field(default_factory=list)
    val_history: list = field(default_factory=list)
    curve: list = field(default_factory=list)
    best: dict = field(default_factory=dict)
    resumed: bool = False


LOOP_KEYS = ("base_step", "train_seconds", "init_seconds", "val_history", "curve", "best")  # a checkpoint's "loop"


def resumed_state(ckpt: dict) -> LoopState:
    """The loop state a checkpoint (today's layout) holds."""
    return LoopState(step=int(ckpt["step"]), history=ckpt["history"], **{k: ckpt["loop"][k] for k in LOOP_KEYS},
                     resumed=True)


class StepOut(NamedTuple):
    """A step's results, unread on the device: ``loss`` and ``mse`` 0-dim tensors (mse None: the loss is the
    colour MSE), and the step's learning rate."""

    loss: torch.Tensor
    mse: torch.Tensor | None
    lr: float


class Task(Protocol):
    """What a training stage supplies to :func:`run_loop`."""

    name: str  # the progress bar's label
    stage: str  # "teacher" or "student": its checkpoints' stage (another stage's are refused)
    kind: str  # the kind of its model file (its checkpoints record it too)
    model: torch.nn.Module  # the networks (unwrapped): checked before checkpoints, copied as the best weights
    device: torch.device
    resume_dir: Path
    history_path: Path | None
    readers: dict  # checkpoint format version -> reader (r2l.core.checkpoint.read_versioned)
    rank: int  # this process's rank; only rank 0 writes files
    world: int  # the number of training processes
    end_step: int  # the step the stage ends at
    stop_step: int  # the step this call stops at (end_step, or earlier to return unfinished)
    validate_first: bool  # validate before the first step of a fresh run
    select_on_val: bool  # keep the best-validated weights

    def check(self, ckpt: dict) -> None: ...  # raise when a checkpoint of its stage cannot be resumed
    def restore(self, ckpt: dict | None) -> LoopState: ...  # load a checkpoint (None: a fresh start)
    def step(self, step: int) -> StepOut: ...  # one optimiser step of 0-based index ``step``
    def reduce(self, loss: torch.Tensor) -> torch.Tensor: ...  # the loss over all processes
    def validate(self, step: int) -> float | None: ...  # val PSNR (None: nothing to validate on)
    def state_dict(self) -> dict: ...  # its part of a checkpoint: config, weights, optimizer, rng, extra
    def finish(self, state: LoopState) -> dict: ...  # write the model file; return its metrics


class Clock:
    """Training seconds: wall time since the start, less validation, plus what earlier runs trained."""

    def __init__(self, trained: float):
        self.start, self.paused = time.perf_counter() - trained, 0.0

    def seconds(self) -> float:
        return time.perf_counter() - self.start - self.paused

    def pause(self, t0: float) -> None:
        self.paused += time.perf_counter() - t0


def run_loop(task: Task, log_every: int, val_every: int, ckpt_every: int,
             on_step: Callable[[int, torch.Tensor], None] | None = None) -> dict:
    """Resume ``task``, train it to ``task.stop_step``, and finish it when that is its ``end_step``.

    Returns the task's :meth:`Task.finish` metrics, or ``{"finished": False, "step", "history", "val_history"}``
    when it stopped early. on_step(step, loss): called after every step with the loss tensor, unread.
    """
    later = remove_checkpoints_after(task.resume_dir, task.end_step)
    if later:
        log.warning("%s: %d checkpoint(s) past this run's last step %d (written by a run of more steps) removed",
                    task.resume_dir, len(later), task.end_step)
    ckpt = load_latest_checkpoint(task.resume_dir, check=lambda c: check_checkpoint(task, c), readers=task.readers)
    if ckpt is not None:
        log.info("resuming %s from step %d of %s (%.0f s trained)", task.stage, ckpt["step"], task.resume_dir,
                 ckpt["loop"]["train_seconds"])
    state = task.restore(ckpt)
    if task.validate_first and not state.resumed:
        validate(task, state)
    bar = progress(task.end_step, initial=state.step, desc=task.name) if task.rank == 0 else tqdm(disable=True)
    clock = Clock(state.train_seconds)
    while state.step < task.stop_step:
        step = state.step
        out = task.step(step)
        state.step, state.train_seconds = step + 1, clock.seconds()
        if step % log_every == 0 or state.step == task.end_step:  # the loss is read (a host sync) only here
            record_step(task, state, step, out, bar)
        bar.update(1)
        if val_every > 0 and state.step % val_every == 0 and state.step < task.end_step:
            t0 = time.perf_counter()
            validate(task, state)
            clock.pause(t0)
        if state.step % ckpt_every == 0 or state.step == task.stop_step:
            checkpoint(task, state)
        if on_step is not None:
            on_step(state.step, out.loss)
    bar.close()
    return finish(task, state)


def record_step(task: Task, state: LoopState, step: int, out: StepOut, bar) -> None:
    """Read the loss of step ``step`` (stop with an R2LError when it is not finite), add it to the histories and
    the progress bar. The CSV row is at ``state.step`` (steps done) with the lr and the training seconds."""
    loss = task.reduce(out.loss)
    check_finite(loss, step, task.resume_dir)
    loss = float(loss)
    train_psnr = psnr_from_mse(loss if out.mse is None else float(out.mse))
    state.history.append([state.step, loss, train_psnr])
    record_row(state.curve, state.step, loss=loss, train_psnr=train_psnr, lr=out.lr, seconds=state.train_seconds)
    bar.set_postfix(loss=f"{loss:.4g}", psnr=f"{train_psnr:.2f}", refresh=False)


def validate(task: Task, state: LoopState) -> None:
    """Validate at ``state.step``: record it and, when the task selects on validation, keep the best weights."""
    psnr = task.validate(state.step)
    state.val_history.append([state.step, psnr])
    if psnr is None:
        return
    record_row(state.curve, state.step, val_psnr=psnr, seconds=state.train_seconds)
    if task.select_on_val and (not state.best or psnr > state.best["psnr"]):
        state.best = {"psnr": psnr, "step": state.step, "weights": cpu_weights(task.model)}


def checkpoint(task: Task, state: LoopState) -> None:
    """Refuse non-finite weights (R2LError, in every process); process 0 writes the checkpoint and the CSV."""
    check_finite_weights(task.model, state.step, task.resume_dir)
    if task.rank != 0:
        return
    save_checkpoint(task.resume_dir, checkpoint_dict(task, state), state.step)
    if task.history_path is not None:
        write_history(task.history_path, state.curve)


def checkpoint_dict(task: Task, state: LoopState) -> dict:
    """``task``'s checkpoint at ``state`` in the one layout of every stage
    (:data:`r2l.core.checkpoint.CHECKPOINT_KEYS`)."""
    part = task.state_dict()
    return {"stage": task.stage, "kind": task.kind, "config": part["config"], "step": state.step,
            "weights": part["weights"], "optimizer": part["optimizer"], "rng": part["rng"], "history": state.history,
            "loop": {k: getattr(state, k) for k in LOOP_KEYS}, "extra": part["extra"]}


def check_checkpoint(task: Task, ckpt: dict) -> None:
    """Raise when ``ckpt`` (today's layout) cannot resume ``task``: R2LError for another stage's checkpoint,
    KeyError for a missing loop key; then the task's own :meth:`Task.check`."""
    if ckpt["stage"] != task.stage:
        raise R2LError(f"{task.resume_dir}: holds checkpoints of the {ckpt['stage']} stage, not of the {task.stage}; "
                       "use another resume folder or delete it")
    _ = int(ckpt["step"]), list(ckpt["history"]), [ckpt["loop"][k] for k in LOOP_KEYS]
    task.check(ckpt)


def common_metrics(task: Task, state: LoopState) -> dict:
    """The metrics every model file records, teacher and student alike: ``loss_history`` (at most 200 rows of
    :attr:`LoopState.history`), ``final_loss``, ``val_history``, ``train_seconds`` (this stage),
    ``total_train_seconds`` (with the stages it continues), ``base_step``, ``final_step``, ``device``,
    ``device_name``, ``processes``."""
    device = task.device
    return {
        "loss_history": thin(state.history), "final_loss": state.history[-1][1] if state.history else None,
        "val_history": state.val_history, "train_seconds": float(state.train_seconds),
        "total_train_seconds": float(state.train_seconds + state.init_seconds),
        "base_step": int(state.base_step), "final_step": int(state.step), "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "processes": task.world,
    }


def finish(task: Task, state: LoopState) -> dict:
    """At ``end_step``: the final validation (unless done at this step), the task's model file and the CSV; before
    it: the unfinished result."""
    if state.step < task.end_step:
        log.info("%s stopped at step %d of %d (max_steps); rerun to resume", task.name, state.step, task.end_step)
        return {"finished": False, "step": state.step, "history": state.history, "val_history": state.val_history}
    if not state.val_history or state.val_history[-1][0] != state.step:
        t0 = time.perf_counter()
        validate(task, state)
        log.debug("final validation: %.1f s", time.perf_counter() - t0)
    metrics = task.finish(state)
    if task.rank == 0 and task.history_path is not None:
        write_history(task.history_path, state.curve)
    return metrics


def cpu_weights(model: torch.nn.Module) -> dict:
    """A copy of ``model``'s state dict on the CPU."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
