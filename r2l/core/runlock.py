"""Which Snakemake run holds a working directory's locks, so that the same command resumes after a kill.

Snakemake locks a working directory while it runs (``.snakemake/locks/``) and leaves the locks behind when it is
killed; the next run then stops with a LockException until ``snakemake --unlock``. r2l records the process that
holds the locks (:data:`HOLDER`: pid, host, start time, command) as the Snakefile is read (:func:`claim`); a later
run on the same host whose recorded holder is no longer alive removes the stale locks first (what ``--unlock``
does), and one whose holder is alive names it. Locks without a record of this host's are left to Snakemake.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path

HOLDER = Path(".snakemake") / "r2l-holder.json"  # relative to the working directory
LOCKS = Path(".snakemake") / "locks"  # Snakemake's lock files


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by someone else
    return True


def read_holder(workdir: Path) -> dict | None:
    """The recorded holder of ``workdir``'s locks, or None (no record, or an unreadable one)."""
    try:
        record = json.loads((workdir / HOLDER).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("pid"), int) else None


def record_holder(workdir: Path) -> None:
    """Record this process as the holder of ``workdir``'s locks (a run that has taken them)."""
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
              "command": " ".join(sys.argv)}
    path = workdir / HOLDER
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, path)


def claim(workdir: Path) -> str | None:
    """Take ``workdir`` for this run: when the recorded holder is alive, name it and leave everything as it is;
    otherwise remove the Snakemake locks it left (when it ran on this host) and record this process instead.

    Returns a line for the user (stale locks removed, or who is working here), or None.
    """
    holder, locks = read_holder(workdir), workdir / LOCKS
    locked = locks.is_dir() and any(locks.iterdir())
    here = holder is not None and holder.get("host") == socket.gethostname()
    who = f"pid {holder['pid']}, started {holder.get('started', '?')}: {holder.get('command', '?')}" if here else ""
    if here and holder["pid"] != os.getpid() and _alive(holder["pid"]):
        return f"r2l: another run is working in this folder ({who}); wait for it, or stop it" if locked else None
    line = None
    if locked and here:
        shutil.rmtree(locks, ignore_errors=True)
        line = f"r2l: removed the locks of an earlier run that was stopped ({who}); resuming"
    record_holder(workdir)
    return line
