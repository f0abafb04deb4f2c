"""Cameras and rays: the one place that fixes r2l's conventions.

Conventions used by every stage (teacher, pseudo-data, student, evaluation):

- Camera-to-world poses ``c2w`` are ``(4, 4)`` (or ``(3, 4)``) matrices in the OpenGL / Blender
  convention: camera x points right, y points up and the camera looks down its -z axis.
  The columns of ``c2w[:3, :3]`` are the camera axes in world coordinates, ``c2w[:3, 3]`` is the
  camera centre.
- Intrinsics are a pinhole ``(H, W, focal)`` in pixels with the principal point at the image centre
  ``(W / 2, H / 2)``.
- Pixel centres: the pixel in column ``u`` (0..W-1, left to right) and row ``v`` (0..H-1, top to
  bottom) is sampled through its centre ``(u + 0.5, v + 0.5)``. A 3D point that projects to image
  coordinates ``(x, y)`` lands in pixel ``(floor(x), floor(y))``.
- Ray directions are *not* normalised: a direction has camera-space z equal to -1, so the
  distance ``t`` along it is depth along the viewing axis, and ``near``/``far`` are depths.
- Variable names: ``rays_o: (n_rays, 3)`` origins, ``rays_d: (n_rays, 3)`` directions,
  ``t: (n_rays, n_samples)`` distances along rays, ``pts: (n_rays, n_samples, 3)`` points.
- Forward-facing (LLFF) scenes are rendered through normalised device coordinates (NDC) with the
  near plane at depth 1; in NDC a ray runs from t=0 (near plane) to t=1 (infinity).
"""

from __future__ import annotations

import torch


def pixel_centres(H: int, W: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Column and row coordinates of all pixel centres, row-major.

    Returns ``(x, y)``, each ``(H * W,)``: ``x = u + 0.5``, ``y = v + 0.5``; index ``v * W + u``.
    """
    v, u = torch.meshgrid(
        torch.arange(H, dtype=torch.float32, device=device),
        torch.arange(W, dtype=torch.float32, device=device),
        indexing="ij",
    )
    return u.reshape(-1) + 0.5, v.reshape(-1) + 0.5


def camera_dirs(x: torch.Tensor, y: torch.Tensor, H: int, W: int, focal) -> torch.Tensor:
    """Camera-space ray directions through image points.

    x, y: (n,) image coordinates in pixels (use :func:`pixel_centres` for pixel centres).
    focal: float or (n,) tensor of focal lengths in pixels.
    Returns (n, 3) directions with z = -1.
    """
    return torch.stack(
        [(x - 0.5 * W) / focal, -(y - 0.5 * H) / focal, -torch.ones_like(x)], dim=-1
    )


def rays_from_dirs(c2w: torch.Tensor, dirs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate camera-space directions into the world.

    c2w: (4, 4), (3, 4) or per-ray (n, 3|4, 4).  dirs: (n, 3).
    Returns ``rays_o: (n, 3)``, ``rays_d: (n, 3)``.
    """
    R, t = c2w[..., :3, :3], c2w[..., :3, 3]
    if R.dim() == 2:
        return t.expand(dirs.shape[0], 3), dirs @ R.T
    return t, torch.einsum("nij,nj->ni", R, dirs)


def get_rays(c2w: torch.Tensor, H: int, W: int, focal: float) -> tuple[torch.Tensor, torch.Tensor]:
    """All rays of one image, row-major.

    c2w: (4, 4) or (3, 4). Returns ``rays_o: (H*W, 3)``, ``rays_d: (H*W, 3)``.
    """
    x, y = pixel_centres(H, W, device=c2w.device)
    return rays_from_dirs(c2w.float(), camera_dirs(x, y, H, W, focal))


def rays_at_pixels(
    c2w: torch.Tensor, focal: torch.Tensor, H: int, W: int, pix: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through chosen pixels of many views (rebuilds stored rays on the fly).

    c2w: (n, 4, 4) or (n, 3, 4) the pose of each ray's view.  focal: (n,) focal of each ray's view.
    pix: (n,) flat pixel index ``v * W + u``.
    Returns ``rays_o: (n, 3)``, ``rays_d: (n, 3)``.
    """
    u = (pix % W).float() + 0.5
    v = torch.div(pix, W, rounding_mode="floor").float() + 0.5
    return rays_from_dirs(c2w.float(), camera_dirs(u, v, H, W, focal))


def project(pts: torch.Tensor, c2w: torch.Tensor, H: int, W: int, focal: float) -> torch.Tensor:
    """Image coordinates of world points (the inverse of :func:`get_rays`).

    pts: (n, 3) world points in front of the camera. Returns (n, 2) ``(x, y)`` in pixels;
    the containing pixel is ``(floor(x), floor(y))``.
    """
    R, t = c2w[:3, :3].float(), c2w[:3, 3].float()
    cam = (pts - t) @ R  # world -> camera: R^T (p - t)
    depth = -cam[:, 2]
    x = cam[:, 0] / depth * focal + 0.5 * W
    y = -cam[:, 1] / depth * focal + 0.5 * H
    return torch.stack([x, y], dim=-1)


def ndc_rays(
    H: int, W: int, focal, near: float, rays_o: torch.Tensor, rays_d: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Map world rays of a forward-facing scene into normalised device coordinates.

    The published LLFF/NeRF construction: origins are first moved onto the plane z = -near, then
    projected; in NDC the ray runs from t=0 (near plane) to t=1 (infinite depth).
    focal: float or (n,) tensor. rays_o, rays_d: (n, 3). Returns NDC ``rays_o, rays_d``: (n, 3).
    """
    t = -(near + rays_o[:, 2]) / rays_d[:, 2]
    rays_o = rays_o + t[:, None] * rays_d
    ox, oy, oz = rays_o.unbind(-1)
    dx, dy, dz = rays_d.unbind(-1)
    sx, sy = -2.0 * focal / W, -2.0 * focal / H
    o = torch.stack([sx * ox / oz, sy * oy / oz, 1.0 + 2.0 * near / oz], dim=-1)
    d = torch.stack(
        [sx * (dx / dz - ox / oz), sy * (dy / dz - oy / oz), -2.0 * near / oz], dim=-1
    )
    return o, d
