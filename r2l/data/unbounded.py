"""Unbounded scenes: walk-around captures of an object with its surroundings (the room, the street).

Beside object scenes (Blender-like: an object in empty space, near 2 / far 6) and forward-facing ones (LLFF, NDC)
r2l knows a third layout. An unbounded scene is stored in the Blender format (``transforms_{train,val,test}.json``
and opaque images) with a marker file, :data:`MARKER`, beside them; the loaders read the folder as a Blender
scene and :func:`as_unbounded` then makes it unbounded. Its world is normalised (by the writer: the built-in
scene's :func:`r2l.data.builtin.write_unbounded`, COLMAP's :func:`r2l.data.colmap.normalise_unbounded`): the object
of interest at the origin inside the unit ball, up along +z, the cameras a little further out. Everything
outside the unit ball is contracted (:mod:`r2l.geometry.contraction`) by the fields that render it.

Sampling range (:func:`unbounded_bounds`), in depths along camera rays (``rays_d`` has camera-space z = -1):

- ``sample_split`` = the mean camera distance from the origin plus 1: a ray from a camera leaves the unit ball
  around there, so samples are spaced linearly up to it and uniformly in disparity beyond;
- ``near`` = :data:`NEAR_FRACTION` of the mean camera distance (or less, when the sparse points of a COLMAP model
  come closer to a camera);
- ``far`` = :data:`FAR_FACTOR` times ``sample_split``: contracted, a hundred times out is 99% of the way to the
  edge of the contracted ball (the last sample there is made opaque by the renderers: the far background).

The marker holds ``layout`` ("unbounded"), ``near``, ``far``, ``sample_split`` and, from COLMAP, the
normalisation and the decision's numbers.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from r2l.core.atomic import atomic_write_json
from r2l.core.errors import DataError, R2LError
from r2l.data.scene import Scene
from r2l.geometry.capture import capture_path

log = logging.getLogger("r2l")

MARKER = "r2l_unbounded.json"  # beside the Blender files of an unbounded scene
NEAR_FRACTION = 0.05  # near = this times the mean camera distance from the origin, at most
FAR_FACTOR = 100.0  # far = this times sample_split
PATH_FRAMES = 60  # poses of the video path (a loop through the cameras)
BOUND_KEYS = ("near", "far", "sample_split")


def unbounded_bounds(c2w, nearest: float | None = None) -> dict[str, float]:
    """``near``, ``far`` and ``sample_split`` (see the module doc) of cameras ``c2w: (m, 4, 4)`` in a normalised
    world; ``nearest``: the smallest depth at which the cameras see anything (None: unknown), half of which
    lowers ``near``."""
    c2w = np.asarray(c2w, dtype=np.float64)
    if c2w.ndim != 3 or c2w.shape[0] == 0:
        raise R2LError(f"need a non-empty (m, 4, 4) array of camera poses, got shape {c2w.shape}")
    distance = float(np.linalg.norm(c2w[:, :3, 3], axis=-1).mean())
    near = NEAR_FRACTION * distance
    if nearest is not None:
        near = min(near, 0.5 * float(nearest))
    split = distance + 1.0
    return {"near": near, "far": FAR_FACTOR * split, "sample_split": split}


def write_marker(folder: str | Path, bounds: dict, extra: dict | None = None) -> Path:
    """Write :data:`MARKER` into ``folder``: ``layout`` "unbounded", the ``bounds`` (:func:`unbounded_bounds`) and
    ``extra`` (JSON-ready; e.g. the normalisation). Returns the marker's path."""
    path = Path(folder) / MARKER
    atomic_write_json(path, {"layout": "unbounded", **{k: float(bounds[k]) for k in BOUND_KEYS}, **(extra or {})})
    return path


def read_marker(folder: str | Path) -> dict | None:
    """The marker of an unbounded scene folder (None when there is none); DataError when it is malformed."""
    path = Path(folder) / MARKER
    if not path.is_file():
        return None
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(path, f"cannot read the unbounded-scene marker ({type(err).__name__}: {err})") from None
    if not isinstance(marker, dict) or marker.get("layout") != "unbounded":
        raise DataError(path, "not an unbounded-scene marker (expected a JSON object with layout: unbounded)")
    bad = [k for k in BOUND_KEYS if not isinstance(marker.get(k), (int, float)) or not np.isfinite(marker[k])]
    if bad or not 0.0 < marker["near"] < marker["sample_split"] < marker["far"]:
        raise DataError(path, f"needs numbers 0 < near < sample_split < far, got "
                              f"{ {k: marker.get(k) for k in BOUND_KEYS} }")
    return marker


def as_unbounded(scene: Scene, bounds: dict) -> Scene:
    """``scene`` (read as a Blender scene, in a normalised world) as an unbounded scene: ``unbounded`` set, the
    sampling range of ``bounds`` (:func:`unbounded_bounds` or a marker) and a video path that loops through the
    training cameras (:func:`r2l.geometry.capture.capture_path`, :data:`PATH_FRAMES` poses)."""
    train = scene.poses[scene.splits["train"]]
    out = replace(scene, unbounded=True, near=float(bounds["near"]), far=float(bounds["far"]),
                  sample_split=float(bounds["sample_split"]), render_poses=capture_path(train, PATH_FRAMES))
    log.info("unbounded scene %s: near %.3g, far %.3g, samples linear up to depth %.3g then uniform in disparity; "
             "cameras %.2f from the centre on average", scene.name, out.near, out.far, out.sample_split,
             float(np.linalg.norm(train[:, :3, 3], axis=-1).mean()))
    return out
