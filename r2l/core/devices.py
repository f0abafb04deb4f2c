"""One GPU per job on a machine with several: a lock file per device.

``snakemake --cores N --resources gpu=G`` runs up to G GPU jobs at once, but Snakemake does not say which device
each should use (it sets no ``CUDA_VISIBLE_DEVICES``), so every job would open ``cuda:0``. A job whose device
setting is ``auto`` therefore claims a device when :func:`r2l.core.runtime.pick_device` first picks one, before it
puts anything on the GPU: it takes an exclusive ``fcntl.flock`` on ``{lock folder}/gpu-{id}.lock`` for the first
device no other process holds, and keeps it until the process ends. The kernel drops the lock when the process
ends, however it ends (``kill -9`` included), so a killed job's device is free for the next job at once and there is
nothing stale to clean up. The lock file names the holder (pid, host, time) for whoever looks.

Why here and not by setting ``CUDA_VISIBLE_DEVICES`` in ``r2l.workflow.stage()`` before torch starts CUDA:
choosing a device needs the number of devices, and counting them through torch starts the CUDA driver, which reads
``CUDA_VISIBLE_DEVICES`` once; changing it afterwards has no effect in that process (counting without CUDA would
need nvidia-smi or NVML). Claiming in ``pick_device`` also serves every caller that asks for ``auto`` (the rule
scripts, ``r2l render``, ``r2l bench``, the Python API), and it leaves alone what others decided: an explicit
device (``cuda:1``) is used as given, and where SLURM or the user has set ``CUDA_VISIBLE_DEVICES`` to one device,
the job sees one device and claims nothing. Locks are named after the physical device (the entry of
``CUDA_VISIBLE_DEVICES`` at that index when it is set), so jobs that see different subsets still agree.

The locks live in ``$R2L_GPU_LOCK_DIR``, by default ``r2l-gpu-locks`` in the system's temporary folder: one
folder per machine, shared by every r2l run on it.
"""

from __future__ import annotations

import datetime
import fcntl
import os
import socket
import tempfile
import time
from pathlib import Path

from r2l.core.log import log

LOCK_DIR_VARIABLE = "R2L_GPU_LOCK_DIR"

_held: dict[str, int] = {}  # what this process holds: "index" and "fd"


def lock_dir() -> Path:
    """The folder of the per-device lock files (``$R2L_GPU_LOCK_DIR``, else ``{tmp}/r2l-gpu-locks``)."""
    return Path(os.environ.get(LOCK_DIR_VARIABLE) or Path(tempfile.gettempdir()) / "r2l-gpu-locks")


def device_ids(count: int) -> list[str]:
    """Names of the ``count`` visible devices for their lock files: the physical ids where ``CUDA_VISIBLE_DEVICES``
    lists them (indices or UUIDs), else the indices."""
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    return visible[:count] if len(visible) >= count else [str(i) for i in range(count)]


def _try_lock(path: Path) -> int | None:
    """An fd holding ``path``'s exclusive lock, or None when another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    stamp = datetime.datetime.now().isoformat(timespec="seconds")
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {stamp}".encode(), 0)
    return fd


def _holder(path: Path) -> str:
    try:
        return path.read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def claim_gpu(count: int, wait: bool = True, poll: float = 1.0) -> int | None:
    """The index (0 .. count - 1) of a visible device that no other process holds, held until this process ends.

    Called again in the same process it returns the same index. With every device held it waits for one (logging
    who holds them) or, with ``wait=False``, returns None. ``count`` is the number of visible devices.
    """
    if held_gpu() is not None:
        return held_gpu()
    folder = lock_dir()
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"gpu-{name}.lock" for name in device_ids(count)]
    waited = None
    while True:
        for index, path in enumerate(paths):
            fd = _try_lock(path)
            if fd is not None:
                _held.update(index=index, fd=fd)
                log.info("using GPU %d of %d (cuda:%d; lock %s held by this job, pid %d)", index, count, index, path,
                         os.getpid())
                return index
        if not wait:
            return None
        if waited is None or time.monotonic() - waited > 60:
            holders = "; ".join(f"{p.name}: {_holder(p)}" for p in paths)
            log.warning("all %d GPUs are held by other r2l jobs (%s); waiting for one", count, holders)
            waited = time.monotonic()
        time.sleep(poll)


def held_gpu() -> int | None:
    """The index of the device this process holds, or None."""
    return _held.get("index")


def release_gpu() -> None:
    """Give back the device this process holds (otherwise it is given back when the process ends)."""
    fd = _held.pop("fd", None)
    _held.pop("index", None)
    if fd is not None:
        os.close(fd)
