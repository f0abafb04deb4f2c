"""The R2L student: a deep residual MLP "neural light field" that renders a ray in one network pass.

A ray is represented by ``n_points`` points between ``near`` and ``far`` in render space (NDC for
forward-facing scenes, where near = 0 and far = 1; the authors sampled world-space rays there).
Their xyz coordinates are concatenated (48 values), positionally encoded (``[x, sin(2^k x),
cos(2^k x)]``, k < 10, no pi factor: 48 x 21 = 1008 inputs) and mapped to a colour; no view direction
goes in.

Sampling convention (the teacher's, :func:`r2l.models.render.stratified_t`, and the authors' code): the
deterministic distances are ``linspace(near, far, n_points)``, both ends included; while training
each point is drawn uniformly, independently per ray and per point, from its interval between the
midpoints of its neighbours (the first from ``[near, mid_0]``, the last from ``[mid_{n-2}, far]``).
Rendering uses the deterministic points, so a trained student is a deterministic function of the ray.

Network (paper preset): ``Linear(1008, 256) + ReLU``; 43 residual blocks
``x + Linear(256, 256)(ReLU(Linear(256, 256)(x)))`` without an activation after the sum; a skip around
the whole body (body output + its input); ``Linear(256, 3) + sigmoid``. 88 linear layers,
5,917,187 parameters, 11.79 MFLOPs per ray (2 x multiply-adds of the linear weights; see
:mod:`r2l.models.flops`).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from r2l.core.checkpoint import load_checkpoint
from r2l.core.errors import DataError, R2LError
from r2l.core.log import log
from r2l.core.runtime import check_precision, chunked, computing_in, pick_device
from r2l.models.nerf import posenc, posenc_dim
from r2l.models.render import pose_rays, stratified_t


@dataclass
class R2LNetConfig:
    """R2L student network; defaults are the paper's (nerf_v3.2 in the authors' code)."""

    n_points: int = 16  # points sampled along each ray (xyz concatenated -> 3 * n_points inputs)
    n_freqs: int = 10  # positional-encoding frequencies 2^0 .. 2^(n_freqs-1) per coordinate
    depth: int = 88  # number of linear layers: head + 2 per residual block + tail
    width: int = 256  # hidden width of every layer

    def __post_init__(self):
        if self.depth < 4 or self.depth % 2:
            raise R2LError(f"student depth must be even and >= 4 (head + 2 per block + tail), got {self.depth}")
        if self.n_points < 2 or self.n_freqs < 0 or self.width < 1:
            raise R2LError(
                f"student needs n_points >= 2, n_freqs >= 0, width >= 1 (got {self.n_points}, {self.n_freqs}, {self.width})"
            )

    @property
    def n_blocks(self) -> int:
        """Residual blocks: (depth - 2) // 2 (43 for the paper's 88 layers)."""
        return (self.depth - 2) // 2

    @property
    def in_dim(self) -> int:
        """Network input width: 3 * n_points * (1 + 2 * n_freqs) (1008 for the paper)."""
        return posenc_dim(3 * self.n_points, self.n_freqs)


class ResBlock(nn.Module):
    """``x + Linear(ReLU(Linear(x)))``: two linear layers, no activation after the sum."""

    def __init__(self, width: int):
        super().__init__()
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (n, width) -> (n, width)."""
        return x + self.fc2(torch.relu(self.fc1(x)))


class R2LNet(nn.Module):
    """The R2L residual MLP on the encoded points of a ray (see the module docstring)."""

    def __init__(self, cfg: R2LNetConfig):
        super().__init__()
        self.cfg = cfg
        self.head = nn.Linear(cfg.in_dim, cfg.width)
        self.blocks = nn.Sequential(*[ResBlock(cfg.width) for _ in range(cfg.n_blocks)])
        self.tail = nn.Linear(cfg.width, 3)

    def encode(self, rays_o: torch.Tensor, rays_d: torch.Tensor, near: float, far: float, train: bool,
               generator: torch.Generator | None = None, t: torch.Tensor | None = None) -> torch.Tensor:
        """rays_o, rays_d: (n, 3) render-space rays. Returns the network input (n, in_dim).

        t: (n, n_points) distances of the points along the rays, used instead of drawing them (``train`` and
        ``generator`` are then ignored): a loop that splits one batch over processes passes each its rows of the
        draw :func:`~r2l.models.render.stratified_t` made for the whole batch.
        """
        if t is None:
            t = stratified_t(near, far, rays_o.shape[0], self.cfg.n_points, train, generator, rays_o.device)
        pts = rays_o[:, None, :] + t[..., None] * rays_d[:, None, :]  # (n, n_points, 3)
        return posenc(pts.reshape(rays_o.shape[0], -1), self.cfg.n_freqs)

    def mlp(self, x: torch.Tensor) -> torch.Tensor:
        """x: (n, in_dim) encoded points. Returns rgb: (n, 3) in (0, 1)."""
        h = torch.relu(self.head(x))
        h = h + self.blocks(h)  # the global skip around the residual body
        return torch.sigmoid(self.tail(h))

    def forward(self, rays_o: torch.Tensor, rays_d: torch.Tensor, near: float, far: float, train: bool,
                generator: torch.Generator | None = None, t: torch.Tensor | None = None) -> torch.Tensor:
        """rays_o, rays_d: (n, 3) render-space rays; jittered points if ``train``; t: (n, n_points) given
        distances instead (see :meth:`encode`). Returns rgb: (n, 3)."""
        return self.mlp(self.encode(rays_o.float(), rays_d.float(), near, far, train, generator, t))


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
    process, benchmarks/RESULTS.md): the 12x128 student's compiled render took 1.5x eager's time with one
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

    def __init__(self, model: R2LNet, compile_model: bool):
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


def compile_for_inference(model: R2LNet, mode: str = "auto") -> InferenceNet:
    """``model`` (in eval mode) as an :class:`InferenceNet`, compiled when :func:`compile_wanted` says so for
    the device its parameters are on."""
    device = next(model.parameters()).device
    return InferenceNet(model.eval(), compile_wanted(mode, device))


class Student:
    """A trained student loaded for inference: a "ray renderer" (see the BRIEF).

    ``render_rays`` runs the deterministic (eval) network at ``precision`` (see
    :data:`r2l.core.runtime.PRECISIONS`; float32 inputs and encoding) on ``device`` in chunks, without
    gradients, and returns CPU float32 colours. ``near``/``far``: the render-space sampling range.
    ``compile``: "off" | "on" | "auto" (:func:`compile_for_inference`); change it later with
    :meth:`set_compile`.
    """

    def __init__(self, model: R2LNet, near: float, far: float, meta: dict, chunk: int = 32768,
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
        stored in the student file (``meta["scene"]``; R2LError for a file of r2l 0.1, which has none).
        """
        camera = scene if scene is not None else _stored_camera(self.meta)
        ndc, ndc_near = _camera_ndc(camera)
        rays_o, rays_d = pose_rays(c2w, H, W, focal, ndc, ndc_near, self.device)
        return self.render_rays(rays_o, rays_d).reshape(H, W, 3)


def _stored_camera(meta: dict) -> dict:
    """The scene camera a student file stores (``meta["scene"]``); R2LError when it has none (r2l 0.1)."""
    scene = meta.get("scene")
    if not isinstance(scene, dict) or scene.get("ndc") is None:
        raise R2LError("this student file stores no scene camera (written before r2l 0.2): pass the scene")
    return scene


def _camera_ndc(camera) -> tuple[bool, float | None]:
    """``(ndc, ndc_near)`` of a Scene (attributes) or a stored scene dict (keys)."""
    if isinstance(camera, dict):
        return bool(camera["ndc"]), camera.get("ndc_near")
    return bool(camera.ndc), getattr(camera, "ndc_near", None)


def load_student(path: str | Path, device: str | torch.device | None = None, chunk: int = 32768,
                 precision: str | None = None, ckpt: dict | None = None, compile: str = "off") -> Student:
    """Load a student or finetuned-student file written by :mod:`r2l.stages.student` as a ray renderer.

    device: None/"auto" picks CUDA when present. precision: of its renders (None: the one it was trained at;
    fp32 for files of r2l 0.1). ckpt: the file's contents when the caller has read them already. compile: "off"
    | "on" | "auto" (:func:`compile_for_inference`). Raises DataError for a missing or malformed file.
    """
    path = Path(path)
    if ckpt is None and not path.is_file():
        raise DataError(path, "student model file not found")
    try:
        ckpt = load_checkpoint(path) if ckpt is None else ckpt
        config = ckpt["config"]
        cfg = R2LNetConfig(**config.get("network", config.get("student", {})))  # "student": files before 0.2
        weights, kind = ckpt["weights"], ckpt["kind"]
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, TypeError, pickle.UnpicklingError) as err:
        raise DataError(path, f"not a readable r2l student file ({err})") from err
    dev = pick_device(None if device is None else str(device))
    model = R2LNet(cfg)
    model.load_state_dict(weights)
    metrics = ckpt.get("metrics", {})
    meta = {
        "kind": kind,
        "train_seconds": float(metrics.get("train_seconds", 0.0)),  # this stage only (finetune excludes the student's)
        "step": int(ckpt["step"]),
        "device": str(dev),
        "val_psnr": metrics.get("val_psnr"),
        "near": float(ckpt["near"]),
        "far": float(ckpt["far"]),
        "ndc": bool(ckpt["ndc"]),
        "metrics": metrics,
        "scene": ckpt.get("scene"),  # name, format and camera (H, W, focal, render_poses, ...); None before 0.2
        "precision": config.get("precision", "fp32"),
    }
    return Student(model.to(dev), ckpt["near"], ckpt["far"], meta, chunk, precision or meta["precision"], compile)
