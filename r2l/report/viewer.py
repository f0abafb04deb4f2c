"""The static viewer of an exported student: a folder any static file server can serve, no server-side compute.

:func:`build_viewer` writes ``results/{scene}/viewer/``: ``model.onnx`` (the export of :mod:`r2l.models.export`),
:data:`SCENE_FILE` (the camera the page needs, :func:`viewer_scene`), the page (:data:`PAGE_FILES`, from
``r2l/report/viewer_assets/``) and the onnxruntime-web files (:data:`RUNTIME_FILES`) that ``npm ci`` fetches, at
the version ``viewer_assets/package-lock.json`` pins, into a cache folder (:func:`ort_runtime`); the page loads
nothing from elsewhere. :func:`serve` serves a viewer folder on 127.0.0.1 (``r2l view``); :func:`screenshot`
takes a PNG of it with headless Chromium (for the report and the README).

Names it fixes: :data:`MODEL_FILE`, :data:`SCENE_FILE`, :data:`COARSE` (the downscale of frames drawn while the
camera moves), the keys of ``scene.json`` (:func:`viewer_scene`), and the page's test hook ``window.r2lViewer``
(``ready``, ``renderPose(c2w, coarse=false)``, ``scene``, ``last``; see ``viewer_assets/viewer.js``).
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np

from r2l.core.atomic import atomic_folder, atomic_write, atomic_write_text
from r2l.core.errors import R2LError

ASSETS = Path(__file__).with_name("viewer_assets")
PAGE_FILES = ("index.html", "viewer.js")
RUNTIME_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
MODEL_FILE = "model.onnx"
SCENE_FILE = "scene.json"
VIEWER_FORMAT = 1  # bump when scene.json's keys change meaning
COARSE = 4  # frames drawn while the camera moves are this many times smaller per side
CHUNK_RAYS = 16384  # rays per onnxruntime call (bounds the page's memory on large views)
MIME_TYPES = {".wasm": "application/wasm", ".mjs": "text/javascript", ".js": "text/javascript",
              ".json": "application/json", ".onnx": "application/octet-stream", ".html": "text/html"}
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
NPM_MISSING = ("building the viewer needs npm (Node.js >= 18) to fetch onnxruntime-web: install it "
               "(apt-get install npm, or https://nodejs.org) and rerun")


# ----------------------------------------------------------------------------- the camera the page needs


def axes_meeting_point(poses: np.ndarray) -> np.ndarray | None:
    """The point nearest (least squares) to the optical axes of ``poses: (n, 4, 4)`` camera-to-world; None when
    the axes are (nearly) parallel or fewer than two."""
    if len(poses) < 2:
        return None
    centres, forward = poses[:, :3, 3], -poses[:, :3, 2]
    forward = forward / np.linalg.norm(forward, axis=1, keepdims=True)
    proj = np.eye(3)[None] - forward[:, :, None] * forward[:, None, :]  # (n, 3, 3) projections off each axis
    A, b = proj.sum(0), np.einsum("nij,nj->i", proj, centres)
    if np.linalg.cond(A) > 1e6:
        return None
    return np.linalg.solve(A, b)


def _unit(v: np.ndarray) -> list[float]:
    return (v / max(float(np.linalg.norm(v)), 1e-12)).tolist()


def camera_controls(camera: dict, poses: np.ndarray) -> dict:
    """How dragging moves the camera: ``{"mode": "orbit", "target", "up", "radius", "radius_range"}`` for an
    object scene (the camera circles ``target``), or ``{"mode": "forward", "target", "up", "basis", "origin",
    "lo", "hi"}`` for a forward-facing one (it moves in the box ``[lo, hi]`` of the camera path's positions, in
    the path's mean frame ``basis`` (3 columns) about ``origin``, looking at ``target``). poses: (n, 4, 4)."""
    near, far = float(camera.get("near", 2.0)), float(camera.get("far", 6.0))
    if len(poses) == 0:
        poses = np.eye(4)[None]
    centres, up = poses[:, :3, 3], poses[:, :3, 1].mean(0)
    target = axes_meeting_point(poses)
    if target is None:
        depth = 0.5 * (near + far) if not camera.get("ndc") else 4.0 * float(camera.get("ndc_near", 1.0))
        target = centres.mean(0) - poses[:, :3, 2].mean(0) * depth
    if not camera.get("ndc"):
        radius = float(np.linalg.norm(centres - target, axis=1).mean())
        return {"mode": "orbit", "target": target.tolist(), "up": _unit(up), "radius": radius,
                "radius_range": [0.5 * radius, 2.0 * radius]}
    z = centres.mean(0) - target
    x = np.cross(up, z)
    basis = np.stack([_unit(x), _unit(np.cross(z, x)), _unit(z)], axis=1)  # columns: right, up, back
    local = (centres - centres.mean(0)) @ basis
    extent = max(float(np.ptp(local, axis=0).max()), 1e-3)
    lo = np.minimum(local.min(0), -0.05 * extent)  # every axis movable a little, even a flat path's
    hi = np.maximum(local.max(0), 0.05 * extent)
    return {"mode": "forward", "target": target.tolist(), "up": _unit(up), "basis": basis.tolist(),
            "origin": centres.mean(0).tolist(), "lo": lo.tolist(), "hi": hi.tolist()}


def viewer_scene(meta: dict) -> dict:
    """The content of ``scene.json`` from an exported file's metadata (:func:`r2l.models.export.read_metadata`).

    Keys: ``viewer_format``, ``name``, ``H``, ``W``, ``focal`` (the full-resolution view), ``near``, ``far``,
    ``ndc``, ``ndc_near`` (for reference: the graph applies them), ``background``, ``inputs``, ``output`` (the
    graph's names), ``render_poses`` (the camera path, 4x4 nested lists), ``test_pose`` (its first pose, else
    the identity), ``controls`` (:func:`camera_controls`), ``coarse`` and ``chunk``.
    """
    poses = np.asarray(meta.get("render_poses") or [], dtype=np.float64).reshape(-1, 4, 4)
    test_pose = poses[0] if len(poses) else np.eye(4)
    return {
        "viewer_format": VIEWER_FORMAT, "name": meta.get("scene_name") or "scene", "H": int(meta["H"]),
        "W": int(meta["W"]), "focal": float(meta["focal"]), "near": meta.get("near"), "far": meta.get("far"),
        "ndc": bool(meta.get("ndc")), "ndc_near": meta.get("ndc_near", 1.0), "background": meta.get("background"),
        "inputs": list(meta.get("inputs") or ("rays_o", "rays_d")), "output": (meta.get("outputs") or ["rgb"])[0],
        "render_poses": poses.tolist(), "test_pose": test_pose.tolist(), "controls": camera_controls(meta, poses),
        "coarse": COARSE, "chunk": CHUNK_RAYS,
    }


# ----------------------------------------------------------------------------- onnxruntime-web from npm


def default_cache() -> Path:
    """Where the npm runtime is cached unless told: ``$XDG_CACHE_HOME/r2l/npm`` (``~/.cache/r2l/npm``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "r2l" / "npm"


def _npm_ci(folder: Path) -> None:
    """``npm ci`` of the viewer's pinned package-lock in ``folder``; R2LError with npm's last line on failure."""
    npm = shutil.which("npm")
    if npm is None:
        raise R2LError(NPM_MISSING)
    for name in ("package.json", "package-lock.json"):
        shutil.copyfile(ASSETS / name, folder / name)
    done = subprocess.run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
                          cwd=folder, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise R2LError(f"npm ci of onnxruntime-web failed in {folder}: {last}")


def ort_runtime(cache: str | Path | None = None) -> Path:
    """The ``dist`` folder of onnxruntime-web at the pinned version, installed by ``npm ci`` into ``cache``
    (default :func:`default_cache`) once per package-lock; R2LError (one line) when npm is missing or fails."""
    cache = Path(cache) if cache is not None else default_cache()
    key = hashlib.sha256((ASSETS / "package-lock.json").read_bytes()).hexdigest()[:16]
    folder = cache / f"onnxruntime-web-{key}"
    dist = folder / "node_modules" / "onnxruntime-web" / "dist"
    if all((dist / name).is_file() for name in RUNTIME_FILES):
        return dist
    if shutil.which("npm") is None:
        raise R2LError(NPM_MISSING)
    cache.mkdir(parents=True, exist_ok=True)
    if folder.exists():
        shutil.rmtree(folder)  # an install that lacks files: redo it
    with tempfile.TemporaryDirectory(dir=cache, prefix=".npm-") as tmp:
        _npm_ci(Path(tmp))
        try:
            os.rename(tmp, folder)  # another build may have finished first: then keep its copy
        except OSError:
            if not dist.is_dir():
                raise
        Path(tmp).mkdir(exist_ok=True)  # (for TemporaryDirectory's clean-up)
    missing = [name for name in RUNTIME_FILES if not (dist / name).is_file()]
    if missing:
        raise R2LError(f"onnxruntime-web in {folder} lacks {', '.join(missing)} (a package layout this r2l does "
                       "not know)")
    return dist


# ----------------------------------------------------------------------------- building the folder


def export_for_viewer(model_path: str | Path, out: str | Path) -> Path:
    """Export the student file ``model_path`` to the ONNX file ``out`` (:func:`r2l.models.export.export_student`,
    float32 weights); returns ``out``."""
    from r2l.core.version import package_version
    from r2l.models.export import export_student
    from r2l.models.export_check import load_student

    return export_student(load_student(model_path), Path(model_path), out, package_version())


def build_viewer(onnx_path: str | Path, out_dir: str | Path, cache: str | Path | None = None) -> Path:
    """Write the viewer of the exported student ``onnx_path`` into ``out_dir`` (replaced whole); returns it.

    cache: where npm installs onnxruntime-web (:func:`ort_runtime`).
    """
    from r2l.models.export import read_metadata

    onnx_path, out_dir = Path(onnx_path), Path(out_dir)
    scene = viewer_scene(read_metadata(onnx_path))
    dist = ort_runtime(cache)

    def fill(folder: Path) -> None:
        for name in PAGE_FILES:
            shutil.copyfile(ASSETS / name, folder / name)
        for name in RUNTIME_FILES:
            shutil.copyfile(dist / name, folder / name)
        shutil.copyfile(onnx_path, folder / MODEL_FILE)
        atomic_write_text(folder / SCENE_FILE, json.dumps(scene) + "\n")

    if out_dir.exists():
        shutil.rmtree(out_dir)  # a viewer built before: replaced whole
    atomic_folder(out_dir, fill)
    return out_dir


def build_viewer_from_model(model_path: str | Path, out_dir: str | Path, cache: str | Path | None = None) -> Path:
    """Export the student file ``model_path`` and build its viewer in ``out_dir`` (:func:`build_viewer`)."""
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_for_viewer(model_path, Path(tmp) / MODEL_FILE)
        return build_viewer(onnx_path, out_dir, cache)


# ----------------------------------------------------------------------------- serving it


def viewer_folder(path: str | Path) -> Path:
    """The viewer folder ``path`` names: a viewer folder, a ``results/{scene}`` folder holding ``viewer/``, or a
    scene's name (``results/{name}/viewer`` under the working folder); R2LError saying what is missing."""
    path = Path(path)
    for folder in (path, path / "viewer", Path("results") / path / "viewer"):
        if (folder / "index.html").is_file() and (folder / SCENE_FILE).is_file():
            return folder
    raise R2LError(f"{path}: no viewer there (a viewer folder, results/{{scene}} or a scene name; build one with "
                   "snakemake results/SCENE/viewer --cores 1, or deploy: {viewer: true} in the config)")


class ViewerHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with the viewer's MIME types, no caching, and the cross-origin isolation headers that let
    onnxruntime-web use threads (a plain static server works too, on one thread)."""

    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, **MIME_TYPES}

    def end_headers(self) -> None:
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format: str, *args) -> None:  # noqa: A002  (the base class's name)
        """Quiet: a page load asks for a handful of files."""


def chromium_binary() -> str | None:
    """Debian's ``chromium`` (or another Chromium on the PATH), or None."""
    return next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)


def screenshot(folder: str | Path, out: str | Path, size: tuple[int, int] = (720, 680),
               chromium: str | None = None, budget_ms: int = 60000) -> Path:
    """A PNG of the viewer ``folder`` showing its test pose, taken by headless Chromium (its ``--screenshot``; no
    driver needed) while :func:`serve` serves the folder; returns ``out``. size: the window (width, height);
    budget_ms: the page's virtual time before the shot. R2LError (one line) when there is no Chromium or it
    fails."""
    chromium = chromium or chromium_binary()
    if chromium is None:
        raise R2LError("a screenshot of the viewer needs Chromium (apt-get install chromium)")
    out = Path(out).resolve()
    server, url = serve(folder)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            shot = Path(tmp) / "shot.png"
            cmd = [chromium, "--headless", "--disable-gpu", "--hide-scrollbars", f"--window-size={size[0]},{size[1]}",
                   f"--virtual-time-budget={budget_ms}", f"--screenshot={shot}", f"--user-data-dir={tmp}/profile",
                   *(["--no-sandbox"] if os.geteuid() == 0 else []), url]
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
            if done.returncode != 0 or not shot.is_file():
                raise R2LError(f"{chromium} took no screenshot of {folder} (exit status {done.returncode})")
            atomic_write(out, lambda tmp_out: shutil.copyfile(shot, tmp_out), suffix=".png")
    finally:
        server.shutdown()
        server.server_close()
    return out


def serve(folder: str | Path, port: int = 0) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Start serving ``folder`` on 127.0.0.1:``port`` (0: a free one) in a daemon thread; returns the server
    (``shutdown()`` stops it) and the page's URL."""
    handler = functools.partial(ViewerHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/index.html"
