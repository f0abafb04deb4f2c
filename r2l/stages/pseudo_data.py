"""The pseudo_data stage: the teacher renders random views into a view store (:mod:`r2l.data.views`),
and the real_data rule writes the scene's own views into the same format.

Generation is resumable: valid shards of the same plan are kept, only missing or unreadable ones are
rendered again (a shard is written only when all its views are done). A teacher with ``render_outputs``
(:class:`r2l.models.teacher.Teacher`) also gives each pixel's expected depth and opacity, stored beside the
colours (meta ``depth``: true); a renderer with only ``render_rays`` gives colours alone.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from r2l.core.atomic import atomic_write_json
from r2l.core.digest import file_sha256, value_sha256
from r2l.core.errors import DataError, R2LError
from r2l.core.log import progress
from r2l.core.runtime import chunked
from r2l.data.scene import Scene
from r2l.data.views import (
    AUTHORS_BYTES_PER_RAY,
    FORMAT_VERSION,
    META_NAME,
    PART_NAME,
    PLAN_NAME,
    read_shard,
    shard_name,
    write_shard,
)
from r2l.geometry.capture import sample_capture_poses
from r2l.geometry.poses import blender_radius_from_cameras, sample_blender_poses, sample_llff_poses
from r2l.models.render import pose_rays

log = logging.getLogger("r2l")

def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Values in [0, 1] (colours ``(..., 3)``, opacities ``(...)``) -> uint8, rounded and clamped."""
    return torch.round(x.float().clamp(0.0, 1.0) * 255.0).to(torch.uint8)


def _train_poses(scene: Scene) -> np.ndarray:
    """Training poses ``(m, 4, 4)`` of ``scene``."""
    if "train" not in scene.splits or len(scene.splits["train"]) == 0:
        raise R2LError(f"scene {scene.name!r} has no training views to derive pseudo-data cameras from")
    return np.asarray(scene.poses[scene.splits["train"]], dtype=np.float32)


def plan_pseudo_views(
    scene: Scene, n_views: int, W: int, seed: int, focal_scale, llff_enlarge: float = 1.1
) -> tuple[np.ndarray, np.ndarray, dict]:
    """All pseudo-data cameras, drawn up front from ``seed`` (the first k are the same for any n_views >= k).

    Returns ``poses (n_views, 4, 4)`` float32, ``focals (n_views,)`` float32 (scene focal scaled to width
    ``W``) and a dict describing the sampler.
    """
    rng = np.random.default_rng(seed)
    focal = scene.focal * W / scene.W
    train = _train_poses(scene)
    if scene.ndc:
        poses = sample_llff_poses(train, n_views, rng, enlarge=llff_enlarge)
        info = {"sampler": "llff", "focal_scale": None, "enlarge": llff_enlarge}
        return poses, np.full(n_views, focal, dtype=np.float32), info
    if scene.unbounded:  # a walk-around: around the cameras' path and heights (r2l.geometry.capture)
        poses, focals = sample_capture_poses(train, n_views, rng, focal=focal, focal_scale=focal_scale)
        return poses, focals, {"sampler": "capture", "focal_scale": None if focal_scale is None else list(focal_scale)}
    radius = 4.0 if scene.format == "blender" else blender_radius_from_cameras(train)
    poses, focals = sample_blender_poses(n_views, rng, radius=radius, focal=focal, focal_scale=focal_scale)
    scale = None if focal_scale is None else list(focal_scale)
    return poses, focals, {"sampler": "blender", "radius": radius, "focal_scale": scale}


def has_depth(teacher) -> bool:
    """Whether the ray renderer ``teacher`` gives depth and opacity (a ``render_outputs`` method)."""
    return callable(getattr(teacher, "render_outputs", None))


def _teacher_outputs(teacher, rays_o: torch.Tensor, rays_d: torch.Tensor, chunk: int) -> dict[str, torch.Tensor]:
    """``rgb: (n, 3)`` and, when :func:`has_depth`, ``acc, depth: (n,)`` on CPU, of rays ``rays_o, rays_d: (n, 3)``
    given to the teacher ``chunk`` at a time."""
    depth = has_depth(teacher)

    def fn(o, d):
        if not depth:
            return {"rgb": teacher.render_rays(o, d).cpu()}
        out = teacher.render_outputs(o, d)
        return {k: out[k].cpu() for k in ("rgb", "acc", "depth")}

    with torch.no_grad():
        return chunked(fn, rays_o, rays_d, chunk)


def _checked(name: str, x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """``x`` when of ``shape`` and finite, else R2LError (``name``: what the teacher returned)."""
    if tuple(x.shape) != shape:
        raise R2LError(f"the teacher returned {name} of shape {tuple(x.shape)} for {shape[0]} rays")
    if not torch.isfinite(x).all():
        raise R2LError(f"the teacher returned non-finite {name}; check the teacher checkpoint")
    return x


def depth_kind(scene: Scene, teacher) -> str | None:
    """What the stored depths are (meta ``depth_kind``): ``median`` in an unbounded scene
    (:func:`r2l.models.contracted.median_depth`), else ``expected``; None for a renderer without depth."""
    if not has_depth(teacher):
        return None
    return "median" if scene.unbounded else "expected"


def render_views(teacher, c2w: np.ndarray, focals: np.ndarray, H: int, W: int, ndc: bool, ndc_near: float,
                 far: float, chunk: int | None) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Render several views in one pass of a ray renderer; returns on the CPU uint8 ``colors (n_views, H*W, 3)``,
    float16 ``depths (n_views, H*W)`` (the teacher's depth, ``sum_i w_i t_i`` (the median in an unbounded scene),
    ``+ (1 - acc) * far``, far: the render-space far) and uint8
    ``alphas (n_views, H*W)`` (``acc``); depths and alphas are None when the renderer has no ``render_outputs``.

    c2w: (n_views, 4, 4). focals: (n_views,). Rays come from :func:`r2l.geometry.rays.get_rays` at each view's
    own ``(H, W, focal)`` (and NDC at this size when ``ndc``), built on the teacher's device (``teacher.device``
    when it has one) by :func:`r2l.models.render.pose_rays`. chunk: rays per teacher call (None: one view a call).
    """
    device = torch.device(getattr(teacher, "device", "cpu"))
    rays = [pose_rays(pose, H, W, float(f), ndc, ndc_near, device) for pose, f in zip(c2w, focals)]
    rays_o, rays_d = torch.cat([o for o, _ in rays]), torch.cat([d for _, d in rays])
    n, shape = len(focals) * H * W, (len(focals), H * W)
    out = _teacher_outputs(teacher, rays_o, rays_d, chunk or H * W)
    colors = _to_uint8(_checked("colours", out["rgb"], (n, 3))).reshape(*shape, 3)
    if "depth" not in out:
        return colors, None, None
    acc = _checked("opacities", out["acc"].float(), (n,))
    depth = _checked("depths", out["depth"].float(), (n,)) + (1.0 - acc) * far
    depths = _checked("depths", depth.to(torch.float16), (n,))  # after the cast: fp16 overflow is caught too
    return colors, depths.reshape(shape), _to_uint8(acc).reshape(shape)


def _teacher_id(teacher, teacher_path) -> str:
    """A fingerprint of the teacher: sha256 of its file, else of its meta (device left out)."""
    if teacher_path is not None and Path(teacher_path).is_file():
        return "sha256:" + file_sha256(teacher_path)
    meta = {k: v for k, v in dict(getattr(teacher, "meta", {})).items() if k != "device"}
    return "meta:" + value_sha256(meta)


def _reset_if_replanned(out_dir: Path, plan: dict) -> None:
    """Drop shards rendered under a different plan (settings or teacher); record the current plan."""
    path = out_dir / PLAN_NAME
    old = None
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            old = {}
    if old is not None and old != plan:
        stale = sorted(out_dir.glob("shard_*.npz"))
        log.warning("%s: settings or teacher changed since the last run; discarding %d old shards", out_dir, len(stale))
        for f in stale:
            f.unlink()
    atomic_write_json(path, plan)


def _tidy(out_dir: Path, keep: range) -> None:
    """Remove leftover temp files of killed runs and shards outside ``keep`` (the shard indices this folder holds)."""
    for f in out_dir.glob(".shard_*.tmp*"):
        f.unlink(missing_ok=True)
    for f in out_dir.glob("shard_*.npz"):
        stem = f.stem.removeprefix("shard_")
        if not stem.isdigit() or int(stem) not in keep:
            log.info("removing %s (not one of shards %d-%d of this folder)", f, keep.start, keep.stop - 1)
            f.unlink()


def _shard_done(path: Path, H: int, W: int, first: int, poses: np.ndarray, focals: np.ndarray, depth: bool) -> bool:
    """True when ``path`` is a valid shard holding exactly the planned ``poses (k,4,4)``, ``focals (k,)`` (and
    depths when ``depth``)."""
    if not path.exists():
        return False
    try:
        arrs = read_shard(path, H, W, len(poses), first, depth=depth)
    except DataError as err:
        log.warning("%s; rendering it again", err)
        return False
    if np.array_equal(arrs["poses"], poses) and np.array_equal(arrs["focals"], focals):
        return True
    log.warning("%s holds other cameras than planned; rendering it again", path)
    return False


def store_stats(shard_files: list[Path], n_views: int, H: int, W: int) -> dict:
    """Sizes on disk of a store's shards against the authors' 36 bytes per ray."""
    total = sum(Path(f).stat().st_size for f in shard_files)
    authors = H * W * AUTHORS_BYTES_PER_RAY
    per_view = total / max(n_views, 1)
    return {"bytes_total": total, "bytes_per_view": per_view, "authors_bytes_per_view": authors,
            "ratio": per_view / authors, "n_views": n_views}


def part_shards(n_shards: int, part: int, parts: int) -> range:
    """The shard indices job ``part`` of ``parts`` renders: a contiguous run, the runs' lengths differ by at most 1."""
    if not 0 <= part < parts:
        raise R2LError(f"pseudo-data part {part} does not exist: there are {parts} (0 to {parts - 1})")
    return range(part * n_shards // parts, (part + 1) * n_shards // parts)


def _render_shards(teacher, out_dir: Path, todo: list[int], spans: list[tuple[int, int]], poses: np.ndarray,
                   focals: np.ndarray, H: int, W: int, scene: Scene, chunk: int | None, bar) -> None:
    """Render the shards ``todo`` (spans: each shard's ``[lo, hi)`` views) into ``out_dir``.

    Views go to the teacher ``chunk // (H*W)`` at a time (at least one); each shard is written by a background
    thread while the next one renders (a failure of either stops the loop; a shard is only ever whole).
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-writer") as writer:
        pending = None
        for i in todo:
            lo, hi = spans[i]
            colors, depths, alphas = _render_span(teacher, lo, hi, poses, focals, H, W, scene, chunk, bar)
            if pending is not None:
                pending.result()  # re-raises the writer's error
            pending = writer.submit(write_shard, out_dir / shard_name(i), lo, poses[lo:hi], focals[lo:hi], colors, H,
                                    W, depths, alphas)
        if pending is not None:
            pending.result()


def _render_span(teacher, lo: int, hi: int, poses: np.ndarray, focals: np.ndarray, H: int, W: int, scene: Scene,
                 chunk: int | None, bar) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Views ``[lo, hi)`` rendered ``chunk // (H*W)`` (at least one) a teacher call: ``colors (k, H*W, 3)`` uint8,
    ``depths (k, H*W)`` float16 and ``alphas (k, H*W)`` uint8 (None without depth)."""
    per_call = max(1, (chunk or 0) // (H * W))
    parts = []
    for v in range(lo, hi, per_call):
        end = min(hi, v + per_call)
        parts.append(render_views(teacher, poses[v:end], focals[v:end], H, W, scene.ndc, scene.ndc_near, scene.far,
                                  chunk))
        bar.update(end - v)
    return tuple(None if p[0] is None else np.concatenate([x.numpy() for x in p]) for p in zip(*parts))


def generate_pseudo_data(
    teacher,
    scene: Scene,
    out_dir: str | Path,
    n_views: int = 10_000,
    H: int | None = None,
    W: int | None = None,
    seed: int = 0,
    views_per_shard: int = 100,
    focal_scale: tuple[float, float] | None = (1.0, 2.0),
    chunk: int | None = None,
    teacher_path: str | Path | None = None,
    llff_enlarge: float = 1.1,
    part: tuple[int, int] | None = None,
) -> dict:
    """Render ``n_views`` random views with ``teacher`` (a ray renderer) into the view store ``out_dir``.

    Cameras: :func:`plan_pseudo_views` (Blender: radius 4 for format "blender", else the training cameras'
    mean radius, focal scaled by ``focal_scale``; LLFF: :func:`r2l.geometry.poses.sample_llff_poses`). H, W default
    to the scene's. Resumable: valid shards of the same plan are kept, only missing ones are rendered.
    chunk: rays per teacher call (None: one view; a chunk of several views' rays renders that many views a call).
    teacher_path: recorded in meta.json; its hash fingerprints the teacher so a new teacher never reuses old shards.
    llff_enlarge: LLFF pose boxes (centres and viewing axes) are enlarged this much (the authors: 1.1).
    part: ``(k, K)`` renders only job k's share of the shards (:func:`part_shards`) into ``out_dir`` and writes
    ``part.json`` there instead of ``meta.json``; :func:`gather_pseudo_data` then makes one store of the K
    folders. Shard i holds the same bytes whichever job renders it.
    Returns stats ``{bytes_total, bytes_per_view, authors_bytes_per_view, ratio, n_views, seconds, views_rendered}``
    (of this folder's shards).
    """
    H, W = H or scene.H, W or scene.W
    if n_views < 1 or views_per_shard < 1:
        raise R2LError(f"n_views ({n_views}) and views_per_shard ({views_per_shard}) must be positive")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    done_name = META_NAME if part is None else PART_NAME
    (out_dir / done_name).unlink(missing_ok=True)  # the folder is incomplete until this file comes back
    scene.check_identity(getattr(teacher, "info", None), teacher_path or "the teacher")
    poses, focals, info = plan_pseudo_views(scene, n_views, W, seed, focal_scale, llff_enlarge)
    plan = {"format_version": FORMAT_VERSION, "teacher": _teacher_id(teacher, teacher_path), "H": H, "W": W,
            "seed": seed, "views_per_shard": views_per_shard, "scene": scene.name, "ndc": scene.ndc,
            "ndc_near": scene.ndc_near, "precision": getattr(teacher, "precision", None), "depth": has_depth(teacher),
            "depth_kind": depth_kind(scene, teacher), **info}
    _reset_if_replanned(out_dir, plan)
    n_shards = math.ceil(n_views / views_per_shard)
    mine = range(n_shards) if part is None else part_shards(n_shards, *part)
    _tidy(out_dir, mine)
    spans = [(i * views_per_shard, min(n_views, (i + 1) * views_per_shard)) for i in range(n_shards)]
    todo = [i for i in mine if not _shard_done(out_dir / shard_name(i), H, W, spans[i][0], poses[slice(*spans[i])],
                                               focals[slice(*spans[i])], plan["depth"])]
    n_mine = sum(spans[i][1] - spans[i][0] for i in mine)
    n_todo = sum(spans[i][1] - spans[i][0] for i in todo)
    log.info("pseudo-data %s: %d of %d views to render (shards %d-%d, %d kept)", out_dir, n_todo, n_mine,
             mine.start, mine.stop - 1, len(mine) - len(todo))
    start = time.time()
    with progress(total=n_mine, initial=n_mine - n_todo, desc="pseudo-data") as bar:
        bar.unit = "view"
        _render_shards(teacher, out_dir, todo, spans, poses, focals, H, W, scene, chunk, bar)
    files = [out_dir / shard_name(i) for i in mine]
    stats = {**store_stats(files, n_mine, H, W), "seconds": time.time() - start, "views_rendered": n_todo}
    meta = _base_meta(scene, H, W, n_views, views_per_shard, n_shards, "pseudo")
    meta.update({"teacher": None if teacher_path is None else str(teacher_path), "teacher_id": plan["teacher"],
                 "precision": plan["precision"], "depth": plan["depth"], "depth_kind": plan["depth_kind"],
                 "seed": seed, "focal": scene.focal * W / scene.W, **info, "stats": stats})
    if part is not None:
        meta = {"part": part[0], "parts": part[1], "shards": list(mine), "plan": plan, "store": meta}
    atomic_write_json(out_dir / done_name, meta)
    return stats


def gather_pseudo_data(store_dir: str | Path, part_dirs: list[str | Path]) -> dict:
    """Make one view store of the K part folders of :func:`generate_pseudo_data` (``part_dirs``, in order), without
    copying: ``store_dir/meta.json`` lists the shard files (relative to ``store_dir``) and is written last.

    Every part must be complete (its ``part.json``), of the same plan (teacher, seed, size, ...) and of the same K,
    and together they must hold each shard once. Returns the store's stats (``seconds`` and ``views_rendered``
    summed over the parts).
    """
    store_dir = Path(store_dir)
    (store_dir / META_NAME).unlink(missing_ok=True)
    parts = [_read_part(Path(d)) for d in part_dirs]
    first = parts[0]
    files: list[Path] = []
    for k, (d, p) in enumerate(zip(part_dirs, parts)):
        where = Path(d) / PART_NAME
        if p["plan"] != first["plan"]:
            raise DataError(where, f"was rendered with other settings or another teacher than {part_dirs[0]}: "
                                   "run the pseudo-data jobs again")
        if p["part"] != k or p["parts"] != len(parts):
            raise DataError(where, f"is part {p['part']} of {p['parts']}, expected part {k} of {len(parts)}")
        files += [Path(d) / shard_name(i) for i in p["shards"]]
    meta = dict(first["store"])
    if [f.name for f in files] != [shard_name(i) for i in range(meta["n_shards"])]:
        raise DataError(store_dir, f"the {len(parts)} parts do not hold shards 0-{meta['n_shards'] - 1} once each")
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise DataError(missing[0], "shard is missing although its part finished: run the pseudo-data jobs again")
    stats = store_stats(files, meta["n_views"], meta["H"], meta["W"])
    stats.update(seconds=sum(p["store"]["stats"]["seconds"] for p in parts),
                 views_rendered=sum(p["store"]["stats"]["views_rendered"] for p in parts))
    meta.update(stats=stats, parts=len(parts),
                shard_files=[os.path.relpath(f, store_dir) for f in files])
    atomic_write_json(store_dir / META_NAME, meta)
    _remove_stale(store_dir, [Path(d) for d in part_dirs])
    log.info("pseudo-data %s: %d views in %d shards from %d part(s)", store_dir, meta["n_views"], len(files), len(parts))
    return stats


def _remove_stale(store_dir: Path, part_dirs: list[Path]) -> None:
    """Delete what the store no longer uses: part folders of an earlier number of jobs and the shards of a
    store rendered before the data moved into part folders (they would only take disk space)."""
    used = {d.resolve() for d in part_dirs}
    for folder in sorted(store_dir.glob("part_*")):
        if folder.is_dir() and folder.name.removeprefix("part_").isdigit() and folder.resolve() not in used:
            log.warning("removing %s: a part of an earlier run with another number of jobs", folder)
            shutil.rmtree(folder)
    old = sorted(store_dir.glob("shard_*.npz")) + sorted(store_dir.glob(PLAN_NAME))
    if old:
        log.warning("removing %d file(s) of an older single-folder store from %s", len(old), store_dir)
        for f in old:
            f.unlink()


def _read_part(folder: Path) -> dict:
    """A finished part's ``part.json``; DataError naming it when absent or unreadable."""
    path = folder / PART_NAME
    try:
        part = json.loads(path.read_text())
        _ = part["part"], part["parts"], part["shards"], part["plan"], part["store"]["stats"]["seconds"]
    except FileNotFoundError as err:
        raise DataError(path, "missing: this pseudo-data part did not finish") from err
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise DataError(path, f"unreadable ({type(err).__name__}: {err}); run the pseudo-data jobs again") from err
    return part


def _base_meta(scene: Scene, H: int, W: int, n_views: int, views_per_shard: int, n_shards: int, source: str) -> dict:
    """The meta.json fields every view store has."""
    return {"format_version": FORMAT_VERSION, "source": source, "H": H, "W": W, "n_views": n_views,
            "views_per_shard": views_per_shard, "n_shards": n_shards, "near": scene.near, "far": scene.far,
            "ndc": scene.ndc, "ndc_near": scene.ndc_near, "scene": scene.name, "scene_format": scene.format,
            "data_sha256": scene.digest, "camera": scene.camera()}


def convert_real_data(
    scene: Scene,
    out_dir: str | Path,
    split: str = "train",
    H: int | None = None,
    W: int | None = None,
    views_per_shard: int = 100,
) -> dict:
    """Write the real views of one split into a view store (meta source "real").

    The loader has already composited and resized the images; H, W must equal the scene's (resizing is the
    loader's job). Colours are stored as uint8 (rounded; at most 0.5/255 from the float images).
    Returns the size stats (as :func:`generate_pseudo_data`, without timing).
    """
    if (H or scene.H) != scene.H or (W or scene.W) != scene.W:
        raise R2LError(f"real views of {scene.name!r} are {scene.H}x{scene.W}, not {H}x{W}: load the scene at that resolution instead")
    if views_per_shard < 1:
        raise R2LError(f"views_per_shard must be positive, got {views_per_shard}")
    images, poses = scene.split(split)
    n_views = len(images)
    if n_views == 0:
        raise R2LError(f"scene {scene.name!r} has no views in split {split!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / META_NAME).unlink(missing_ok=True)
    n_shards = math.ceil(n_views / views_per_shard)
    _tidy(out_dir, range(n_shards))
    colors = np.clip(np.round(np.asarray(images, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)
    colors = colors.reshape(n_views, scene.H * scene.W, 3)
    focals = np.full(n_views, scene.focal, dtype=np.float32)
    for i in range(n_shards):
        lo, hi = i * views_per_shard, min(n_views, (i + 1) * views_per_shard)
        write_shard(out_dir / shard_name(i), lo, poses[lo:hi], focals[lo:hi], colors[lo:hi], scene.H, scene.W)
    stats = store_stats([out_dir / shard_name(i) for i in range(n_shards)], n_views, scene.H, scene.W)
    meta = _base_meta(scene, scene.H, scene.W, n_views, views_per_shard, n_shards, "real")
    meta.update({"split": split, "teacher": None, "focal": scene.focal, "stats": stats, "depth": False,
                 "views_in_train": scene.views_in_train(split)})
    atomic_write_json(out_dir / META_NAME, meta)
    return stats
