"""``r2l export``: a student of either family as one ONNX graph that gives torch's colours from world-space rays.

Tiny students with random (non-trivial) weights on an object-centric and a forward-facing (NDC) scene are exported,
run in onnxruntime on every ray of a view and compared with ``Student.render_rays`` on the same view's render-space
rays; also any batch size, the metadata, float16 weights, the command's output and its one-line errors. The gather
lookups of the grid student are checked against ``grid_sample`` in torch alone (no ONNX packages needed).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import TINY_GRID_NET, object_and_forward_scenes, run_r2l, save_student_file, student_net

from r2l.cli import main
from r2l.core.errors import DataError
from r2l.data.builtin import write_unbounded
from r2l.data.registry import load_scene
from r2l.geometry.rays import get_rays
from r2l.models.export import EXPORT_FORMAT, INPUTS, OPSET, OUTPUT, bilinear, plane_table, trilinear
from r2l.models.load import load_model
from r2l.models.export_check import FP32_TOLERANCE, as_accurate_as_torch, fp64_render

MISSING = [name for name in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(name) is None]
needs_onnx = pytest.mark.skipif(bool(MISSING), reason=f"{', '.join(MISSING)} not installed: pip install -e '.[export]'")

GRID_NET = dataclasses.replace(TINY_GRID_NET, n_refine=4)


pytestmark = pytest.mark.usefixtures("quiet_logging")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> dict:
    """orbit (object), ff (forward-facing, NDC) and ub (the built-in unbounded scene: contracted points)."""
    root = tmp_path_factory.mktemp("scenes")
    folder = write_unbounded(root / "ub", seed=0, resolution=16, n_train=4, n_val=1, n_test=1)
    return {**object_and_forward_scenes(root, 16), "ub": load_scene("builtin", folder, resolution=16)}


def random_student(path: Path, scene, family: str) -> Path:
    """A student file (the keys r2l.stages.student writes) of ``family`` with random weights that make every part
    of the network matter: grid logits of several units and a box smaller than the scene (rays leave it)."""
    torch.manual_seed(3)
    box = torch.tensor([[-0.8, -0.8, -0.6], [0.8, 0.8, 0.6]]) * (1.0 if scene.ndc else 1.5)
    net, config = student_net(family, box=box, grid=GRID_NET)
    if family == "grid":
        with torch.no_grad():
            net.geometry.normal_(0.0, 3.0)
            if net.background is not None:  # (a softmax student's background logit)
                net.background.fill_(-1.0)
    return save_student_file(path, net, config, scene, step=7)


def world_rays(scene) -> tuple[torch.Tensor, torch.Tensor]:
    """World-space rays (H * W, 3) of the scene's first view, as a client builds them."""
    return get_rays(torch.as_tensor(scene.poses[0]), scene.H, scene.W, scene.focal)


def run_onnx(path: Path, rays_o: torch.Tensor, rays_d: torch.Tensor) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {INPUTS[0]: rays_o.numpy(), INPUTS[1]: rays_d.numpy()})[0]


@pytest.fixture(scope="module")
def exported(scenes, tmp_path_factory) -> dict:
    """(family, scene kind) -> (model file, ONNX file) for both families on both scenes."""
    if MISSING:
        pytest.skip(f"{', '.join(MISSING)} not installed: pip install -e '.[export]'")
    from r2l.models.export import export_student

    d = tmp_path_factory.mktemp("export")
    out = {}
    for family in ("r2l", "grid"):
        for kind, scene in scenes.items():
            model = random_student(d / f"{family}_{kind}.pt", scene, family)
            student = load_model(model, "cpu", precision="fp32")
            out[family, kind] = model, export_student(student, model, d / f"{family}_{kind}.onnx", "test")
    return out


@needs_onnx
@pytest.mark.parametrize("family", ["r2l", "grid"])
@pytest.mark.parametrize("kind", ["orbit", "ff", "ub"])
def test_onnx_gives_torch_colours_for_any_batch(exported, scenes, family, kind):
    model, onnx_file = exported[family, kind]
    scene = scenes[kind]
    rays_o, rays_d = world_rays(scene)
    want = load_model(model, "cpu", precision="fp32").render_rays(*scene.rays(scene.poses[0])).numpy()
    got = run_onnx(onnx_file, rays_o, rays_d)
    assert got.shape == (scene.H * scene.W, 3) and got.dtype == np.float32
    assert np.abs(got - want).max() <= FP32_TOLERANCE
    exact = fp64_render(load_model(model, "cpu", precision="fp32"), scene.camera(), rays_o, rays_d)
    assert exact.dtype == np.float64 and np.abs(exact - want).max() > 0  # computed in float64, not a copy
    assert np.abs(got - exact).max() <= FP32_TOLERANCE and np.abs(want - exact).max() <= FP32_TOLERANCE
    assert want.std() > 0.01  # the view is not one flat colour: the comparison means something
    for rows in (slice(0, 1), slice(5, 42)):  # other batch sizes give the same colours
        assert np.abs(run_onnx(onnx_file, rays_o[rows], rays_d[rows]) - want[rows]).max() <= FP32_TOLERANCE


@needs_onnx
def test_metadata_and_signature_round_trip(exported, scenes):
    import onnx

    from r2l.models.export import read_metadata

    model, onnx_file = exported["grid", "ff"]
    scene = scenes["ff"]
    meta = read_metadata(onnx_file)
    assert meta["r2l_export_format"] == EXPORT_FORMAT and meta["opset"] == OPSET
    assert meta["inputs"] == list(INPUTS) and meta["outputs"] == [OUTPUT] and meta["ray_space"] == "world"
    assert "OpenGL camera-to-world" in meta["camera_convention"]
    assert (meta["family"], meta["kind"], meta["step"], meta["val_psnr"]) == ("grid", "finetuned", 7, 11.5)
    assert (meta["near"], meta["far"], meta["ndc"], meta["ndc_near"]) == (0.0, 1.0, True, scene.ndc_near)
    assert (meta["scene_name"], meta["scene_format"]) == (scene.name, scene.format)
    assert (meta["H"], meta["W"], meta["focal"]) == (scene.H, scene.W, scene.focal)
    assert meta["weights"] == "float32" and meta["render_poses"] == scene.camera()["render_poses"]
    assert meta["unbounded"] is False and meta["sample_split"] is None
    ub = read_metadata(exported["r2l", "ub"][1])
    assert ub["unbounded"] is True and ub["sample_split"] == scenes["ub"].sample_split and ub["ndc"] is False
    proto = onnx.load(str(onnx_file))
    assert {o.domain: o.version for o in proto.opset_import}[""] == OPSET
    for value, name in [*zip(proto.graph.input, INPUTS, strict=True), (proto.graph.output[0], OUTPUT)]:
        dims = value.type.tensor_type.shape.dim
        assert value.name == name and value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        assert dims[0].dim_param and dims[1].dim_value == 3  # (n_rays, 3), n_rays free
    assert not {n.op_type for n in proto.graph.node} & {"GridSample", "Loop", "If"}


@needs_onnx
def test_float16_weights(exported, scenes, tmp_path):
    import onnx

    from r2l.models.export import export_student, read_metadata

    model, full = exported["grid", "orbit"]
    half = export_student(load_model(model, "cpu", precision="fp32"), model, tmp_path / "half.onnx", "test", fp16=True)
    assert read_metadata(half)["weights"] == "float16" and half.stat().st_size < full.stat().st_size
    weights = [w for w in onnx.load(str(half)).graph.initializer if np.prod(w.dims) >= 16 and w.data_type in (
        onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)]
    assert weights and all(w.data_type == onnx.TensorProto.FLOAT16 for w in weights)
    rays = world_rays(scenes["orbit"])
    mse = float(np.mean((run_onnx(half, *rays) - run_onnx(full, *rays)) ** 2))
    assert -10 * np.log10(mse) > 40.0  # dB of the float16 colours against the float32 ones


def test_gather_lookups_are_grid_sample():
    """trilinear (inside the grid) and bilinear (two planes in one table, anywhere: zero padding) against torch's
    grid_sample."""
    torch.manual_seed(0)
    grid, planes = torch.randn(5, 6, 7), torch.randn(2, 3, 6, 9)
    g = torch.rand(500, 3) * 2 - 1
    want = F.grid_sample(grid[None, None], g.reshape(1, -1, 1, 1, 3), align_corners=True).reshape(-1)
    got = trilinear(grid.reshape(-1), tuple(grid.shape), g[:, 0], g[:, 1], g[:, 2])
    assert torch.allclose(got, want, atol=1e-6)
    edges = torch.tensor([[-1.0, -1.0], [1.0, 1.0], [1.0, -1.0], [-1.1, 0.3], [0.2, 1.05], [1.3, -2.0], [9.0, 9.0]])
    xy = torch.stack([torch.cat([torch.rand(500, 2) * 3 - 1.5, edges]) for _ in planes])  # (2, m, 2)
    want = F.grid_sample(planes, xy[:, :, None, :], align_corners=True)[..., 0]  # (2, 3, m)
    table = torch.cat([plane_table(p) for p in planes], dim=1)
    got = bilinear(table, tuple(planes.shape[2:]), xy[..., 0], xy[..., 1])  # (3, 2, m)
    assert torch.allclose(got.transpose(0, 1), want, atol=1e-6)
    assert got[..., -2:].abs().max() == 0  # beyond one node outside: zero


@needs_onnx
def test_export_command_prints_the_check(exported, tmp_path, capsys):
    model, _ = exported["r2l", "orbit"]
    assert main(["export", str(model), "--out", str(tmp_path / "a.onnx"), "--threads", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"wrote {tmp_path / 'a.onnx'} (r2l student, opset {OPSET}")
    assert "max abs diff" in lines[1] and "ms/frame" in lines[1] and "1 CPU thread" in lines[1]
    assert main(["export", str(model), "--out", str(tmp_path / "b.onnx"), "--json", "--threads", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["max_abs_diff"] <= FP32_TOLERANCE and report["size_bytes"] == (tmp_path / "b.onnx").stat().st_size
    assert report["onnx_ms_per_frame"] > 0 and report["torch_ms_per_frame"] > 0 and report["n_rays"] == 256


def test_accuracy_rule():
    """Within 1e-5 of torch, or no farther from the float64 render than torch's float32 render (the trained grid
    students' case: 2.3e-4 from torch, 1.5e-4 and 2.2e-4 from float64)."""
    def check(diff, onnx, torch_):
        return {"max_abs_diff": diff, "onnx_vs_fp64": onnx, "torch_vs_fp64": torch_}

    assert as_accurate_as_torch(check(9e-6, 1e-3, 0.0)) and as_accurate_as_torch(check(2.3e-4, 1.5e-4, 2.2e-4))
    assert as_accurate_as_torch(check(2.3e-4, 2.2e-4, 2.2e-4)) and not as_accurate_as_torch(check(2e-5, 3e-4, 2.2e-4))


@needs_onnx
def test_a_less_accurate_export_is_not_written(exported, tmp_path, monkeypatch):
    """The file appears only after its check passed; float16 weights are not held to the float32 rule."""
    import r2l.models.export_check as export_check
    from r2l.core.errors import R2LError

    model, _ = exported["r2l", "orbit"]
    measured = export_check.check_export
    worse = {"max_abs_diff": 3e-4, "onnx_vs_fp64": 3e-4, "torch_vs_fp64": 1e-5}
    monkeypatch.setattr(export_check, "check_export", lambda *args: {**measured(*args), **worse})
    with pytest.raises(R2LError, match="less accurate than torch's own float32 render") as err:
        export_check.export_and_check(model, tmp_path / "a.onnx", threads=1, repeats=1)
    assert str(model) in str(err.value) and "3.00e-04" in str(err.value)
    assert list(tmp_path.iterdir()) == []
    half = export_check.export_and_check(model, tmp_path / "a.onnx", fp16=True, threads=1, repeats=1)
    assert half["file"] == str(tmp_path / "a.onnx") and [p.name for p in tmp_path.iterdir()] == ["a.onnx"]


def test_export_of_what_is_no_student_is_one_line(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not a model\n")
    np.save(tmp_path / "array.npy", np.zeros(3))
    for bad in (tmp_path / "notes.txt", tmp_path / "array.npy", tmp_path / "missing.pt"):
        assert main(["export", str(bad), "--out", str(tmp_path / "x.onnx")]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"r2l: error: {bad}: ") and "\n" not in err
    assert main(["export", str(tmp_path / "notes.txt"), "--out", str(tmp_path / "x.png")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"r2l export: error: --out {tmp_path / 'x.png'} must be a file ending in .onnx"
    assert not (tmp_path / "x.onnx").exists()


def test_missing_onnx_packages_are_one_line(scenes, tmp_path, capsys, monkeypatch):
    model = random_student(tmp_path / "s.pt", scenes["orbit"], "r2l")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else real(name, *a))
    assert main(["export", str(model), "--out", str(tmp_path / "s.onnx")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "r2l: error: ONNX export needs onnxscript: pip install 'r2l[export]' (onnx, onnxscript, onnxruntime)"


def test_export_help():
    done = run_r2l("export", "--help", timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("usage: r2l export") and "--fp16" in done.stdout


def test_deploy_table_reads_every_check(tmp_path):
    """results/deploy.md and .csv: a row per check.json, its scene from the path, the values as written."""
    from r2l.report.exports import DEPLOY_COLUMNS, write_deploy_summary

    checks = []
    for scene, folder, family, size in (("lego", "export", "grid", 3_299_370), ("lego", "export_r2l", "r2l", 1_193_872)):
        path = tmp_path / "results" / scene / folder / "check.json"
        path.parent.mkdir(parents=True)
        check = {"family": family, "fp16": False, "size_bytes": size, "max_abs_diff": 2.8e-5, "psnr_vs_torch": 118.4,
                 "onnx_ms_per_frame": 118.0, "torch_ms_per_frame": 125.2, "threads": 1, "H": 64, "W": 64}
        if family == "grid":  # the r2l one as written before the float64 comparison was measured
            check.update(onnx_vs_fp64=1.48e-4, torch_vs_fp64=2.24e-4)
        path.write_text(json.dumps(check))
        checks.append(path)
    df = write_deploy_summary(checks, tmp_path / "deploy.csv", tmp_path / "deploy.md")
    assert list(df.columns) == DEPLOY_COLUMNS and list(df["family"]) == ["grid", "r2l"]
    assert list(df["scene"]) == ["lego", "lego"] and df["onnx_mb"].tolist() == [3.29937, 1.193872]
    md = (tmp_path / "deploy.md").read_text()
    assert "| lego | grid | float32 | 3.30 | 2.8e-05 | 118.4 | 1.5e-04 / 2.2e-04 | 118.0 | 125.2 | 1 | 64 x 64 |" in md
    assert "| lego | r2l | float32 | 1.19 | 2.8e-05 | 118.4 |  /  | 118.0 | 125.2 | 1 | 64 x 64 |" in md
    bad = tmp_path / "results" / "x" / "export" / "check.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{}")
    with pytest.raises(DataError, match="not an export check"):
        write_deploy_summary([bad], tmp_path / "d.csv", tmp_path / "d.md")
