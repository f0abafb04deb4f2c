"""Which files of a folder are images: :data:`IMAGE_SUFFIXES`, :func:`list_images`.

Standard library only (no numpy, no image library), so that the Snakefile can list a photos scene's photos;
:mod:`r2l.core.imageio` reads them.
"""

from __future__ import annotations

from pathlib import Path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def list_images(folder: str | Path) -> list[Path]:
    """Image files (png/jpg/jpeg, any case; hidden files skipped) directly in ``folder``, sorted by name."""
    folder = Path(folder)
    return sorted(
        p for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )
