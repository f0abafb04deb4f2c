"""Content fingerprints: the sha256 of a file's bytes, and of a JSON-able value."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from r2l.core.atomic import atomic_write_json


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of the bytes of the file at ``path`` (read in blocks by :func:`hashlib.file_digest`)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def value_sha256(value) -> str:
    """Hex sha256 of ``value`` as canonical JSON (sorted keys; what JSON cannot hold is written with ``str``)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def files_digest(files: list[str | Path], cache: str | Path | None = None) -> str:
    """Hex sha256 over the bytes of ``files`` (order and names relative to their common folder included, so a
    moved folder keeps its digest), cheap to repeat on many files.

    cache: a JSON file remembering each file's size, modification time (ns) and sha256; a file whose size and
    time are unchanged is not read again, one whose size or time changed is hashed again (so touching a file
    costs a read, while editing it in place and restoring its time is the one change not seen).
    The cache is rewritten atomically; a missing or unreadable cache just means hashing everything.
    """
    known = _read_cache(cache)
    entries, fresh = [], {}
    files = [Path(f) for f in files]
    root = Path(os.path.commonpath([str(f.resolve().parent) for f in files])) if files else Path()
    for f in files:
        st = f.stat()
        key = str(f.resolve())
        hit = known.get(key)
        sha = hit[2] if hit and hit[:2] == [st.st_size, st.st_mtime_ns] else file_sha256(f)
        fresh[key] = [st.st_size, st.st_mtime_ns, sha]
        entries.append([str(f.resolve().relative_to(root)), sha])
    if cache is not None and fresh != {k: known.get(k) for k in fresh}:
        atomic_write_json(cache, {**known, **fresh})
    return value_sha256(entries)


def _read_cache(cache: str | Path | None) -> dict:
    """The digest cache's entries (path -> [size, mtime_ns, sha256]), empty when absent or unreadable."""
    if cache is None or not Path(cache).is_file():
        return {}
    try:
        data = json.loads(Path(cache).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}
