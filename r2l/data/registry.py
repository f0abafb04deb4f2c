"""The scene registry: which loader reads which ``format:`` (the loaders never import this module).

Formats: ``blender`` and ``builtin`` (written in the Blender format) are read by
:func:`r2l.data.blender.load_blender`, ``llff`` by :func:`r2l.data.llff.load_llff`, and ``photos`` (a folder
written by :func:`r2l.data.colmap.photos_to_scene`) as the llff or blender scene it holds. A Blender-format
folder with the marker of :mod:`r2l.data.unbounded` (the built-in unbounded scene, a walk-around capture posed by
COLMAP) is read as an unbounded scene, and so is any Blender-format scene loaded with ``layout="unbounded"``
(normalised from its cameras alone, :func:`unbounded_by_hand`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from r2l.core.errors import R2LError
from r2l.data.blender import load_blender
from r2l.data.colmap import normalise_unbounded, scene_format
from r2l.data.llff import load_llff
from r2l.data.scene import Scene
from r2l.data.unbounded import MARKER, as_unbounded, read_marker, unbounded_bounds

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
    layout: str = "auto",
) -> Scene:
    """Load a scene folder of a known format.

    format: ``blender`` (and ``builtin``, which is written in the Blender format), ``llff``, or ``photos``
    (a folder written by :func:`r2l.data.colmap.photos_to_scene`, read as the llff or blender scene it holds).
    A Blender-format folder with an unbounded-scene marker is read as an unbounded scene
    (:func:`r2l.data.unbounded.as_unbounded`); ``layout="unbounded"`` makes one without a marker unbounded too
    (:func:`unbounded_by_hand`; other layouts leave a scene as its files say).
    resolution: Blender side in pixels (area-averaged resize); None keeps the files' size.
    factor: LLFF ``images_{factor}`` folder. test_skip: keep every n-th Blender test view.
    llff_hold: every n-th LLFF image is held out for test. resize_order: Blender RGBA to RGB, see
    :data:`r2l.data.blender.RESIZE_ORDERS`."""
    path = Path(path)
    name = name or path.name
    if format == "photos":
        format = scene_format(path)
    if format in ("blender", "builtin"):
        scene = load_blender(path, name=name, resolution=resolution, background=background, test_skip=test_skip,
                             resize_order=resize_order)
        scene.format = format
        marker = read_marker(path)
        if marker is None:
            return unbounded_by_hand(scene) if layout == "unbounded" else scene
        scene = as_unbounded(scene, marker)
        scene.pose_files = [*scene.pose_files, str(path / MARKER)]
        return scene
    if format == "llff":
        return load_llff(path, name=name, factor=factor, hold=llff_hold)
    raise R2LError(f"unknown scene format {format!r}; expected one of {', '.join(FORMATS)}")


def unbounded_by_hand(scene: Scene) -> Scene:
    """A Blender-format ``scene`` (no marker) as an unbounded scene: every pose moved by the normalisation of its
    training cameras (:func:`r2l.data.colmap.normalise_unbounded` without sparse points: centred where their axes
    meet, up +z, the cameras 2.25 from the centre on average), the bounds of :func:`r2l.data.unbounded.unbounded_bounds`."""
    train = scene.poses[scene.splits["train"]].astype(np.float64)
    _, transform = normalise_unbounded(train, np.zeros((0, 3)))
    rot, centre, scale = (np.asarray(transform[k]) for k in ("rotation", "centre", "scale"))
    poses = scene.poses.astype(np.float64)
    poses[:, :3, :3] = rot @ poses[:, :3, :3]
    poses[:, :3, 3] = scale * (poses[:, :3, 3] - centre) @ rot.T
    scene.poses = poses.astype(np.float32)
    return as_unbounded(scene, unbounded_bounds(poses[scene.splits["train"]]))
