"""One job per folder: an advisory lock held for a job's lifetime, and the clean-up it makes safe.

Snakemake's own lock guards a working directory, but after ``snakemake --unlock`` two runs can race for the
same outputs. r2l therefore locks each folder a stage writes into over time (a resume folder, a pseudo-data
store) with ``fcntl.flock`` on ``{folder}/.r2l.lock``. The kernel drops the lock when the process ends, even
when it is killed, so a dead run never blocks the next one. Holding the lock proves no live writer uses the
folder, so the temp files of killed writers (``.{name}.{random}.tmp...``, see :mod:`r2l.core.atomic`) can then
be removed.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from r2l.core.errors import R2LError
from r2l.core.log import log

LOCK_NAME = ".r2l.lock"


class FolderLock:
    """``with FolderLock(folder):`` holds ``folder``'s lock (made if needed) or raises R2LError at once."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._fd: int | None = None

    def __enter__(self) -> FolderLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise R2LError(f"{self.folder}: another r2l job is writing here ({holder}); wait for it to finish, or "
                           "stop it, then run the same command again") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the lock
            self._fd = None


def remove_stale_temps(folder: str | Path) -> int:
    """Remove the temp files left in ``folder`` by killed writers (call it holding the folder's lock).

    Returns the number removed; logs them with their total size.
    """
    stale = [p for p in Path(folder).glob(".*.tmp*") if p.is_file()]
    size = sum(p.stat().st_size for p in stale)
    for p in stale:
        p.unlink(missing_ok=True)
    if stale:
        log.info("removed %d temp file(s) of an interrupted run from %s (%.1f MB)", len(stale), folder, size / 1e6)
    return len(stale)
