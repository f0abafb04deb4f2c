"""Several GPUs for one training job: the student's loop on the GPUs of one node with DistributedDataParallel.

A rule whose ``gpus`` resource is above 1 calls :func:`run_training`, which writes the job (the name of the
training function and its arguments) as JSON into the resume folder and :func:`launch` es ``torchrun``
(``python -m torch.distributed.run --standalone``) with one process per GPU. Each process runs this module on the
job (:func:`main`): :func:`init_from_env` joins the process group (NCCL on GPUs, gloo on CPU) and picks the
process's device, then the training function runs as it would in one process;
:func:`r2l.stages.student.train_student` splits each batch over the processes and lets only the first write.
With the device ``cpu`` (tests), ``gpus: 2`` runs two gloo processes on the CPU.

Only the student's stages are distributed (``train_student``, ``finetune_student``): the NeRF teacher trains on
a few thousand rays a step, too few to keep several GPUs busy, and the grid teacher changes its parameters' shapes
while it trains, which DistributedDataParallel does not allow.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from r2l.core.atomic import atomic_write_json
from r2l.core.errors import R2LError
from r2l.core.log import CONSOLE
from r2l.core.runtime import pick_device
from r2l.stages.student import distill_config_from_dict, finetune_student, train_student

log = logging.getLogger("r2l")

TRAINERS = {"train_student": train_student, "finetune_student": finetune_student}
JOB_FILE = "distributed_job.json"  # in the resume folder


def run_training(name: str, args: dict, gpus: int, resume_dir: str | Path, log_path: str | Path | None = None,
                 wanted: int | None = None):
    """Call the training function ``name`` (a key of :data:`TRAINERS`) with ``args``: in this process when
    ``gpus`` <= 1 (returning its result), else in ``gpus`` processes launched by torchrun (returning None).

    args: its keyword arguments, ``cfg`` a :class:`~r2l.stages.student.DistillConfig`, the others JSON values or
    paths. log_path: the rule's log, named in the error when a process fails. wanted: the GPUs the config asks
    for; a warning says so when Snakemake granted fewer (``--resources gpu=G`` caps a job's ``gpus``).
    """
    if wanted is not None and wanted > gpus:
        log.warning("the config asks for %d GPUs for this job but Snakemake granted %d (raise --resources gpu=G to "
                    "use them): training in %d process(es)", wanted, gpus, max(gpus, 1), extra=CONSOLE)
    if gpus <= 1:
        return TRAINERS[name](**args)
    check_devices(args["cfg"].device, gpus)
    launch(gpus, write_job(Path(resume_dir) / JOB_FILE, name, args), log_path)
    return None


def write_job(path: Path, name: str, args: dict) -> Path:
    """Write the job ``{"function": name, "args": ..., "config": ...}`` atomically to ``path``; returns it."""
    if name not in TRAINERS:
        raise R2LError(f"no distributed training function {name!r}; known: {', '.join(TRAINERS)}")
    rest = {k: v for k, v in args.items() if k != "cfg"}

    def plain(value):
        if isinstance(value, Path):
            return str(value)
        raise R2LError(f"{path}: the {name} argument value {value!r} cannot be passed to other processes")

    job = {"function": name, "args": json.loads(json.dumps(rest, default=plain)),
           "config": dataclasses.asdict(args["cfg"])}
    return atomic_write_json(path, job)


def read_job(path: Path) -> tuple[str, dict]:
    """The training function's name and keyword arguments (``cfg`` rebuilt) from a job file of :func:`write_job`."""
    try:
        job = json.loads(Path(path).read_text())
        name, args, config = job["function"], job["args"], job["config"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise R2LError(f"{path}: not a readable distributed training job ({err})") from err
    if name not in TRAINERS:
        raise R2LError(f"{path}: unknown training function {name!r}")
    return name, {**args, "cfg": distill_config_from_dict(config)}


def check_devices(device: str, nproc: int) -> None:
    """R2LError when ``nproc`` processes cannot each have a device of their own under the ``device`` setting."""
    if device.startswith("cuda:"):
        raise R2LError(f"device {device!r} names one GPU, but the job asks for {nproc}: use device auto or cuda")
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        if device == "auto":
            log.warning("no GPU visible: training in %d CPU processes (gloo)", nproc)
        return
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count < nproc:
        raise R2LError(f"the job asks for {nproc} GPUs but this machine shows {count}: lower its resources gpus "
                       f"(or check CUDA_VISIBLE_DEVICES)")


def launch(nproc: int, job_path: Path, log_path: str | Path | None = None) -> None:
    """Run the job in ``nproc`` processes with torchrun, copying their output to stderr (the rule's log).

    Raises R2LError, with the first error a process reported, when any of them fails (torchrun then stops the
    others).
    """
    package_root = str(Path(__file__).resolve().parents[2])  # the checkout the processes import r2l from
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p),
           "OMP_NUM_THREADS": str(max(1, torch.get_num_threads() // nproc)), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "r2l.stages.distributed", str(job_path)]
    log.info("training in %d processes: %s", nproc, " ".join(cmd))
    errors = []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as proc:
        for line in proc.stdout:
            sys.stderr.write(line)
            if line.startswith("r2l: "):
                errors.append(line[len("r2l: "):].strip())
    if proc.returncode != 0:
        where = f"; the processes' output is in {log_path}" if log_path else ""
        first = errors[0] if errors else f"torchrun exited with status {proc.returncode}"
        raise R2LError(f"training in {nproc} processes failed: {first}{where}")


def init_from_env(device: str) -> torch.device | None:
    """Join the process group torchrun's variables (WORLD_SIZE, RANK, LOCAL_RANK) describe; returns this process's
    device, or None outside torchrun.

    device: the config's setting. ``cpu`` (or ``auto`` without a GPU): gloo on the CPU; ``cuda``: NCCL on
    ``cuda:LOCAL_RANK``; ``auto``: NCCL on a GPU this process claims for itself (:func:`pick_device`).
    """
    if "WORLD_SIZE" not in os.environ:
        return None
    rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    if device.startswith("cuda:"):
        raise R2LError(f"device {device!r} names one GPU; with several processes use auto or cuda")
    chosen = torch.device("cuda", local) if device == "cuda" else pick_device(device)
    if chosen.type != "cuda":
        dist.init_process_group("gloo", rank=rank, world_size=world)
        return chosen
    torch.cuda.set_device(chosen)
    dist.init_process_group("nccl", rank=rank, world_size=world, device_id=chosen)
    return chosen


def run_job(job_path: Path) -> int:
    """One training process: join the group, run the job on this process's device; returns the exit status.

    Only the first process logs below warnings; an R2LError is printed as one ``r2l: process N: ...`` line, which
    :func:`launch` reports.
    """
    rank = int(os.environ.get("RANK", "0"))
    if rank != 0:
        logging.getLogger("r2l").setLevel(logging.WARNING)
    try:
        name, args = read_job(job_path)
        device = init_from_env(args["cfg"].device)
        if device is None:
            raise R2LError(f"{job_path}: run it with torchrun (r2l.stages.distributed.launch), not directly")
        TRAINERS[name](**{**args, "cfg": dataclasses.replace(args["cfg"], device=str(device))})
    except R2LError as err:
        print(f"r2l: process {rank}: {err}", file=sys.stderr, flush=True)
        return 1
    dist.destroy_process_group()
    return 0


def main(argv: list[str]) -> int:
    """``python -m r2l.stages.distributed JOB.json`` (what :func:`launch` runs in each process)."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)s [process {os.environ.get('RANK', '?')}] %(message)s")
    if len(argv) != 1:
        print("usage: python -m torch.distributed.run ... -m r2l.stages.distributed JOB.json", file=sys.stderr)
        return 2
    return run_job(Path(argv[0]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
