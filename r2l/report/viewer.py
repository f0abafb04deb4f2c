"""The static viewer of an exported student: a folder any static file server can serve, no server-side compute.

:func:`build_viewer` writes ``results/{scene}/viewer/``: ``model.onnx`` (the export of :mod:`r2l.models.export`),
:data:`SCENE_FILE` (the camera the page needs, :func:`viewer_scene`), the page (:data:`PAGE_FILES`, from
``r2l/report/viewer_assets/``) and the onnxruntime-web files (:data:`RUNTIME_FILES`) that ``npm ci`` fetches, at
the version ``viewer_assets/package-lock.json`` pins, into a cache folder (:func:`ort_runtime`); the page loads
nothing from elsewhere. :func:`serve` serves a viewer folder on 127.0.0.1 (``r2l view``); :func:`screenshot`
takes a PNG of it with headless Chromium (for the report and the README), driven over its DevTools pipe
(:class:`HeadlessChromium`), which also times the page's frames (:func:`browser_frame_times`; beside torch and
onnxruntime in one run: :func:`frame_times`, ``python -m r2l.report.viewer MODEL.pt``).

Names it fixes: :data:`MODEL_FILE`, :data:`SCENE_FILE`, :data:`COARSE` (the downscale of frames drawn while the
camera moves), the keys of ``scene.json`` (:func:`viewer_scene`), and the page's test hook ``window.r2lViewer``
(``ready``, ``renderPose(c2w, coarse=false)``, ``scene``, ``last``, ``frames``; see ``viewer_assets/viewer.js``).
"""

from __future__ import annotations

import base64
import fcntl
import functools
import hashlib
import http.server
import itertools
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
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
# a trampoline that puts the DevTools pipe's ends on fds 3 and 4 and becomes Chromium (sh's redirections take
# single-digit fds only)
MOVE_TO_3_AND_4 = "import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); " \
                  "os.execvp(sys.argv[3], sys.argv[3:])"
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


class PlainHandler(ViewerHandler):
    """:class:`ViewerHandler` without the cross-origin isolation headers: a plain static file server."""

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        http.server.SimpleHTTPRequestHandler.end_headers(self)


def chromium_binary() -> str | None:
    """Debian's ``chromium`` (or another Chromium on the PATH), or None."""
    return next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)


class HeadlessChromium:
    """Headless Chromium driven over its DevTools pipe (``--remote-debugging-pipe``: it reads commands on its fd 3
    and writes replies on its fd 4, each JSON text ended by a NUL byte): no driver, no websocket, and the page runs
    in real time (under ``--screenshot``'s virtual time budget the page's clock stands still while it computes, so
    its frame time read 0). A context manager; :meth:`open_viewer`, :meth:`evaluate` and :meth:`send` drive it."""

    def __init__(self, chromium: str | None = None, timeout_s: float = 300.0):
        self.binary = chromium or chromium_binary()
        if self.binary is None:
            raise R2LError("driving the viewer in a browser needs Chromium (apt-get install chromium)")
        self.timeout_s, self.ids, self.buffer = timeout_s, itertools.count(1), b""

    def __enter__(self) -> HeadlessChromium:
        self.tmp = tempfile.TemporaryDirectory()
        commands, replies = os.pipe(), os.pipe()
        # the child's ends at fds >= 10, so that moving them to 3 and 4 cannot overwrite one with the other
        theirs = [fcntl.fcntl(commands[0], fcntl.F_DUPFD, 10), fcntl.fcntl(replies[1], fcntl.F_DUPFD, 10)]
        for fd in (commands[0], replies[1]):
            os.close(fd)
        args = [self.binary, "--headless", "--remote-debugging-pipe", "--disable-gpu", "--hide-scrollbars",
                "--no-first-run", f"--user-data-dir={self.tmp.name}/profile",
                *(["--no-sandbox"] if os.geteuid() == 0 else []), "about:blank"]
        self.log = open(Path(self.tmp.name) / "chromium.log", "wb")  # noqa: SIM115  (closed in __exit__)
        self.proc = subprocess.Popen([sys.executable, "-c", MOVE_TO_3_AND_4, *map(str, theirs), *args],
                                     pass_fds=theirs, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        for fd in theirs:
            os.close(fd)
        self.write, self.read = commands[1], replies[0]
        return self

    def __exit__(self, *exc) -> None:
        try:
            os.write(self.write, json.dumps({"id": next(self.ids), "method": "Browser.close"}).encode() + b"\0")
            self.proc.wait(timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        finally:
            for fd in (self.write, self.read):
                os.close(fd)
            self.log.close()
            self.tmp.cleanup()

    def _failed(self, what: str) -> R2LError:
        lines = (Path(self.tmp.name) / "chromium.log").read_text(errors="replace").strip().splitlines()
        said = next((line for line in reversed(lines) if "ERROR:" not in line), "") if lines else ""
        return R2LError(f"{self.binary}: {what}" + (f" ({said.strip()})" if said else ""))

    def _message(self, deadline: float) -> dict:
        """The next message (a reply or an event) from Chromium."""
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.read], [], [], left)[0]:
                raise self._failed(f"no reply within {self.timeout_s:.0f} s")
            chunk = os.read(self.read, 1 << 20)
            if not chunk:
                raise self._failed("closed its DevTools pipe (it exited, or cannot start here)")
            self.buffer += chunk
        message, _, self.buffer = self.buffer.partition(b"\0")
        return json.loads(message)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        """Send one DevTools command (to the page of ``session``, else to the browser) and return its result;
        R2LError with Chromium's message when it fails."""
        key = next(self.ids)
        message = {"id": key, "method": method, "params": params or {}, **({"sessionId": session} if session else {})}
        data = json.dumps(message).encode() + b"\0"
        try:
            while data:
                data = data[os.write(self.write, data):]
        except OSError as err:  # (a broken pipe: Chromium is gone)
            raise self._failed(f"took no command ({err.strerror}: it exited, or cannot start here)") from err
        deadline = time.monotonic() + self.timeout_s
        while (reply := self._message(deadline)).get("id") != key:
            pass  # an event, or the reply to another command
        if "error" in reply:
            raise R2LError(f"Chromium: {method} failed: {reply['error'].get('message')}")
        return reply["result"]

    def evaluate(self, session: str, expression: str):
        """The value of a JavaScript expression in the page (a promise is awaited); R2LError with the exception."""
        result = self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                "returnByValue": True}, session)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise R2LError(f"the viewer page failed: {details.get('exception', {}).get('description') or details}")
        return result["result"].get("value")

    def _poll(self, session: str, expression: str):
        """:meth:`evaluate`, or None while the page's context is being replaced by a navigation."""
        try:
            return self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True},
                             session)["result"].get("value")
        except R2LError:
            return None

    def open_viewer(self, url: str, size: tuple[int, int], budget_s: float = 60.0) -> str:
        """Open the viewer page at ``url`` in a new ``size`` (width, height) tab and wait until its first frame is
        drawn (at most ``budget_s``); returns the tab's session id. R2LError with the page's error."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.send("Emulation.setDeviceMetricsOverride", {"width": size[0], "height": size[1],
                                                         "deviceScaleFactor": 1, "mobile": False}, session)
        self.send("Page.navigate", {"url": url}, session)
        deadline = time.monotonic() + budget_s
        started = f"location.href === {json.dumps(url)} && 'ready' in (window.r2lViewer || {{}})"
        while not self._poll(session, started):
            if time.monotonic() > deadline:
                raise R2LError(f"the viewer at {url} did not start within {budget_s:.0f} s")
            time.sleep(0.05)
        self.evaluate(session, f"Promise.race([r2lViewer.ready, new Promise((_, no) => setTimeout(() => "
                               f"no(new Error('no frame within {budget_s:.0f} s')), {int(1000 * budget_s)}))])")
        return session


def screenshot(folder: str | Path, out: str | Path, size: tuple[int, int] = (720, 680),
               chromium: str | None = None, budget_ms: int = 60000) -> Path:
    """A PNG of the viewer ``folder`` at its test pose, taken by headless Chromium (:class:`HeadlessChromium`)
    while :func:`serve` serves the folder, after a second frame of the test pose was drawn and timed (the first
    one warms the runtime up), so the frame time on it is a real one; returns ``out``. size: the page (width,
    height); budget_ms: how long the page may take to draw its first frame. R2LError (one line) when there is
    no Chromium, it fails, or the page does."""
    out = Path(out).resolve()
    server, url = serve(folder)
    try:
        with HeadlessChromium(chromium) as browser:
            page = browser.open_viewer(url, size, budget_ms / 1000)
            frame = browser.evaluate(page, "r2lViewer.renderPose(r2lViewer.scene.test_pose)")
            if not frame or not frame["ms"] > 0:
                raise R2LError(f"the viewer at {url} drew no timed frame ({frame})")
            png = base64.b64decode(browser.send("Page.captureScreenshot", {"format": "png"}, page)["data"])
    finally:
        server.shutdown()
        server.server_close()
    return atomic_write(out, lambda tmp: tmp.write_bytes(png), suffix=".png")


def serve(folder: str | Path, port: int = 0, isolated: bool = True) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Start serving ``folder`` on 127.0.0.1:``port`` (0: a free one) in a daemon thread; returns the server
    (``shutdown()`` stops it) and the page's URL. isolated: send the cross-origin isolation headers (False: as a
    plain static server does, where onnxruntime-web runs on one thread)."""
    handler = functools.partial(ViewerHandler if isolated else PlainHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/index.html"


# ----------------------------------------------------------------------------- frame times in the browser

TIME_FRAMES = """(async (n) => {
  const v = r2lViewer, pose = v.scene.test_pose, out = {full: [], coarse: []};
  for (const coarse of [false, true]) {
    await v.renderPose(pose, coarse);  // a warm-up frame of each size
    for (let i = 0; i < n; i++) out[coarse ? 'coarse' : 'full'].push((await v.renderPose(pose, coarse)).ms);
  }
  return {...out, threads: v.last.threads, isolated: self.crossOriginIsolated, width: v.scene.W,
          height: v.scene.H, coarse_width: v.last.width, coarse_height: v.last.height};
})"""


def browser_frame_times(folder: str | Path, threads: int | None = None, frames: int = 10, isolated: bool = True,
                        chromium: str | None = None) -> dict:
    """The viewer ``folder``'s frame times in headless Chromium (:class:`HeadlessChromium`, served by
    :func:`serve`, ``isolated`` or not): ``frames`` full and coarse frames of its test pose, each after a warm-up
    frame, onnxruntime-web asked for ``threads`` (None: its default, half the cores, at most 4).

    Returns ``full_ms`` and ``coarse_ms`` (the medians), ``full``, ``coarse`` (every frame's ms), ``asked``
    (``threads``), ``threads`` (those it ran on: one without cross-origin isolation), ``isolated``, ``width``,
    ``height``, ``coarse_width``, ``coarse_height``.
    """
    server, url = serve(folder, isolated=isolated)
    try:
        with HeadlessChromium(chromium) as browser:
            page = browser.open_viewer(url + (f"?threads={int(threads)}" if threads else ""), (720, 680))
            times = browser.evaluate(page, f"{TIME_FRAMES}({int(frames)})")
    finally:
        server.shutdown()
        server.server_close()
    return {"full_ms": float(np.median(times["full"])), "coarse_ms": float(np.median(times["coarse"])),
            "asked": threads, **times}


def frame_times(model_path: str | Path, threads: tuple[int, ...] = (1, 2), frames: int = 10,
                cache: str | Path | None = None) -> dict:
    """One run's frame times of the student file ``model_path``, a view of its scene's size at the first pose of
    its camera path: torch and onnxruntime (native, CPU) on one thread
    (:func:`r2l.models.export_check.export_and_check`, medians of ``frames``), then the browser
    (:func:`browser_frame_times`) on each of ``threads``, and once asked for the last of them without cross-origin
    isolation (where it runs on one). Returns ``{"check": the export's numbers, "browser": [the browser's
    numbers, ...]}``."""
    from r2l.models.export_check import export_and_check

    with tempfile.TemporaryDirectory() as tmp:
        check = export_and_check(model_path, Path(tmp) / MODEL_FILE, threads=1, repeats=frames)
        folder = build_viewer(check["file"], Path(tmp) / "viewer", cache)
        browser = [browser_frame_times(folder, n, frames) for n in threads]
        browser.append(browser_frame_times(folder, threads[-1], frames, isolated=False))
    return {"check": check, "browser": browser}


def frame_times_lines(times: dict) -> list[str]:
    """:func:`frame_times`'s numbers as lines of text."""
    check = times["check"]
    lines = [f"{check['family']} student, {check['W']} x {check['H']} frames, medians of the frames timed:",
             f"  torch                             {check['torch_ms_per_frame']:8.1f} ms   (1 CPU thread)",
             f"  onnxruntime (native)              {check['onnx_ms_per_frame']:8.1f} ms   (1 CPU thread)"]
    for b in times["browser"]:
        where = "cross-origin isolated" if b["isolated"] else f"no cross-origin isolation, {b['asked']} asked"
        lines.append(f"  browser, onnxruntime-web (wasm)   {b['full_ms']:8.1f} ms   ({b['threads']} thread"
                     f"{'s' if b['threads'] != 1 else ''}, {where}; coarse {b['coarse_width']} x "
                     f"{b['coarse_height']}: {b['coarse_ms']:.1f} ms)")
    return lines


def main(argv: list[str] | None = None) -> int:
    """``python -m r2l.report.viewer MODEL.pt [--threads 1 2] [--frames 10] [--json]``: :func:`frame_times`."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m r2l.report.viewer", description=(
        "Frame times of a student in one run: torch, onnxruntime and the browser viewer (headless Chromium)."))
    parser.add_argument("model", help="a student model file (results/SCENE/finetuned/model.pt)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="browser thread counts to time")
    parser.add_argument("--frames", type=int, default=10, help="frames timed per runtime (after a warm-up)")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = parser.parse_args(argv)
    try:
        times = frame_times(args.model, tuple(args.threads), args.frames)
    except R2LError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(times, indent=2) if args.json else "\n".join(frame_times_lines(times)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
