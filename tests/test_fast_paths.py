"""Issue 12 §3 fast paths: the student's frame rendering (rays built on the device, torch.compile with its
fallback) and the rays built from a pose."""

import logging

import numpy as np
import pytest
import torch
from helpers import NEEDS_CXX

from r2l.core.errors import R2LError
from r2l.data.scene import Scene
from r2l.geometry.poses import sample_blender_poses
from r2l.models.r2lnet import R2LNet, R2LNetConfig
from r2l.models.students import Student, compile_for_inference, compile_wanted
from r2l.models.render import pose_rays

def tiny_student(width: int = 16, seed: int = 0, ndc: bool = False) -> Student:
    """A random 4-layer student (4 points, 3 frequencies) with a stored 12 x 10 camera."""
    torch.manual_seed(seed)
    net = R2LNet(R2LNetConfig(n_points=4, n_freqs=3, depth=4, width=width))
    camera = {"H": 10, "W": 12, "focal": 11.0, "ndc": ndc, "ndc_near": 1.0}
    return Student(net, 0.0 if ndc else 2.0, 1.0 if ndc else 6.0, {"scene": camera}, chunk=50)


def scene_of(ndc: bool) -> Scene:
    poses, _ = sample_blender_poses(2, np.random.default_rng(0), radius=4.0, focal_scale=None)
    return Scene(name="s", format="llff" if ndc else "blender", images=np.zeros((2, 10, 12, 3), np.float32),
                 poses=poses.astype(np.float32), H=10, W=12, focal=11.0, near=2.0, far=6.0, ndc=ndc,
                 splits={"train": np.arange(2)})


def random_rays(n: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=gen) * 0.1 + torch.tensor([0.0, 0.0, 4.0]), \
        torch.randn(n, 3, generator=gen) * 0.1 - torch.tensor([0.0, 0.0, 1.0])


def test_compile_modes():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert [compile_wanted(m, cpu) for m in ("off", "on", "auto")] == [False, True, False]  # auto: measured slower
    assert [compile_wanted(m, cuda) for m in ("off", "on", "auto")] == [False, True, True]
    with pytest.raises(R2LError, match="off, on, auto"):
        compile_wanted("yes", cpu)
    student = tiny_student()
    assert student.net.compiled is False and student.set_compile("auto") is False  # the CPU: eager
    assert compile_for_inference(student.model, "off").model is student.model


@pytest.mark.parametrize("ndc", [False, True])
def test_pose_rays_are_the_scenes_rays_and_render_image_uses_them(ndc):
    scene, student = scene_of(ndc), tiny_student(ndc=ndc)
    pose = scene.poses[1]
    rays_o, rays_d = pose_rays(pose, 10, 12, 11.0, ndc, 1.0, "cpu")
    ref_o, ref_d = scene.rays(pose)
    assert rays_o.shape == (120, 3) and rays_o.dtype == torch.float32
    assert torch.equal(rays_o, ref_o) and torch.equal(rays_d, ref_d)  # exactly: the same float32 arithmetic
    assert torch.equal(pose_rays(torch.as_tensor(pose), 10, 12, 11.0, ndc, 1.0)[1], ref_d)  # a tensor pose too
    expected = student.render_rays(ref_o, ref_d).reshape(10, 12, 3)
    assert torch.equal(student.render_image(scene, pose, 10, 12, 11.0), expected)
    assert torch.equal(student.render_image(None, pose, 10, 12, 11.0), expected)  # the stored camera
    student.meta["scene"] = None  # a student file of r2l 0.1
    with pytest.raises(R2LError, match="no scene camera"):
        student.render_image(None, pose, 10, 12, 11.0)


def test_render_rays_chunks_match_one_pass():
    """Chunks of 50 rays, kept on the device and copied back once, give the one-pass network's colours."""
    student = tiny_student()
    rays_o, rays_d = random_rays(173)  # 3 full chunks and a partial one
    rgb = student.render_rays(rays_o, rays_d)
    with torch.no_grad():
        ref = student.model(rays_o, rays_d, 2.0, 6.0, False)
    assert rgb.shape == (173, 3) and rgb.device.type == "cpu" and rgb.dtype == torch.float32
    torch.testing.assert_close(rgb, ref, atol=1e-6, rtol=0)
    assert student.render_rays(torch.zeros(0, 3), torch.zeros(0, 3)).shape == (0, 3)


@NEEDS_CXX
def test_compiled_student_renders_what_the_eager_one_does():
    """torch.compile (Inductor, CPU) within 1e-5 of eager on full and partial chunks; deterministic."""
    torch._dynamo.reset()
    student = tiny_student(width=24)
    rays_o, rays_d = random_rays(173)
    eager = student.render_rays(rays_o, rays_d)
    assert student.set_compile("on") is True
    compiled = student.render_rays(rays_o, rays_d)
    assert student.net.compiled  # it compiled: no fallback
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=0)
    torch.testing.assert_close(student.render_rays(rays_o[:7], rays_d[:7]), eager[:7], atol=1e-5, rtol=0)  # a new size
    assert torch.equal(student.render_rays(rays_o, rays_d), compiled)  # deterministic


def test_failed_compile_falls_back_to_eager_with_a_warning(caplog):
    """Without a working C++ compiler Inductor fails at the first call: one warning, then the eager network."""
    import torch._inductor.config as inductor_config

    torch._dynamo.reset()
    student = tiny_student(width=20, seed=3)
    rays_o, rays_d = random_rays(60)
    eager = student.render_rays(rays_o, rays_d)
    student.set_compile("on")
    with inductor_config.patch({"cpp.cxx": (None, "/nonexistent/r2l-test-g++"), "force_disable_caches": True}), \
            caplog.at_level(logging.WARNING, logger="r2l"):
        rgb = student.render_rays(rays_o, rays_d)
        again = student.render_rays(rays_o, rays_d)
    assert student.net.compiled is False
    assert torch.equal(rgb, eager) and torch.equal(again, eager)
    warnings = [r.getMessage() for r in caplog.records if "torch.compile of the student failed" in r.getMessage()]
    assert len(warnings) == 1 and "rendering eagerly" in warnings[0], caplog.text
    torch._dynamo.reset()
