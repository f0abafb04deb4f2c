"""How an exported student (:mod:`r2l.models.export`) compares with torch: accuracy, size, speed on the CPU.

:func:`check_export` renders one full view of the stored camera through onnxruntime and through the torch
student on the same rays and the same number of CPU threads, and returns the numbers the results tables take
(the keys of :data:`CHECK_KEYS`); :func:`check_line` says them in one line.
"""

from __future__ import annotations

import copy
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from r2l.core.errors import R2LError
from r2l.geometry.rays import get_rays, ndc_rays
from r2l.models.export import INPUTS, require
from r2l.models.students import Student

CHECK_KEYS = ("max_abs_diff", "psnr_vs_torch", "onnx_vs_fp64", "torch_vs_fp64", "size_bytes", "onnx_ms_per_frame",
              "torch_ms_per_frame", "threads", "H", "W", "n_rays")
FP64_CHUNK = 8192  # rays per call of the float64 render
FP32_TOLERANCE = 1e-5  # an fp32 export within this of torch's colours (in [0, 1]) passes (as_accurate_as_torch)


def view_rays(camera: dict, pose=None) -> tuple[torch.Tensor, torch.Tensor]:
    """World-space rays ``(H * W, 3)`` each of one full view of the stored camera: at ``pose`` (4, 4), else the
    first pose of its camera path (the identity when it stores none)."""
    if pose is None:
        poses = camera.get("render_poses") or []
        pose = poses[0] if len(poses) else np.eye(4)
    c2w = torch.as_tensor(np.asarray(pose, dtype=np.float32))
    return get_rays(c2w, int(camera["H"]), int(camera["W"]), float(camera["focal"]))


def render_space(camera: dict, rays_o: torch.Tensor, rays_d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The render-space rays torch's student takes (NDC for a forward-facing scene): rays_o, rays_d (n, 3)."""
    if not camera["ndc"]:
        return rays_o, rays_d
    return ndc_rays(int(camera["H"]), int(camera["W"]), float(camera["focal"]), float(camera.get("ndc_near", 1.0)),
                    rays_o, rays_d)


def fp64_render(student: Student, camera: dict, rays_o: torch.Tensor, rays_d: torch.Tensor) -> np.ndarray:
    """The student's colours (n, 3) computed in float64 throughout (a double copy of its network, the NDC map and
    the points in float64) from the world-space rays_o, rays_d: (n, 3) both float32 renders take: the reference
    that tells how far each float32 render is from the function the weights define."""
    net = copy.deepcopy(student.model).double().eval()
    saved = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # the points' linspace and offsets too
    try:
        with torch.no_grad():
            o, d = render_space(camera, rays_o.double(), rays_d.double())
            parts = [net(o[i : i + FP64_CHUNK], d[i : i + FP64_CHUNK], student.near, student.far, False)
                     for i in range(0, o.shape[0], FP64_CHUNK)]
    finally:
        torch.set_default_dtype(saved)
    return torch.cat(parts).numpy()


def as_accurate_as_torch(check: dict) -> bool:
    """Whether an fp32 export passes :func:`check_export`: its colours within :data:`FP32_TOLERANCE` of torch's, or
    no farther from the float64 render than torch's own float32 render is (a student whose colours move by more
    than that when its input rays move by one float32 step cannot be held closer by any float32 arithmetic)."""
    return check["max_abs_diff"] <= FP32_TOLERANCE or check["onnx_vs_fp64"] <= check["torch_vs_fp64"]


def onnx_session(path: str | Path, threads: int):
    """An onnxruntime CPU session of ``path`` on ``threads`` threads (R2LError when onnxruntime is missing)."""
    require("onnxruntime")
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(session, rays_o: torch.Tensor, rays_d: torch.Tensor) -> np.ndarray:
    """Colours (n, 3) of an exported graph for world-space rays_o, rays_d: (n, 3)."""
    feed = {INPUTS[0]: rays_o.numpy().astype(np.float32), INPUTS[1]: rays_d.numpy().astype(np.float32)}
    return session.run(None, feed)[0]


def median_ms(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` in milliseconds over ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR (dB) of colours ``a`` against ``b`` (same shape, values in [0, 1]); inf when they are equal."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else -10.0 * np.log10(mse)


def check_export(student: Student, camera: dict, onnx_path: str | Path, threads: int | None = None,
                 repeats: int = 5, pose=None) -> dict:
    """Compare an exported file with the torch student it came from on one full view (:func:`view_rays`).

    student: loaded on the CPU at fp32; camera: its stored scene camera; threads: CPU threads of both (None:
    torch's current count). Returns :data:`CHECK_KEYS`: the max abs difference and PSNR of the exported colours
    against torch's, the max abs difference of each against the float64 render (:func:`fp64_render`), the file's
    size, each runtime's median ms per frame (whole view in one call), and the view.
    """
    threads = threads or torch.get_num_threads()
    rays_o, rays_d = view_rays(camera, pose)
    session = onnx_session(onnx_path, threads)
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        ref = student.render_rays(*render_space(camera, rays_o, rays_d)).numpy()
        torch_ms = median_ms(lambda: student.render_rays(*render_space(camera, rays_o, rays_d)), repeats)
    finally:
        torch.set_num_threads(saved)
    out = run_onnx(session, rays_o, rays_d)
    onnx_ms = median_ms(lambda: run_onnx(session, rays_o, rays_d), repeats)
    exact = fp64_render(student, camera, rays_o, rays_d)
    return {"max_abs_diff": float(np.abs(out - ref).max()), "psnr_vs_torch": psnr(out, ref),
            "onnx_vs_fp64": float(np.abs(out - exact).max()), "torch_vs_fp64": float(np.abs(ref - exact).max()),
            "size_bytes": Path(onnx_path).stat().st_size, "onnx_ms_per_frame": onnx_ms,
            "torch_ms_per_frame": torch_ms, "threads": threads, "H": int(camera["H"]), "W": int(camera["W"]),
            "n_rays": int(rays_o.shape[0])}


def check_line(check: dict) -> str:
    """:func:`check_export`'s numbers in one line."""
    return (f"check on a {check['W']} x {check['H']} view: max abs diff {check['max_abs_diff']:.2e} vs torch "
            f"(PSNR {check['psnr_vs_torch']:.1f} dB; against a float64 render: onnxruntime "
            f"{check['onnx_vs_fp64']:.2e}, torch {check['torch_vs_fp64']:.2e}), {check['size_bytes'] / 1e6:.2f} MB, "
            f"onnxruntime {check['onnx_ms_per_frame']:.1f} ms/frame vs torch {check['torch_ms_per_frame']:.1f} "
            f"ms/frame on {check['threads']} CPU thread{'s' if check['threads'] != 1 else ''}")


def load_student(model_path: str | Path) -> Student:
    """The student file ``model_path`` loaded on the CPU at float32; DataError naming the file when it is a
    teacher's."""
    from r2l.core.errors import DataError
    from r2l.models.load import load_model

    model = load_model(model_path, "cpu", precision="fp32")
    if not isinstance(model, Student):
        raise DataError(Path(model_path), "a teacher model file: only students (student, finetuned) export to ONNX")
    return model


def export_and_check(model_path: str | Path, out: str | Path, fp16: bool = False, threads: int | None = None,
                     repeats: int = 5) -> dict:
    """Export the student file ``model_path`` to ``out`` (:func:`r2l.models.export.export_student`) and compare it
    with torch (:func:`check_export`, each runtime timed over ``repeats`` frames); returns the check's numbers
    with the file, family, opset and fp16. The file is written beside ``out`` and moved there once the check is
    done; a float32 export that is not :func:`as_accurate_as_torch` is removed and raises R2LError with the
    numbers (float16 weights are not held to it: docs/export.md gives their PSNR)."""
    from r2l.core.version import package_version
    from r2l.models.export import OPSET, export_student
    from r2l.models.load import model_camera

    require("onnx", "onnxscript", "onnxruntime")
    model = load_student(model_path)
    out = Path(out)
    checking = out.with_name(f".{out.name}.checking.onnx")
    try:
        export_student(model, Path(model_path), checking, package_version(), fp16)
        check = check_export(model, model_camera(model), checking, threads, repeats)
        if not fp16 and not as_accurate_as_torch(check):
            raise R2LError(f"{model_path}: the ONNX export is less accurate than torch's own float32 render "
                           f"({check_line(check)}); not written to {out}")
        checking.replace(out)
    finally:
        checking.unlink(missing_ok=True)
    return {"file": str(out), "model": str(model_path), "family": model.meta["family"], "opset": OPSET,
            "fp16": fp16, **check}
