"""One inference entry point for every r2l model file: read its kind, return the right ray renderer.

Model files are plain dicts read with ``weights_only=True`` (never code). Their ``kind`` says what they are:
``"nerf"`` or ``"grid"`` for a teacher (written by :func:`r2l.stages.teacher.finish`), ``"student"`` or
``"finetuned"`` for a student (:func:`r2l.stages.student._finish`). Both carry ``weights``, ``config``,
``step``, ``metrics`` and ``scene``: the scene's name, format and camera (``H, W, focal, near, far, ndc,
ndc_near, background, render_poses``; a student file of r2l 0.1 has no ``scene``).

- :func:`load_model`: the file as a renderer (:class:`~r2l.models.teacher.Teacher` or
  :class:`~r2l.models.students.Student`), both with ``render_rays(rays_o: (n, 3), rays_d: (n, 3)) -> (n, 3)``.
- :func:`model_camera`: a loaded renderer's stored scene camera, or None.
- :func:`describe_model`: what a file is (kind, network, scene, step, val PSNR, training time, device,
  precision), as JSON-ready values, without building the network.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from r2l.core.errors import DataError, R2LError
from r2l.models.students import FAMILIES, Student, family, load_student, stored_family, stored_network
from r2l.models.teacher import Teacher, load_teacher

TEACHER_KINDS = ("nerf", "grid")
STUDENT_KINDS = ("student", "finetuned")
CAMERA_KEYS = ("H", "W", "focal", "ndc")  # the least a stored camera needs to render


def read_model_file(path: str | Path) -> dict:
    """The dict stored in an r2l model file, read safely; DataError naming the file when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "model file not found" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  (a damaged file raises anything from the unpickler; never a traceback)
        why = "not written by torch.save" if isinstance(err, (KeyError, pickle.UnpicklingError)) else (
            str(err).splitlines() or [type(err).__name__])[0][:120]
        raise DataError(path, f"not a readable r2l model file ({why})") from err
    kind = ckpt.get("kind") if isinstance(ckpt, dict) else None
    if kind not in TEACHER_KINDS + STUDENT_KINDS:
        raise DataError(path, f"not an r2l model file (kind {kind!r}; expected one of "
                              f"{', '.join(TEACHER_KINDS + STUDENT_KINDS)})")
    return ckpt


def load_model(path: str | Path, device: str | torch.device | None = None,
               precision: str | None = None) -> Teacher | Student:
    """Any trained r2l model file as a ray renderer on ``device`` (None/"auto": CUDA when present).

    precision: the arithmetic of its renders (None: the one it was trained at, ``meta["precision"]``).
    """
    ckpt = read_model_file(path)  # read once; the loaders build from it
    kind = ckpt["kind"]
    try:
        if kind in TEACHER_KINDS:
            return load_teacher(path, device, precision, ckpt=ckpt)
        return load_student(path, device, precision=precision, ckpt=ckpt)
    except R2LError:
        raise
    except Exception as err:  # noqa: BLE001  (a file that unpickles but is damaged inside: one line, no traceback)
        raise DataError(path, f"not a usable r2l {kind} file ({type(err).__name__}: "
                              f"{(str(err).splitlines() or [''])[0][:120]})") from err


def _camera_of(scene) -> dict | None:
    """``scene`` (a stored scene dict) when it holds a usable camera, else None."""
    if not isinstance(scene, dict) or any(scene.get(k) is None for k in CAMERA_KEYS):
        return None
    return scene


def model_scene(model: Teacher | Student) -> dict | None:
    """What a loaded model records of the scene it was trained on (name, format, H, W, data_sha256, camera), or
    None (a student file of r2l 0.1); compare it with :meth:`r2l.data.scene.Scene.check_identity`."""
    scene = model.info if isinstance(model, Teacher) else model.meta.get("scene")
    return scene if isinstance(scene, dict) else None


def model_camera(model: Teacher | Student) -> dict | None:
    """The scene identity and camera stored with a loaded model: ``{"name", "format", "H", "W", "focal", "near",
    "far", "ndc", "ndc_near", "background", "render_poses"}``; None when the file stores none (r2l 0.1)."""
    return _camera_of(model.info if isinstance(model, Teacher) else model.meta.get("scene"))


def network_of(ckpt: dict) -> dict:
    """The network settings of a model file's config: the teacher kind's section, or the student network."""
    config = ckpt.get("config") or {}
    if ckpt["kind"] in TEACHER_KINDS:
        return dict(config.get(ckpt["kind"], {}))
    return dict(stored_network(config) or {})


def _scene_summary(scene) -> dict | None:
    """The stored scene without its camera path (the number of its poses instead)."""
    if not isinstance(scene, dict):
        return None
    out = {k: v for k, v in scene.items() if k != "render_poses"}
    out["render_poses"] = len(scene.get("render_poses") or [])
    return out


def describe_model(path: str | Path) -> dict:
    """What a model file is, as JSON-ready values (``None`` where the file does not record a value)."""
    ckpt = read_model_file(path)
    kind, metrics = ckpt["kind"], ckpt.get("metrics") or {}
    weights = ckpt.get("weights") or {}
    is_teacher = kind in TEACHER_KINDS
    tensors = {k: w for k, w in weights.items() if isinstance(w, torch.Tensor)}
    matrices = sum(int(w.numel()) for k, w in tensors.items() if k.endswith("weight") and w.dim() == 2)
    name = None if is_teacher else stored_family(ckpt.get("config") or {})
    lookups = 0.0 if is_teacher or name not in FAMILIES else family(name).lookup_flops(
        family(name).config_cls(**network_of(ckpt)))
    return {
        "file": str(path),
        "role": "teacher" if is_teacher else kind,
        "kind": kind,
        "network": network_of(ckpt),
        "stored_values": sum(int(w.numel()) for w in tensors.values()),  # parameters and buffers
        "family": name,  # the student family (None for a teacher)
        "mflops_per_ray": None if is_teacher else (2.0 * matrices + lookups) / 1e6,  # 2-D weights: linear layers
        "scene": _scene_summary(ckpt.get("scene")),
        "step": int(ckpt["step"]) if "step" in ckpt else None,
        "val_psnr": metrics.get("val_psnr"),
        "train_seconds": metrics.get("train_seconds"),
        "total_train_seconds": metrics.get("total_train_seconds"),
        "device": metrics.get("device"),
        "device_name": metrics.get("device_name"),
        "precision": (ckpt.get("config") or {}).get("precision"),
        "amp": (ckpt.get("config") or {}).get("amp"),  # r2l 0.1 files: bf16 autocast on CUDA when true
        "size_mb": Path(path).stat().st_size / 1e6,
    }
