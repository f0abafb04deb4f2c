"""The student families and a trained student as a ray renderer.

A student family is a network with its config dataclass and one small interface: ``n_points`` (points per ray
its training loop draws with ``space.draw_t``), ``space`` (its :class:`r2l.models.contracted.RaySpace`, from the
scene's camera: contracted in an unbounded scene), ``param_groups()`` (Adam groups, an optional
``lr_scale`` each), ``predicts_depth`` and ``forward(rays_o, rays_d, near, far, train, generator=None, t=None)``
-> rgb ``(n, 3)`` (with ``with_depth=True`` also the expected depth ``(n,)`` when it predicts one).

- :data:`FAMILIES`: ``"r2l"`` (the paper's MLP, :mod:`r2l.models.r2lnet`) and ``"grid"`` (the grid-feature light
  field, :mod:`r2l.models.gridstudent`), each a :class:`Family`.
- :class:`Student`: a trained student loaded for inference; :func:`load_student` reads one from its file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from r2l.core.errors import DataError, R2LError
from r2l.core.log import log
from r2l.core.runtime import check_precision, chunked, computing_in, pick_device
from r2l.models.contracted import RaySpace, ray_space
from r2l.models.flops import student_closed_form_flops
from r2l.models.gridstudent import (
    GridStudentConfig,
    GridStudentNet,
    grid_student_closed_form_flops,
    grid_student_lookup_flops,
)
from r2l.models.r2lnet import R2LNet, R2LNetConfig
from r2l.models.render import pose_rays


@dataclass(frozen=True)
class Family:
    """A student family: its name, the student config's field that holds its network config, the config class,
    how to build the network from that config, the grids' box ((2, 3) render space; unused by the MLP) and its
    :class:`~r2l.models.contracted.RaySpace`, the
    FLOPs per ray its feature lookups cost (beyond the linear layers a FLOP counter sees), its whole FLOPs per
    ray in closed form (linear layers and lookups, from the config alone), whether it needs the box, and the
    values that stored settings lacking a key meant (files written before the key existed)."""

    name: str
    config_key: str
    config_cls: type
    build: Callable[[object, torch.Tensor, RaySpace], nn.Module]
    lookup_flops: Callable[[object], float]
    closed_form_flops: Callable[[object], float]
    needs_box: bool  # whether its grids need the scene box (the training loop finds it only then)
    stored_defaults: dict = field(default_factory=dict)  # key -> value of files written before the key existed


FAMILIES = {
    "r2l": Family("r2l", "network", R2LNetConfig, lambda cfg, box, space: R2LNet(cfg, space), lambda cfg: 0.0,
                  student_closed_form_flops, False),
    "grid": Family("grid", "grid", GridStudentConfig, GridStudentNet, grid_student_lookup_flops,
                   grid_student_closed_form_flops, True, {"weights": "softmax", "span": "near_far"}),
}


def family(name: str) -> Family:
    """The student family called ``name``; R2LError listing the families otherwise."""
    if name not in FAMILIES:
        raise R2LError(f"unknown student family {name!r}; expected one of {', '.join(FAMILIES)}")
    return FAMILIES[name]


def family_of_config(cfg) -> Family:
    """The family whose network config class ``cfg`` is an instance of (R2LError for anything else)."""
    for fam in FAMILIES.values():
        if isinstance(cfg, fam.config_cls):
            return fam
    raise R2LError(f"not a student network config: {type(cfg).__name__}")


def stored_family(config: dict) -> str:
    """The family a stored student config (today's layout) names."""
    return config["family"]


def stored_network(config: dict) -> dict:
    """The network settings a stored student config (today's layout) holds for its family."""
    return config[family(stored_family(config)).config_key]


def early_student_config(config: dict) -> dict:
    """A stored student config of the early layout in today's: the r2l network under ``student`` and no
    ``family`` (the r2l family then), no ``precision`` (fp32; an ``amp`` flag is dropped). Today's configs
    come back unchanged (the format-0 model reader and the format-1 checkpoint reader use it)."""
    config = dict(config)
    network = config.pop("student", None)
    config.setdefault("family", "r2l")
    if network is not None:
        config.setdefault("network", network)
    config.pop("amp", None)
    config.setdefault("precision", "fp32")
    return config


def build_network(name: str, settings: dict, box: torch.Tensor | None = None,
                  space: RaySpace = RaySpace()) -> nn.Module:
    """The network of family ``name`` from its stored settings (a dict), grids over ``box`` (2, 3), points in
    ``space``."""
    fam = family(name)
    settings = {**fam.stored_defaults, **settings}
    return fam.build(fam.config_cls(**settings), torch.zeros(2, 3) if box is None else box, space)


COMPILE_MODES = ("off", "on", "auto")


def compile_errors() -> tuple[type[Exception], ...]:
    """What a failed ``torch.compile`` raises at its first call: Dynamo's and Inductor's errors (a missing or
    broken C++ compiler is an InductorError) and the C++ build error raised outside them. Imported here, not at
    the top: importing torch._dynamo and torch._inductor takes seconds."""
    import torch._dynamo.exc
    import torch._inductor.exc

    return (torch._dynamo.exc.TorchDynamoException, torch._inductor.exc.CppCompileError)


def compile_wanted(mode: str, device: torch.device) -> bool:
    """Whether ``mode`` ("off" | "on" | "auto") compiles the student on ``device``.

    "auto" compiles on CUDA only (where fusing the positional encoding saves its memory traffic; not measured
    yet). On CPU it does not pay (torch 2.13, 2-core AVX2 EPYC, eager and compiled renders interleaved in one
    process, docs/benchmarks.md): the 12x128 student's compiled render took 1.5x eager's time with one
    thread (median per-round ratio 0.66) and the same with two (0.98); the 88x256 one's the same (1.00); and
    the first call compiles for 4 to 24 s.
    """
    if mode not in COMPILE_MODES:
        raise R2LError(f"student compile must be one of {', '.join(COMPILE_MODES)}, got {mode!r}")
    return mode == "on" or (mode == "auto" and torch.device(device).type == "cuda")


class InferenceNet:
    """The student's deterministic forward for inference, eager or through ``torch.compile``.

    Call it as ``net(rays_o, rays_d, near, far)``: rays_o, rays_d (n, 3) float32 on the model's device ->
    rgb (n, 3). Compiling happens at the first call (one graph per distinct chunk size, no dynamic shapes);
    if it fails (no C++ compiler, an unsupported op), a warning is logged once and the eager model is used
    from then on. ``compiled``: whether calls go through the compiled graph.
    """

    def __init__(self, model: nn.Module, compile_model: bool):
        self.model = model
        self._compiled = None
        if compile_model and not _dynamo_supported():
            log.warning("torch.compile is not available here (torch %s); the student renders eagerly",
                        torch.__version__)
        elif compile_model:
            self._compiled = torch.compile(model, dynamic=False)  # lazy: nothing is compiled until the first call

    @property
    def compiled(self) -> bool:
        return self._compiled is not None

    def __call__(self, rays_o: torch.Tensor, rays_d: torch.Tensor, near: float, far: float) -> torch.Tensor:
        """rays_o, rays_d: (n, 3) render-space rays. Returns rgb: (n, 3) in (0, 1) (the network's dtype)."""
        if self._compiled is not None:
            try:
                return self._compiled(rays_o, rays_d, near, far, False)
            except compile_errors() as err:
                log.warning("torch.compile of the student failed (%s: %s); rendering eagerly", type(err).__name__,
                            (str(err).splitlines() or [""])[0][:200])
                self._compiled = None
        return self.model(rays_o, rays_d, near, far, False)


def _dynamo_supported() -> bool:
    """Whether torch.compile can run in this Python (imports torch._dynamo: seconds, only when compiling)."""
    import torch._dynamo

    return bool(torch._dynamo.is_dynamo_supported())


def compile_for_inference(model: nn.Module, mode: str = "auto") -> InferenceNet:
    """``model`` (in eval mode) as an :class:`InferenceNet`, compiled when :func:`compile_wanted` says so for
    the device its parameters are on."""
    device = next(model.parameters()).device
    return InferenceNet(model.eval(), compile_wanted(mode, device))


class Student:
    """A trained student of any family loaded for inference: a ray renderer.

    ``render_rays`` runs the deterministic (eval) network at ``precision`` (see
    :data:`r2l.core.runtime.PRECISIONS`; float32 inputs and encoding) on ``device`` in chunks, without
    gradients, and returns CPU float32 colours. ``near``/``far``: the render-space sampling range.
    ``compile``: "off" | "on" | "auto" (:func:`compile_for_inference`); change it later with
    :meth:`set_compile`.
    """

    def __init__(self, model: nn.Module, near: float, far: float, meta: dict, chunk: int = 32768,
                 precision: str = "fp32", compile: str = "off"):
        self.model = model.eval()
        self.precision = check_precision(precision)
        self.near, self.far = float(near), float(far)
        self.meta = meta
        self.chunk = chunk
        self.device = next(model.parameters()).device
        self.set_compile(compile)

    def set_compile(self, mode: str) -> bool:
        """Render through ``torch.compile`` or not (``mode`` as :func:`compile_for_inference`); returns whether
        it will try to compile."""
        self.net = compile_for_inference(self.model, mode)
        return self.net.compiled

    @torch.no_grad()
    def render_rays(self, rays_o: torch.Tensor, rays_d: torch.Tensor) -> torch.Tensor:
        """rays_o, rays_d: (n, 3) render-space rays (on any device; rays already on the model's device are not
        copied). Returns rgb: (n, 3) float32 on CPU in [0, 1]: the chunks stay on the device until one copy back.
        """
        if rays_o.shape[0] == 0:
            return torch.zeros(0, 3)

        def fn(o: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
            """One chunk: o, d (m, 3) -> rgb (m, 3) float32 on the model's device."""
            with computing_in(self.device, self.precision):
                return self.net(o, d, self.near, self.far).float()

        rays_o = rays_o.to(self.device, torch.float32, non_blocking=True)
        rays_d = rays_d.to(self.device, torch.float32, non_blocking=True)
        return chunked(fn, rays_o, rays_d, self.chunk).cpu()

    def render_image(self, scene, c2w, H: int, W: int, focal: float) -> torch.Tensor:
        """A full image (H, W, 3) float32 on CPU at pose ``c2w`` (4, 4), its rays built on the model's device.

        scene: anything with ``ndc`` and ``ndc_near`` (a :class:`~r2l.data.scene.Scene`), or None for the camera
        stored in the student file (``meta["scene"]``; R2LError for a format-0 file, which has none).
        """
        camera = scene if scene is not None else _stored_camera(self.meta)
        ndc, ndc_near = _camera_ndc(camera)
        rays_o, rays_d = pose_rays(c2w, H, W, focal, ndc, ndc_near, self.device)
        return self.render_rays(rays_o, rays_d).reshape(H, W, 3)


def _stored_camera(meta: dict) -> dict:
    """The scene camera a student file stores (``meta["scene"]``); R2LError when it has none (format 0)."""
    scene = meta.get("scene")
    if not isinstance(scene, dict) or scene.get("ndc") is None:
        raise R2LError("this student file stores no scene camera (an early file, format 0): pass the scene")
    return scene


def _camera_ndc(camera) -> tuple[bool, float | None]:
    """``(ndc, ndc_near)`` of a Scene (attributes) or a stored scene dict (keys)."""
    if isinstance(camera, dict):
        return bool(camera["ndc"]), camera.get("ndc_near")
    return bool(camera.ndc), getattr(camera, "ndc_near", None)


def load_student(path: str | Path, device: str | torch.device | None = None, chunk: int = 32768,
                 precision: str | None = None, ckpt: dict | None = None, compile: str = "off") -> Student:
    """Load a student or finetuned-student file written by :mod:`r2l.stages.student` (any format) as a renderer.

    device: None/"auto" picks CUDA when present. precision: of its renders (None: the one it was trained at).
    ckpt: the file's contents in today's layout when the caller has read them already
    (:func:`r2l.models.load.read_model_file`). compile: "off" | "on" | "auto" (:func:`compile_for_inference`).
    Raises DataError for a missing or malformed file.
    """
    path = Path(path)
    if ckpt is None:
        from r2l.models.load import STUDENT_KINDS, read_model_file  # (that module imports this one)

        ckpt = read_model_file(path, STUDENT_KINDS, "student model")
    try:
        config = ckpt["config"]
        name = stored_family(config)
        model = build_network(name, stored_network(config), space=ray_space(ckpt["scene"]))
        model.load_state_dict(ckpt["weights"])
    except (RuntimeError, ValueError, KeyError, TypeError, R2LError) as err:
        raise DataError(path, f"not a usable r2l student file ({err})") from err
    dev = pick_device(None if device is None else str(device))
    metrics = ckpt["metrics"]
    meta = {
        "kind": ckpt["kind"],
        "family": name,
        "lookup_flops_per_ray": float(family(name).lookup_flops(model.cfg)),
        "train_seconds": float(metrics.get("train_seconds", 0.0)),  # this stage only (finetune excludes the student's)
        "step": int(ckpt["step"]),
        "device": str(dev),
        "val_psnr": metrics.get("val_psnr"),
        "near": float(ckpt["near"]),
        "far": float(ckpt["far"]),
        "ndc": bool(ckpt["ndc"]),
        "metrics": metrics,
        "scene": ckpt["scene"],  # name, format and camera (H, W, focal, render_poses, ...); None in format 0
        "precision": config["precision"],
        "format_version": ckpt["format_version"],
    }
    return Student(model.to(dev), ckpt["near"], ckpt["far"], meta, chunk, precision or meta["precision"], compile)
