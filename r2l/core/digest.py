"""Content fingerprints: the sha256 of a file's bytes, and of a JSON-able value."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of the bytes of the file at ``path`` (read in blocks by :func:`hashlib.file_digest`)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def value_sha256(value) -> str:
    """Hex sha256 of ``value`` as canonical JSON (sorted keys; what JSON cannot hold is written with ``str``)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()
