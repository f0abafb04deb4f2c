"""The scene type shared by every stage, and the loader dispatch.

A :class:`Scene` holds every view of a capture (all splits), already composited on its background
and resized to the working resolution. Camera conventions are those of :mod:`r2l.rays`.

Names: ``images: (n_views, H, W, 3)`` float32 in [0, 1]; ``poses: (n_views, 4, 4)`` float32
camera-to-world; ``splits`` maps ``"train" | "val" | "test"`` to int64 view indices.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from r2l.errors import R2LError
from r2l.rays import get_rays, ndc_rays

FORMATS = ("builtin", "blender", "llff", "photos")


@dataclass
class Scene:
    """Posed images of one scene, every split, at the working resolution.

    images: (n_views, H, W, 3) float32, composited on ``background``.
    poses: (n_views, 4, 4) float32 camera-to-world (OpenGL convention, see :mod:`r2l.rays`).
    near, far: sampling range along rays (world depths; for ``ndc`` scenes 0 and 1 in NDC).
    ndc: forward-facing scene rendered in NDC with the near plane at depth ``ndc_near``.
    render_poses: (n_frames, 4, 4) a camera path for videos (orbit or spiral).
    bounds: (n_views, 2) per-view depth bounds after scaling (LLFF only), else None.
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

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Images ``(n, H, W, 3)`` and poses ``(n, 4, 4)`` of one split."""
        if name not in self.splits:
            raise R2LError(f"scene {self.name!r} has no split {name!r} (has {sorted(self.splits)})")
        idx = self.splits[name]
        return self.images[idx], self.poses[idx]

    def size_at_width(self, width: int | None) -> tuple[int, int]:
        """``(H, W)`` of views ``width`` pixels wide, at most the scene's width (None: the scene's), same aspect."""
        W = self.W if width is None else max(1, min(int(width), self.W))
        return max(1, round(W * self.H / self.W)), W

    def to_render_space(
        self, rays_o: torch.Tensor, rays_d: torch.Tensor, focal: float | torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """World rays -> the space the networks sample in (NDC for forward-facing scenes).

        rays_o, rays_d: (n_rays, 3). focal: the rays' focal (float or (n_rays,)); scene focal if None.
        """
        if not self.ndc:
            return rays_o, rays_d
        f = self.focal if focal is None else focal
        return ndc_rays(self.H, self.W, f, self.ndc_near, rays_o, rays_d)

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


def load_scene(
    format: str,
    path: str | Path,
    name: str | None = None,
    resolution: int | None = None,
    factor: int = 8,
    background: tuple[float, float, float] = (1.0, 1.0, 1.0),
    test_skip: int = 1,
    llff_hold: int = 8,
) -> Scene:
    """Load a scene folder of a known format.

    format: ``blender`` (and ``builtin``, which is written in the Blender format), ``llff``, or ``photos``
    (a folder written by :func:`r2l.colmap.photos_to_scene`, read as the llff or blender scene it holds).
    resolution: Blender side in pixels (area-averaged resize); None keeps the files' size.
    factor: LLFF ``images_{factor}`` folder. test_skip: keep every n-th Blender test view.
    llff_hold: every n-th LLFF image is held out for test.
    """
    path = Path(path)
    name = name or path.name
    if format == "photos":
        from r2l.colmap import scene_format

        format = scene_format(path)
    if format in ("blender", "builtin"):
        from r2l.blender import load_blender

        scene = load_blender(path, name=name, resolution=resolution, background=background, test_skip=test_skip)
        scene.format = format
        return scene
    if format == "llff":
        from r2l.llff import load_llff

        return load_llff(path, name=name, factor=factor, hold=llff_hold)
    raise R2LError(f"unknown scene format {format!r}; expected one of {', '.join(FORMATS)}")
