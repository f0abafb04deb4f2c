"""The view store: the on-disk format of pseudo-data and of the real training views.

The authors store 9 float32 per ray (origin, direction, colour): 36 bytes a ray, about 58 GB for
10,000 views at 400x400. Rays are a function of the camera, so r2l stores per VIEW its pose
``(4, 4)`` float32 and focal float32 (68 bytes) and its colours as uint8 ``(H*W, 3)`` (3 bytes a ray),
about 1/12 of the authors' size (4.8 GB for 10k views at 400x400; pseudo-data adds the teacher's depth and
opacity, 3 more bytes a ray: 1/6, 9.6 GB), and rebuilds rays on the fly with
:func:`r2l.geometry.rays.rays_at_pixels`.

Folder layout (a "view store"):

- ``shard_{i:05d}.npz``: views ``i * views_per_shard`` onwards, an uncompressed npz (readable with
  ``np.load(allow_pickle=False)``) of ``first_view`` () int64, ``hw`` (2,) int64, ``poses (k, 4, 4)``
  float32, ``focals (k,)`` float32, ``colors (k, H*W, 3)`` uint8, and in a store whose meta has ``depth``
  true (pseudo-data) the teacher's ``depths (k, H*W)`` float16 and ``alphas (k, H*W)`` uint8. depths: the
  expected distance along the render-space ray, in the parameter t of ``rays_o + t * rays_d``, with the
  background term: ``sum_i w_i t_i + (1 - acc) * far``; alphas: ``round(255 * clamp(acc, 0, 1))``. Each shard
  is written to a temp name and renamed, with fixed zip timestamps, so the same views give byte-identical files.
- ``plan.json`` (pseudo-data only): the settings the shards were rendered with; a rerun with other
  settings (teacher, seed, size, ...) discards the old shards instead of mixing them in.
- ``meta.json``: written LAST; its presence marks a complete store (H, W, n_views, views_per_shard,
  near, far, ndc, ndc_near, format_version, source "pseudo" | "real", depth, teacher, stats).

Pseudo-data rendered by K jobs (``pseudo_data.jobs``) lives in K part folders ``part_{k}/``, each with its own
``plan.json``, its run of shards (same names and bytes as in a one-job store) and ``part.json`` (written last when
the part is complete). The store's ``meta.json`` then lists every shard's path relative to the store folder
(``shard_files``), so the parts are used where they lie, never copied.
"""

from __future__ import annotations

import json
import math
import struct
import zipfile
from pathlib import Path

import numpy as np
import torch

from r2l.core.atomic import atomic_write_stream
from r2l.core.errors import DataError, R2LError
from r2l.core.log import log
from r2l.geometry.rays import ndc_rays, rays_at_pixels

FORMAT_VERSION = 1
META_NAME = "meta.json"
PLAN_NAME = "plan.json"
PART_NAME = "part.json"  # a finished part of a store rendered by several jobs
AUTHORS_BYTES_PER_RAY = 9 * 4  # origin, direction, colour as float32
SHARD_KEYS = ("first_view", "hw", "poses", "focals", "colors")
DEPTH_KEYS = ("depths", "alphas")  # members of the shards of a store with depth (meta "depth": true)
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed timestamp: identical views give identical bytes
# what reading a damaged npz raises; zipfile raises NotImplementedError for a member whose compression it cannot read
_SHARD_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, struct.error, NotImplementedError)


def shard_name(i: int) -> str:
    """File name of shard ``i``."""
    return f"shard_{i:05d}.npz"


def write_shard(path: str | Path, first_view: int, poses: np.ndarray, focals: np.ndarray, colors: np.ndarray, H: int,
                W: int, depths: np.ndarray | None = None, alphas: np.ndarray | None = None) -> None:
    """Write one shard atomically (deterministic bytes).

    poses: (k, 4, 4) float32. focals: (k,) float32. colors: (k, H*W, 3) uint8. depths: (k, H*W) float16 and
    alphas: (k, H*W) uint8, both or neither (stored only when given: without them the bytes are as before).
    """
    if (depths is None) != (alphas is None):
        raise R2LError(f"{path}: a shard gets depths and alphas together, not one of them")
    arrays = {
        "first_view": np.asarray(first_view, dtype=np.int64),
        "hw": np.asarray([H, W], dtype=np.int64),
        "poses": np.ascontiguousarray(poses, dtype=np.float32),
        "focals": np.ascontiguousarray(focals, dtype=np.float32),
        "colors": np.ascontiguousarray(colors, dtype=np.uint8),
    }
    if depths is not None:
        arrays.update(depths=np.ascontiguousarray(depths, dtype=np.float16),
                      alphas=np.ascontiguousarray(alphas, dtype=np.uint8))

    def write(fh):
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED) as zf:
            for key, arr in arrays.items():
                info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_DATE)
                with zf.open(info, "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, arr, allow_pickle=False)

    atomic_write_stream(path, write)


def read_shard(path: str | Path, H: int, W: int, n_expected: int, first_view: int,
               depth: bool = False) -> dict[str, np.ndarray]:
    """Read and check one shard; raises DataError naming it when missing, unreadable or inconsistent.

    Returns ``poses (k, 4, 4)`` float32, ``focals (k,)`` float32, ``colors (k, H*W, 3)`` uint8 (k = n_expected),
    and ``depths (k, H*W)`` float16, ``alphas (k, H*W)`` uint8 when the shard has them (required when ``depth``).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "shard is missing (the view store is incomplete; regenerate it)")
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = SHARD_KEYS + tuple(k for k in DEPTH_KEYS if k in z.files)
            arrs = {key: z[key] for key in keys}  # reading checks each member's CRC
    except _SHARD_ERRORS as err:
        raise DataError(path, f"shard is unreadable ({type(err).__name__}: {err}); regenerate it") from err
    missing = [k for k in DEPTH_KEYS if k not in arrs]
    if missing and (depth or len(missing) < len(DEPTH_KEYS)):
        raise DataError(path, f"shard lacks the teacher's {' and '.join(missing)} (rendered without them); "
                              "regenerate it")
    want = {
        "first_view": ((), np.int64), "hw": ((2,), np.int64), "poses": ((n_expected, 4, 4), np.float32),
        "focals": ((n_expected,), np.float32), "colors": ((n_expected, H * W, 3), np.uint8),
        "depths": ((n_expected, H * W), np.float16), "alphas": ((n_expected, H * W), np.uint8),
    }
    for key, (shape, dtype) in want.items():
        if key in arrs and (arrs[key].shape != shape or arrs[key].dtype != dtype):
            raise DataError(path, f"{key} has shape {arrs[key].shape} {arrs[key].dtype}, expected {shape} {np.dtype(dtype)}")
    if int(arrs["first_view"]) != first_view or arrs["hw"].tolist() != [H, W]:
        raise DataError(path, f"shard holds views from {int(arrs['first_view'])} at {arrs['hw'].tolist()}, expected {first_view} at {[H, W]}")
    return arrs


def read_meta(folder: str | Path) -> dict:
    """The ``meta.json`` of a complete view store; DataError when absent or malformed."""
    path = Path(folder) / META_NAME
    if not path.is_file():
        raise DataError(path, "missing: the view store is incomplete (its generation did not finish)")
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(path, f"unreadable ({err})") from err
    missing = [k for k in ("H", "W", "n_views", "views_per_shard", "ndc", "format_version") if k not in meta]
    if missing:
        raise DataError(path, f"lacks {', '.join(missing)}")
    if meta["format_version"] != FORMAT_VERSION:
        raise DataError(path, f"format version {meta['format_version']}, this r2l reads version {FORMAT_VERSION}")
    return meta


def shard_files(folder: Path, meta: dict) -> list[Path]:
    """The shard files of the complete store ``folder`` (``meta``: its meta.json), in view order: the listed
    ``shard_files`` (a store gathered from parts; each must lie inside ``folder``), else ``shard_{i}.npz``."""
    n_shards = math.ceil(int(meta["n_views"]) / int(meta["views_per_shard"]))
    listed = meta.get("shard_files")
    if listed is None:
        return [folder / shard_name(i) for i in range(n_shards)]
    where = folder / META_NAME
    if not isinstance(listed, list) or len(listed) != n_shards or not all(isinstance(f, str) for f in listed):
        raise DataError(where, f"shard_files must list the {n_shards} shard paths")
    paths = [folder / f for f in listed]
    outside = [f for f, p in zip(listed, paths) if not p.resolve().is_relative_to(folder.resolve())]
    if outside:
        raise DataError(where, f"shard file {outside[0]!r} lies outside the store folder")
    return paths


class ViewStore:
    """A complete view store loaded into memory (all shards; uint8 colours are small: 10k views at 400x400
    take 4.8 GB, 9.6 GB with depths, fine on a GPU box). A missing or corrupt shard raises DataError naming it.

    Attributes: ``H, W, n_views``, ``poses (n_views, 4, 4)`` float32, ``focals (n_views,)`` float32,
    ``colors (n_views, H*W, 3)`` uint8 tensors on ``device``, ``meta`` (the meta.json dict); when ``meta["depth"]``,
    the teacher's ``depths (n_views, H*W)`` float16 and ``alphas (n_views, H*W)`` uint8 there too (else None).
    """

    def __init__(self, folder: str | Path, device: str | torch.device = "cpu"):
        self.folder = Path(folder)
        self.meta = read_meta(self.folder)
        self.H, self.W, self.n_views = int(self.meta["H"]), int(self.meta["W"]), int(self.meta["n_views"])
        vps = int(self.meta["views_per_shard"])
        files = shard_files(self.folder, self.meta)
        poses = torch.empty((self.n_views, 4, 4), dtype=torch.float32)
        focals = torch.empty((self.n_views,), dtype=torch.float32)
        colors = torch.empty((self.n_views, self.H * self.W, 3), dtype=torch.uint8)
        depth = bool(self.meta.get("depth", False))
        depths = torch.empty((self.n_views, self.H * self.W), dtype=torch.float16) if depth else None
        alphas = torch.empty((self.n_views, self.H * self.W), dtype=torch.uint8) if depth else None
        for i, path in enumerate(files):
            lo, hi = i * vps, min(self.n_views, (i + 1) * vps)
            arrs = read_shard(path, self.H, self.W, hi - lo, lo, depth=depth)
            poses[lo:hi], focals[lo:hi] = torch.from_numpy(arrs["poses"]), torch.from_numpy(arrs["focals"])
            colors[lo:hi] = torch.from_numpy(arrs["colors"])
            if depth:
                depths[lo:hi], alphas[lo:hi] = torch.from_numpy(arrs["depths"]), torch.from_numpy(arrs["alphas"])
        self.device = torch.device(device)
        self.poses, self.focals, self.colors = poses.to(self.device), focals.to(self.device), colors.to(self.device)
        self.depths = None if depths is None else depths.to(self.device)
        self.alphas = None if alphas is None else alphas.to(self.device)
        self.ndc, self.ndc_near = bool(self.meta["ndc"]), float(self.meta.get("ndc_near", 1.0))
        log.info("view store %s: %d views at %dx%d (%s)", self.folder, self.n_views, self.H, self.W, self.meta.get("source"))

    def __len__(self) -> int:
        return self.n_views

    @property
    def has_depth(self) -> bool:
        """True when the store holds the teacher's depths and alphas (pseudo-data rendered with them)."""
        return self.depths is not None

    def _need_depth(self) -> None:
        """DataError naming the store's meta.json when it holds no depths."""
        if not self.has_depth:
            raise DataError(self.folder / META_NAME, "this view store has no teacher depths (real views, or "
                                                     "pseudo-data rendered without them: regenerate it)")

    def depth_at(self, view: torch.Tensor, pix: torch.Tensor) -> torch.Tensor:
        """The teacher's expected render-space distance (with the background term) at ``view: (n,)``, flat pixels
        ``pix: (n,)``: (n,) float32 on the store's device. DataError when the store has no depth."""
        self._need_depth()
        return self.depths[view.to(self.device), pix.to(self.device)].float()

    def alpha_at(self, view: torch.Tensor, pix: torch.Tensor) -> torch.Tensor:
        """The teacher's opacity at ``view: (n,)``, ``pix: (n,)``: (n,) float32 in [0, 1] on the store's device
        (stored as uint8, so within 0.5/255 of the rendered one). DataError when the store has no depth."""
        self._need_depth()
        return self.alphas[view.to(self.device), pix.to(self.device)].float() / 255.0

    def sample(self, n_rays: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``n_rays`` rays uniform over all pixels of all views (with replacement).

        generator: a torch.Generator (its device draws the indices). Returns ``view: (n,)`` int64,
        ``pix: (n,)`` int64 flat pixel index ``v * W + u``, ``rgb: (n, 3)`` float32 in [0, 1], on the store's device.
        """
        hw = self.H * self.W
        gen_device = generator.device if generator is not None else self.device
        idx = torch.randint(0, self.n_views * hw, (n_rays,), generator=generator, device=gen_device).to(self.device)
        view, pix = torch.div(idx, hw, rounding_mode="floor"), idx % hw
        return view, pix, self.colors[view, pix].float() / 255.0

    def rays_at(self, view: torch.Tensor, pix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """WORLD rays of ``view: (n,)`` at flat pixels ``pix: (n,)``: ``rays_o, rays_d`` each (n, 3)."""
        view, pix = view.to(self.device), pix.to(self.device)
        return rays_at_pixels(self.poses[view], self.focals[view], self.H, self.W, pix)

    def render_rays_at(self, view: torch.Tensor, pix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Render-space rays (NDC with each ray's focal when ``meta["ndc"]``): ``rays_o, rays_d`` each (n, 3).

        view, pix: (n,) int64 as returned by :meth:`sample`.
        """
        rays_o, rays_d = self.rays_at(view, pix)
        if not self.ndc:
            return rays_o, rays_d
        return ndc_rays(self.H, self.W, self.focals[view.to(self.device)], self.ndc_near, rays_o, rays_d)
