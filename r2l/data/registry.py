"""The scene registry: which loader reads which ``format:`` (the loaders never import this module).

Formats: ``blender`` and ``builtin`` (written in the Blender format) are read by
:func:`r2l.data.blender.load_blender`, ``llff`` by :func:`r2l.data.llff.load_llff`, and ``photos`` (a folder
written by :func:`r2l.data.colmap.photos_to_scene`) as the llff or blender scene it holds.
"""

from __future__ import annotations

from pathlib import Path

from r2l.core.errors import R2LError
from r2l.data.blender import load_blender
from r2l.data.colmap import scene_format
from r2l.data.llff import load_llff
from r2l.data.scene import Scene

FORMATS = ("builtin", "blender", "llff", "photos")


def load_scene(
    format: str,
    path: str | Path,
    name: str | None = None,
    resolution: int | None = None,
    factor: int = 8,
    background: tuple[float, float, float] = (1.0, 1.0, 1.0),
    test_skip: int = 1,
    llff_hold: int = 8,
    resize_order: str = "premultiplied",
) -> Scene:
    """Load a scene folder of a known format.

    format: ``blender`` (and ``builtin``, which is written in the Blender format), ``llff``, or ``photos``
    (a folder written by :func:`r2l.data.colmap.photos_to_scene`, read as the llff or blender scene it holds).
    resolution: Blender side in pixels (area-averaged resize); None keeps the files' size.
    factor: LLFF ``images_{factor}`` folder. test_skip: keep every n-th Blender test view.
    llff_hold: every n-th LLFF image is held out for test. resize_order: Blender RGBA to RGB, see
    :data:`r2l.data.blender.RESIZE_ORDERS`.
    """
    path = Path(path)
    name = name or path.name
    if format == "photos":
        format = scene_format(path)
    if format in ("blender", "builtin"):
        scene = load_blender(path, name=name, resolution=resolution, background=background, test_skip=test_skip,
                             resize_order=resize_order)
        scene.format = format
        return scene
    if format == "llff":
        return load_llff(path, name=name, factor=factor, hold=llff_hold)
    raise R2LError(f"unknown scene format {format!r}; expected one of {', '.join(FORMATS)}")
