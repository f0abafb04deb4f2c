"""Atomic outputs: every file or folder r2l writes appears complete or not at all.

A writer fills a fresh temp sibling of the target (same folder, hence same filesystem) and the temp is
then renamed onto the target with :func:`os.replace`; on any failure the temp is removed and the
target is left as it was. Temp names start with a dot and the target's name:

- files: ``.{name}.{random}.tmp{suffix}`` (:func:`atomic_write` and the helpers built on it);
- folders: ``.{name}.tmp-{random}`` (:func:`atomic_folder`, which also removes such leftovers of an
  interrupted earlier run before it starts).

Temps are created with the usual permissions (0o666 / 0o777 less the umask), so a renamed output
looks like any file or folder written directly.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from r2l.core.errors import R2LError

log = logging.getLogger("r2l")


def _fresh_sibling(path: Path, head: str, tail: str, make: Callable[[Path], None]) -> Path:
    """Create ``.{path.name}{head}{random}{tail}`` beside ``path`` with ``make`` (which raises
    FileExistsError on a name clash, then another random part is tried); returns it."""
    while True:
        tmp = path.with_name(f".{path.name}{head}{secrets.token_hex(6)}{tail}")
        try:
            make(tmp)
        except FileExistsError:
            continue
        return tmp


def _make_file(path: Path) -> None:
    """Create the empty file ``path`` (FileExistsError if it exists)."""
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))


# errno values of a write the user can fix (space, quota, permissions, a read-only or failing disk)
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.EIO})
# how torch reports a failed write (its C++ writer hides the errno): "basic_ios::clear: iostream error",
# "[enforce fail at inline_container.cc:...] unexpected pos ..." , "PytorchStreamWriter failed writing ..."
TORCH_WRITE_FAILURES = ("iostream error", "inline_container", "unexpected pos", "PytorchStreamWriter")
LOW_SPACE_BYTES = 64 << 20  # a failed write with less than this free on the disk is put down to a full disk


def write_error(path: str | Path, exc: BaseException) -> R2LError | None:
    """The one-line error for ``exc`` raised while writing ``path`` (None when it is not a failed write): an
    OSError of :data:`WRITE_ERRNOS` by its errno, torch's writer errors by the free space left on the disk."""
    if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:
        return R2LError(f"{path}: cannot write it: {os.strerror(exc.errno)}")
    if isinstance(exc, RuntimeError) and any(text in str(exc) for text in TORCH_WRITE_FAILURES):
        free = _free_bytes(Path(path).parent)
        if free is not None and free < LOW_SPACE_BYTES:
            return R2LError(f"{path}: cannot write it: no space left on device ({free / 1e6:.1f} MB free)")
        return R2LError(f"{path}: cannot write it: {str(exc).strip().splitlines()[0]}")
    return None


def _free_bytes(folder: Path) -> int | None:
    """Bytes free for this user on ``folder``'s disk (None when it cannot be told)."""
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def atomic_write(path: str | Path, write: Callable[[Path], None], suffix: str = "") -> Path:
    """Call ``write(tmp)`` to fill a temp file beside ``path``, then rename it onto ``path``; returns ``path``.

    ``tmp`` exists (empty) when ``write`` is called and ends with ``suffix`` (e.g. ``".mp4"`` for
    writers that pick the format from the name). Parent folders are created. If ``write`` raises, the
    temp file is removed and ``path`` is untouched; a failed write (full disk, quota, permissions,
    read-only disk) is an R2LError naming ``path`` and the cause (:func:`write_error`).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _fresh_sibling(path, ".", ".tmp" + suffix, _make_file)
    except OSError as exc:
        error = write_error(path, exc)
        if error is None:
            raise
        raise error from exc
    try:
        write(tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        error = write_error(path, exc)
        if error is None:
            raise
        raise error from exc
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_stream(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(fh)`` on a binary file object, flush and fsync it, then rename it onto ``path``."""

    def to_file(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())

    return atomic_write(path, to_file)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_stream(path, lambda fh: fh.write(text.encode("utf-8")))


def atomic_write_json(path: str | Path, obj) -> Path:
    """Write ``obj`` as indented JSON with sorted keys to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True))


def atomic_folder(dest: str | Path, fill: Callable[[Path], Path | None]) -> Path:
    """Build a folder in a scratch folder beside ``dest`` and rename it onto ``dest``; returns ``dest``.

    ``fill(scratch)`` gets a fresh empty folder and returns the folder to move onto ``dest``: ``scratch``
    itself (or None for that) or a folder inside it. Leftover scratch folders of an interrupted run for
    the same ``dest`` are removed first; the scratch folder is always removed at the end. ``dest`` must
    not exist or be an empty folder (R2LError when the rename fails, e.g. it appeared meanwhile).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    for stale in dest.parent.glob(f".{dest.name}.tmp-*"):
        log.info("removing %s left by an interrupted run", stale)
        shutil.rmtree(stale, ignore_errors=True)
    scratch = _fresh_sibling(dest, ".tmp-", "", lambda p: p.mkdir(mode=0o777))
    try:
        src = fill(scratch)
        src = scratch if src is None else src
        try:
            os.replace(src, dest)
        except OSError as exc:
            raise R2LError(f"{dest}: cannot move the finished folder into place ({exc})") from exc
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return dest
