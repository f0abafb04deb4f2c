"""The scene type shared by every stage (the loaders make it; :mod:`r2l.data.registry` picks the loader).

A :class:`Scene` holds every view of a capture (all splits), already composited on its background
and resized to the working resolution. Camera conventions are those of :mod:`r2l.geometry.rays`.

Names: ``images: (n_views, H, W, 3)`` float32 in [0, 1]; ``poses: (n_views, 4, 4)`` float32
camera-to-world; ``splits`` maps ``"train" | "val" | "test"`` to int64 view indices.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from r2l.core.errors import R2LError
from r2l.geometry.rays import get_rays, ndc_rays

IDENTITY_KEYS = ("name", "format", "H", "W", "data_sha256")  # what a model records of its scene


def check_same_scene(recorded: dict | None, mine: dict | None, source: str | Path) -> None:
    """R2LError naming ``source`` when the scene identity ``recorded`` (a model's) differs from ``mine``.

    Keys either side lacks or left unset (files of older r2l versions, digests not computed) are not compared.
    """
    recorded, mine = recorded or {}, mine or {}
    differ = [f"{k} {recorded[k]!r} (this scene: {mine[k]!r})" for k in IDENTITY_KEYS
              if recorded.get(k) is not None and mine.get(k) is not None and recorded[k] != mine[k]]
    if differ:
        raise R2LError(f"{source}: made for another scene than {mine.get('name')!r}: {'; '.join(differ)}. Train it "
                       "on this scene (delete it and rerun), or point the config at the scene it was made for")


@dataclass
class Scene:
    """Posed images of one scene, every split, at the working resolution.

    images: (n_views, H, W, 3) float32, composited on ``background``.
    poses: (n_views, 4, 4) float32 camera-to-world (OpenGL convention, see :mod:`r2l.geometry.rays`).
    near, far: sampling range along rays (world depths; for ``ndc`` scenes 0 and 1 in NDC).
    ndc: forward-facing scene rendered in NDC with the near plane at depth ``ndc_near``.
    render_poses: (n_frames, 4, 4) a camera path for videos (orbit, spiral, or a loop through a walk-around).
    unbounded: a walk-around capture with its surroundings (:mod:`r2l.data.unbounded`): world rays, the object in
    the unit ball, fields evaluated at contracted points (:mod:`r2l.geometry.contraction`), samples spaced
    linearly in depth up to ``sample_split`` and uniformly in disparity beyond
    (:func:`r2l.models.contracted.contracted_t`).
    bounds: (n_views, 2) per-view depth bounds after scaling (LLFF only), else None.
    files: the image files, one per view; pose_files: the camera files (transforms json, poses_bounds.npy).
    digest: sha256 over the bytes of all of them (:func:`r2l.core.digest.files_digest`), set by whoever needs it.
    """

    name: str
    format: str
    images: np.ndarray
    poses: np.ndarray
    H: int
    W: int
    focal: float
    near: float
    far: float
    splits: dict[str, np.ndarray]
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    ndc: bool = False
    ndc_near: float = 1.0
    render_poses: np.ndarray | None = None
    bounds: np.ndarray | None = None
    files: list[str] = field(default_factory=list)
    pose_files: list[str] = field(default_factory=list)
    digest: str | None = None
    unbounded: bool = False
    sample_split: float = 1.0

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Images ``(n, H, W, 3)`` and poses ``(n, 4, 4)`` of one split."""
        if name not in self.splits:
            raise R2LError(f"scene {self.name!r} has no split {name!r} (has {sorted(self.splits)})")
        idx = self.splits[name]
        return self.images[idx], self.poses[idx]

    def views_in_train(self, name: str) -> bool:
        """Whether every view of split ``name`` has the pose of a training view: LLFF's val views are training
        views, and a photos scene's object or unbounded layout writes training photos as its val views. False for
        the training split itself and for a missing or empty split."""
        if name == "train" or len(self.splits.get(name, ())) == 0:
            return False
        train = self.poses[self.splits["train"]][:, :3, :4].reshape(-1, 12)
        views = self.poses[self.splits[name]][:, :3, :4].reshape(-1, 12)
        return bool(np.all([np.abs(train - v).max(axis=1).min() < 1e-6 for v in views]))

    def size_at_width(self, width: int | None) -> tuple[int, int]:
        """``(H, W)`` of views ``width`` pixels wide, at most the scene's width (None: the scene's), same aspect."""
        W = self.W if width is None else max(1, min(int(width), self.W))
        return max(1, round(W * self.H / self.W)), W


    def source_files(self) -> list[str]:
        """Every file the scene was read from: its camera files, then its images."""
        return [*self.pose_files, *self.files]

    def identity(self) -> dict:
        """What a model trained on this scene records of it: ``name``, ``format``, ``H``, ``W`` and
        ``data_sha256`` (the digest of :meth:`source_files`, None when not computed)."""
        return dict(zip(IDENTITY_KEYS, (self.name, self.format, int(self.H), int(self.W), self.digest)))

    def check_identity(self, recorded: dict | None, source: str | Path) -> None:
        """R2LError naming ``source`` when ``recorded`` (a model's :meth:`identity`) is of another scene.

        Keys the record lacks (files of older r2l versions) or that either side left unset are not compared.
        """
        check_same_scene(recorded, self.identity(), source)

    def camera(self) -> dict:
        """What rendering the scene needs, as plain JSON-ready values (stored in view stores and model files).

        ``H, W, focal`` (pixels), ``near, far``, ``ndc, ndc_near``, ``background`` (3 floats) and
        ``render_poses``: the video camera path as a list of 4x4 nested lists (empty when the scene has none).
        Unbounded scenes only (the others' cameras have no such keys): ``unbounded`` (True) and ``sample_split``.
        """
        path = [] if self.render_poses is None else np.asarray(self.render_poses, dtype=np.float64).round(6).tolist()
        camera = {
            "H": int(self.H), "W": int(self.W), "focal": float(self.focal), "near": float(self.near),
            "far": float(self.far), "ndc": bool(self.ndc), "ndc_near": float(self.ndc_near),
            "background": [float(c) for c in self.background], "render_poses": path,
        }
        if self.unbounded:
            camera.update(unbounded=True, sample_split=float(self.sample_split))
        return camera

    def rays(self, c2w, H: int | None = None, W: int | None = None, focal: float | None = None):
        """Render-space rays of a full image at a pose: ``rays_o, rays_d`` each (H*W, 3).

        c2w: (4, 4) array or tensor. H, W, focal default to the scene's own intrinsics.
        """
        H, W = H or self.H, W or self.W
        focal = focal or self.focal
        c2w = torch.as_tensor(np.asarray(c2w, dtype=np.float32))
        rays_o, rays_d = get_rays(c2w, H, W, focal)
        if not self.ndc:
            return rays_o, rays_d
        return ndc_rays(H, W, focal, self.ndc_near, rays_o, rays_d)
