"""The installed r2l's version (:func:`package_version`), for ``r2l --version`` and exported files' metadata."""

from __future__ import annotations

import importlib.metadata


def package_version() -> str:
    """The installed r2l's version (``unknown`` when r2l runs from a checkout that is not installed)."""
    try:
        return importlib.metadata.version("r2l")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
