"""Camera and ray conventions of r2l.geometry.rays, checked against hand-computed projections."""

import numpy as np
import pytest
import torch

from r2l.data.scene import Scene
from r2l.geometry.rays import camera_dirs, get_rays, ndc_rays, pixel_centres, project, rays_at_pixels

H = W = 100
FOCAL = 50.0


def _pose(R, t) -> torch.Tensor:
    c2w = torch.eye(4)
    c2w[:3, :3] = torch.tensor(R, dtype=torch.float32)
    c2w[:3, 3] = torch.tensor(t, dtype=torch.float32)
    return c2w


# Camera at (0, 0, 4) looking down -z at the origin (identity rotation).
FRONT = _pose(np.eye(3), [0.0, 0.0, 4.0])
# Camera at (4, 0, 0) looking at the origin, z up: right = +y, up = +z, back = +x.
SIDE = _pose(np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), [4.0, 0.0, 0.0])


def test_pixel_centres_row_major():
    x, y = pixel_centres(2, 3)
    assert x.tolist() == [0.5, 1.5, 2.5, 0.5, 1.5, 2.5]
    assert y.tolist() == [0.5, 0.5, 0.5, 1.5, 1.5, 1.5]


def test_project_hand_computed():
    pts = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-2.0, -1.0, 2.0]])
    xy = project(pts, FRONT, H, W, FOCAL)
    # depth 4: x = 50 + 50 * X / 4, y = 50 - 50 * Y / 4; last point is at depth 2.
    expected = [[50.0, 50.0], [62.5, 50.0], [50.0, 37.5], [0.0, 75.0]]
    torch.testing.assert_close(xy, torch.tensor(expected))
    pix = torch.floor(xy).long()
    assert pix[1].tolist() == [62, 50]  # column 62, row 50
    assert pix[2].tolist() == [50, 37]  # +y is up in the world, so a smaller row


def test_project_rotated_camera():
    xy = project(torch.tensor([[0.0, 1.0, 0.5]]), SIDE, H, W, FOCAL)
    # camera coords: right = 1, up = 0.5, depth 4 -> (50 + 12.5, 50 - 6.25)
    torch.testing.assert_close(xy, torch.tensor([[62.5, 43.75]]))


def test_get_rays_hand_computed():
    rays_o, rays_d = get_rays(FRONT, H, W, FOCAL)
    assert rays_o.shape == rays_d.shape == (H * W, 3)
    k = 37 * W + 62  # row 37, column 62: centre (62.5, 37.5)
    torch.testing.assert_close(rays_d[k], torch.tensor([0.25, 0.25, -1.0]))
    torch.testing.assert_close(rays_o[k], torch.tensor([0.0, 0.0, 4.0]))
    # Marching to depth 4 (t = depth, since camera z of the direction is -1) reaches z = 0.
    torch.testing.assert_close(rays_o[k] + 4.0 * rays_d[k], torch.tensor([1.0, 1.0, 0.0]))
    # Directions of the rotated camera: centre pixel (50, 50) has centre (50.5, 50.5).
    _, d_side = get_rays(SIDE, H, W, FOCAL)
    torch.testing.assert_close(d_side[50 * W + 50], torch.tensor([-1.0, 0.01, -0.01]))


@pytest.mark.parametrize("c2w", [FRONT, SIDE])
def test_get_rays_project_round_trip(c2w):
    rays_o, rays_d = get_rays(c2w, H, W, FOCAL)
    depth = torch.linspace(1.0, 7.0, H * W)
    pts = rays_o + depth[:, None] * rays_d
    xy = project(pts, c2w, H, W, FOCAL)
    x, y = pixel_centres(H, W)
    torch.testing.assert_close(xy, torch.stack([x, y], -1), atol=2e-4, rtol=0)
    # Depth along the viewing axis equals t.
    cam_z = ((pts - c2w[:3, 3]) @ c2w[:3, :3])[:, 2]
    torch.testing.assert_close(-cam_z, depth, atol=1e-5, rtol=1e-5)


def test_rays_at_pixels_matches_get_rays():
    gen = torch.Generator().manual_seed(0)
    poses = torch.stack([FRONT, SIDE, FRONT])
    focals = torch.tensor([50.0, 80.0, 30.0])
    view = torch.randint(0, 3, (64,), generator=gen)
    pix = torch.randint(0, H * W, (64,), generator=gen)
    o, d = rays_at_pixels(poses[view], focals[view], H, W, pix)
    for i in range(64):
        ro, rd = get_rays(poses[view[i]], H, W, float(focals[view[i]]))
        torch.testing.assert_close(o[i], ro[pix[i]])
        torch.testing.assert_close(d[i], rd[pix[i]])


def test_camera_dirs_per_ray_focal():
    d = camera_dirs(torch.tensor([75.0, 75.0]), torch.tensor([25.0, 25.0]), H, W, torch.tensor([25.0, 50.0]))
    torch.testing.assert_close(d, torch.tensor([[1.0, 1.0, -1.0], [0.5, 0.5, -1.0]]))


def test_ndc_centre_ray():
    o, d = ndc_rays(H, W, FOCAL, 1.0, torch.zeros(1, 3), torch.tensor([[0.0, 0.0, -1.0]]))
    # origin moved to the near plane z = -1 -> NDC z = 1 + 2 * 1 / (-1) = -1; direction z = -2 / (-1) = 2.
    torch.testing.assert_close(o, torch.tensor([[0.0, 0.0, -1.0]]))
    torch.testing.assert_close(d, torch.tensor([[0.0, 0.0, 2.0]]))
    # A point at depth D lies at NDC z = 1 - 2 / D, i.e. t = 1 - 1 / D: depth 1 -> t=0, infinity -> t=1.
    for depth, t in [(1.0, 0.0), (2.0, 0.5), (4.0, 0.75), (1e6, 1.0)]:
        torch.testing.assert_close((o + t * d)[0, 2], torch.tensor(1.0 - 2.0 / depth), atol=1e-5, rtol=0)


def test_ndc_maps_world_points_onto_ndc_ray():
    """World points along an off-axis ray map to the NDC ray at t = 1 - near / depth."""
    near, focal = 1.0, 40.0
    c2w = _pose(np.eye(3), [0.3, -0.2, 0.5])  # forward-facing camera off the origin
    rays_o, rays_d = get_rays(c2w, H, W, focal)
    k = torch.tensor([0, 1234, 5050, 9999])
    o, d = ndc_rays(H, W, focal, near, rays_o[k], rays_d[k])
    # Near-plane crossing at world z = -near gives NDC z = -1.
    torch.testing.assert_close(o[:, 2], torch.full((4,), -1.0))
    for depth in [2.0, 5.0, 30.0]:  # world depth below the plane z = 0 (points at z = -depth)
        s = (0.5 + depth) / 1.0  # t along the world ray from the camera at z = 0.5
        p = rays_o[k] + s * rays_d[k]
        ndc_p = torch.stack([-focal / (W / 2) * p[:, 0] / p[:, 2], -focal / (H / 2) * p[:, 1] / p[:, 2],
                             1 + 2 * near / p[:, 2]], -1)
        t = 1.0 - near / depth
        torch.testing.assert_close(o + t * d, ndc_p, atol=1e-5, rtol=1e-5)


def test_scene_rays_ndc_and_world():
    images = np.zeros((1, 4, 6, 3), np.float32)
    poses = np.eye(4, dtype=np.float32)[None]
    common = dict(name="t", images=images, poses=poses, H=4, W=6, focal=5.0, splits={"train": np.array([0])})
    world = Scene(format="blender", near=2.0, far=6.0, **common)
    ndc = Scene(format="llff", near=0.0, far=1.0, ndc=True, ndc_near=1.0, **common)
    o, d = world.rays(poses[0])
    o_ref, d_ref = get_rays(torch.eye(4), 4, 6, 5.0)
    torch.testing.assert_close(o, o_ref)
    torch.testing.assert_close(d, d_ref)
    o2, d2 = ndc.rays(poses[0])
    o2_ref, d2_ref = ndc_rays(4, 6, 5.0, 1.0, o_ref, d_ref)
    torch.testing.assert_close(o2, o2_ref)
    torch.testing.assert_close(d2, d2_ref)
    torch.testing.assert_close(o2[:, 2], torch.full((24,), -1.0))
