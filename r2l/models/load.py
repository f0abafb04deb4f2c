"""One inference entry point for every r2l model file: read its format and kind, return the right ray renderer.

Model files are plain dicts read with ``weights_only=True`` (never code). Their ``kind`` says what they are:
``"nerf"`` or ``"grid"`` for a teacher (written by :meth:`r2l.stages.teacher.TeacherTask.finish`),
``"student"`` or ``"finetuned"`` for a student (:meth:`r2l.stages.student.StudentTask.finish`). Their
``format_version`` says their layout (:data:`r2l.core.checkpoint.FORMAT_VERSION`); :data:`MODEL_READERS`
holds one reader per format, and each turns its files into today's layout: ``weights``, ``config``, ``kind``,
``step``, ``metrics``, ``format_version`` (the file's) and ``scene``, the scene's name, format and camera
(``H, W, focal, near, far, ndc, ndc_near, background, render_poses``; None in a format-0 student file); a
student also ``near``, ``far``, ``ndc`` and ``ndc_near`` (and ``optimizer`` when distilled). Teacher and student
``metrics`` share their names (:func:`r2l.stages.loop.common_metrics`): ``loss_history`` rows are ``[steps done,
loss, train PSNR]`` for every kind and ``final_step`` the steps trained; files before format 3 are read in these
names (a metric such a file lacks stays absent).

- :func:`read_model_file`: a model file in today's layout, whatever its format.
- :func:`load_model`: the file as a renderer (:class:`~r2l.models.teacher.Teacher` or
  :class:`~r2l.models.students.Student`), both with ``render_rays(rays_o: (n, 3), rays_d: (n, 3)) -> (n, 3)``.
- :func:`model_camera`: a loaded renderer's stored scene camera, or None.
- :func:`describe_model`: what a file is (kind, network, scene, step, val PSNR, training time, device,
  precision, format), as JSON-ready values, without building the network.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from r2l.core.checkpoint import Reader, read_versioned
from r2l.core.errors import DataError, R2LError
from r2l.core.metrics import psnr_from_mse
from r2l.models.students import (
    FAMILIES,
    Student,
    early_student_config,
    family,
    load_student,
    stored_family,
    stored_network,
)
from r2l.models.teacher import Teacher, early_teacher_config, load_teacher

TEACHER_KINDS = ("nerf", "grid")
STUDENT_KINDS = ("student", "finetuned")
CAMERA_KEYS = ("H", "W", "focal", "ndc")  # the least a stored camera needs to render
TEACHER_KEYS = ("weights", "config", "kind", "scene", "step", "metrics")  # a model file's, in today's layout
STUDENT_KEYS = TEACHER_KEYS + ("near", "far", "ndc", "ndc_near")


def unversioned_format(ckpt: dict) -> int:
    """The format of a model file without ``format_version``: 0 (early files) or 1 (today's layout).

    Early files record no training ``precision`` in their config (or an ``amp`` flag instead), and a student of
    them has no config ``family`` or no ``scene``. The one place where a file's keys tell its format: each reader
    reads one format.
    """
    config = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {}
    early_student = ckpt.get("kind") in STUDENT_KINDS and (
        "family" not in config or not isinstance(ckpt.get("scene"), dict))
    return 0 if "amp" in config or "precision" not in config or early_student else 1


def _today(ckpt: dict, path: Path, version: int) -> dict:
    """``ckpt`` (today's layout) with ``format_version`` = ``version``; DataError naming the keys it lacks."""
    keys = STUDENT_KEYS if ckpt["kind"] in STUDENT_KINDS else TEACHER_KEYS
    missing = [k for k in keys if k not in ckpt]
    if missing:
        raise DataError(path, f"not a usable r2l {ckpt['kind']} file of format {version} "
                              f"(missing {', '.join(missing)})")
    return {**ckpt, "format_version": version}


def _metrics_before_v3(kind: str, metrics: dict) -> dict:
    """The metrics of a file of format 0 to 2 in today's names: a teacher's ``steps`` as ``final_step`` and its loss
    rows ``[step index, loss, train PSNR]`` as ``[steps done, loss, train PSNR]``; a student's rows ``[steps done,
    loss]`` with the train PSNR of their loss (the colour MSE)."""
    metrics = dict(metrics or {})
    rows = metrics.get("loss_history")
    if kind in TEACHER_KINDS:
        if "steps" in metrics:
            metrics["final_step"] = metrics.pop("steps")
        if rows is not None:
            metrics["loss_history"] = [[index + 1, loss, psnr] for index, loss, psnr in rows]
    elif rows is not None:
        metrics["loss_history"] = [[step, loss, psnr_from_mse(loss)] for step, loss in rows]
    return metrics


def _read_v0(ckpt: dict, path: Path) -> dict:
    """Format 0, early files without ``format_version``: no training ``precision`` (or config ``amp``); a
    student's r2l network under config ``student`` (no ``family``), no ``scene`` (None here), maybe no
    ``metrics`` or ``ndc_near`` (1.0, the view stores' default). Format 2's metrics (:func:`_metrics_before_v3`)."""
    if ckpt["kind"] in STUDENT_KINDS:
        early = {"metrics": {}, "scene": None, "ndc_near": 1.0, **ckpt,
                 "config": early_student_config(ckpt["config"])}
        early["scene"] = early["scene"] if isinstance(early["scene"], dict) else None
    else:
        early = {**ckpt, "config": early_teacher_config(ckpt["config"])}
    return _read_v2(early, path, 0)


def _read_v1(ckpt: dict, path: Path) -> dict:
    """Format 1, the files written before ``format_version`` existed: format 2's layout."""
    return _read_v2(ckpt, path, 1)


def _read_v2(ckpt: dict, path: Path, version: int = 2) -> dict:
    """Format 2: today's keys, the metrics named per kind (:func:`_metrics_before_v3`)."""
    today = _today(ckpt, path, version)
    return {**today, "metrics": _metrics_before_v3(today["kind"], today["metrics"])}


def _read_v3(ckpt: dict, path: Path) -> dict:
    """Format 3: today's layout."""
    return _today(ckpt, path, 3)


MODEL_READERS: dict[int, Reader] = {0: _read_v0, 1: _read_v1, 2: _read_v2, 3: _read_v3}


def _torch_load(path: Path, what: str) -> object:
    """What ``torch.load`` (``weights_only=True``) reads from ``path``; DataError naming it when it cannot."""
    if not path.is_file():
        raise DataError(path, "model file not found" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  (a damaged file raises anything from the unpickler; never a traceback)
        why = "not written by torch.save" if isinstance(err, (KeyError, pickle.UnpicklingError)) else (
            str(err).splitlines() or [type(err).__name__])[0][:120]
        raise DataError(path, f"unreadable {what} file ({why})") from err


def read_model_file(path: str | Path, kinds: tuple[str, ...] = TEACHER_KINDS + STUDENT_KINDS,
                    what: str = "r2l model") -> dict:
    """The model file at ``path`` (one of ``kinds``) in today's layout, read by the reader of its format.

    DataError naming the file when it is missing, unreadable, a training checkpoint, of another kind (``what``:
    the kinds in words), of a format newer than this r2l's or lacks what its format holds.
    """
    path = Path(path)
    ckpt = _torch_load(path, what)
    if isinstance(ckpt, dict) and {"stage", "loop"} <= ckpt.keys():  # (a checkpoint records the kind it trains)
        raise DataError(path, f"a training checkpoint (resume point) of the {ckpt['stage']} stage, not a model file")
    kind = ckpt.get("kind") if isinstance(ckpt, dict) else None
    if kind not in kinds:
        article = "an" if what.startswith(("r2l", "a", "e", "i", "o", "u")) else "a"
        raise DataError(path, f"not {article} {what} file (kind {kind!r}; expected one of {', '.join(kinds)})")
    try:
        return read_versioned(ckpt, path, MODEL_READERS, unversioned_format(ckpt))
    except (AttributeError, KeyError, TypeError, ValueError) as err:  # a file that unpickles but is damaged inside
        raise DataError(path, f"not a usable {what} file ({type(err).__name__}: "
                              f"{(str(err).splitlines() or [''])[0][:120]})") from err


def load_model(path: str | Path, device: str | torch.device | None = None,
               precision: str | None = None) -> Teacher | Student:
    """Any trained r2l model file as a ray renderer on ``device`` (None/"auto": CUDA when present).

    precision: the arithmetic of its renders (None: the one it was trained at, ``meta["precision"]``).
    """
    ckpt = read_model_file(path)  # read once, in today's layout; the loaders build from it
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
    None (a format-0 student file); compare it with :meth:`r2l.data.scene.Scene.check_identity`."""
    scene = model.info if isinstance(model, Teacher) else model.meta.get("scene")
    return scene if isinstance(scene, dict) else None


def model_camera(model: Teacher | Student) -> dict | None:
    """The scene identity and camera stored with a loaded model: ``{"name", "format", "H", "W", "focal", "near",
    "far", "ndc", "ndc_near", "background", "render_poses"}``; None when the file stores none (format 0)."""
    return _camera_of(model.info if isinstance(model, Teacher) else model.meta.get("scene"))


def network_of(ckpt: dict) -> dict:
    """The network settings of a model file's config (today's layout): the teacher kind's section, or the student
    network."""
    config = ckpt["config"]
    if ckpt["kind"] in TEACHER_KINDS:
        return dict(config.get(ckpt["kind"], {}))
    return dict(stored_network(config))


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
    kind, metrics, weights = ckpt["kind"], ckpt["metrics"] or {}, ckpt["weights"] or {}
    is_teacher = kind in TEACHER_KINDS
    tensors = {k: w for k, w in weights.items() if isinstance(w, torch.Tensor)}
    matrices = sum(int(w.numel()) for k, w in tensors.items() if k.endswith("weight") and w.dim() == 2)
    name = None if is_teacher else stored_family(ckpt["config"])
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
        "scene": _scene_summary(ckpt["scene"]),
        "step": int(ckpt["step"]),
        "val_psnr": metrics.get("val_psnr"),
        "train_seconds": metrics.get("train_seconds"),
        "total_train_seconds": metrics.get("total_train_seconds"),
        "device": metrics.get("device"),
        "device_name": metrics.get("device_name"),
        "precision": ckpt["config"].get("precision"),
        "format_version": ckpt["format_version"],  # the file's layout (r2l.core.checkpoint.FORMAT_VERSION)
        "size_mb": Path(path).stat().st_size / 1e6,
    }
