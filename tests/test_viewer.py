"""The static viewer (issue 20, part 2): scene.json, the folder it builds, ``r2l view``'s server, and the page in
a real browser.

The browser test builds the viewer of tiny r2l students of an object scene and of a forward-facing one (and, marked
slow because torch's exporter takes about a minute over its gathers, of a tiny grid student), serves each
with ``r2l view``'s server, opens it in headless Chromium (Debian's ``chromium``, driven by Playwright without a
downloaded browser), renders the scene's test pose, compares the canvas with torch's render of that pose (PSNR
>= 40 dB), drags the camera and checks that the view changed, and takes the report's screenshot (a timed frame
on it). The same on real lego (../shared/data/nerf_synthetic/lego_100, skipped where it is absent): an r2l
student of lego's cameras trained a few dozen steps on its pixels, rendered at one of lego's own test poses.
Without chromium, Playwright or npm it is skipped with the reason, unless CI is set: then it fails. `make test`
fetches onnxruntime-web (npm ci) into the cache before the tests run, and .ci/run installs chromium.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from helpers import object_and_forward_scenes, psnr_db, run_r2l, save_student_file, student_net

from r2l.core.errors import R2LError
from r2l.data.registry import load_scene
from r2l.models.gridstudent import GridStudentNet
from r2l.models.load import load_model
from r2l.models.r2lnet import R2LNetConfig
from r2l.models.render import pose_rays
from r2l.report import viewer

MIN_PSNR = 40.0


def contrasty(net: torch.nn.Module) -> None:
    """Give a random network's views some contrast (a random start is nearly flat): a grid student a ball of
    radius 1 (its geometry grid) painted with strong random planes; any network a stronger output layer."""
    with torch.no_grad():
        if isinstance(net, GridStudentNet):
            G = net.geometry.shape[-1]
            axis = torch.linspace(-1.5, 1.5, G)
            z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")
            net.geometry.copy_(8.0 * (1.0 - (x * x + y * y + z * z).sqrt())[None, None])
            for planes in net.planes:
                planes.uniform_(0.0, 2.0)
        last = [m for m in net.modules() if isinstance(m, torch.nn.Linear)][-1]
        last.weight.mul_(6.0)


def student_file(path: Path, scene, family: str) -> Path:
    """A random student file of ``family`` (``grid``: over the +-1.5 box; ``r2l``) for ``scene``, made contrasty."""
    torch.manual_seed(0)
    net, config = student_net(family)
    contrasty(net)
    return save_student_file(path, net, config, scene, step=40)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> dict:
    return object_and_forward_scenes(tmp_path_factory.mktemp("scenes"), 24)


@pytest.fixture(scope="module")
def students(scenes, tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("students")
    return {"orbit": student_file(d / "orbit.pt", scenes["orbit"], "r2l"),
            "ff": student_file(d / "ff.pt", scenes["ff"], "r2l"),
            "grid": student_file(d / "grid.pt", scenes["orbit"], "grid")}


# ----------------------------------------------------------------------------- without a browser


def test_scene_json_orbit_and_forward(scenes):
    """An orbit circles the point the path's cameras look at; a forward-facing box holds the path's positions."""
    orbit = viewer.viewer_scene({**scenes["orbit"].camera(), "scene_name": "builtin"})
    c = orbit["controls"]
    poses = np.asarray(orbit["render_poses"])
    assert orbit["name"] == "builtin" and orbit["test_pose"] == orbit["render_poses"][0] and c["mode"] == "orbit"
    distances = np.linalg.norm(poses[:, :3, 3] - np.asarray(c["target"]), axis=1)
    assert np.allclose(distances, c["radius"], rtol=1e-3) and np.linalg.norm(c["target"]) < 1e-3
    assert orbit["inputs"] == ["rays_o", "rays_d"] and orbit["output"] == "rgb"
    ff = viewer.viewer_scene({**scenes["ff"].camera(), "scene_name": "builtin_ff"})
    c = ff["controls"]
    assert ff["ndc"] and c["mode"] == "forward"
    basis = np.asarray(c["basis"])
    assert np.allclose(basis.T @ basis, np.eye(3), atol=1e-6)
    local = (np.asarray(ff["render_poses"])[:, :3, 3] - np.asarray(c["origin"])) @ basis
    assert (local >= np.asarray(c["lo"]) - 1e-9).all() and (local <= np.asarray(c["hi"]) + 1e-9).all()


def test_frame_time_lines_say_each_runtime_and_its_threads():
    check = {"family": "grid", "W": 64, "H": 48, "torch_ms_per_frame": 41.04, "onnx_ms_per_frame": 61.31}
    page = {"full_ms": 212.5, "coarse_ms": 9.74, "coarse_width": 16, "coarse_height": 12}
    browser = [{**page, "threads": 2, "asked": 2, "isolated": True},
               {**page, "threads": 1, "asked": 2, "isolated": False}]
    lines = viewer.frame_times_lines({"check": check, "browser": browser})
    assert lines[0] == "grid student, 64 x 48 frames, medians of the frames timed:"
    assert lines[1].split() == ["torch", "41.0", "ms", "(1", "CPU", "thread)"]
    assert lines[2].split() == ["onnxruntime", "(native)", "61.3", "ms", "(1", "CPU", "thread)"]
    assert lines[3].endswith("212.5 ms   (2 threads, cross-origin isolated; coarse 16 x 12: 9.7 ms)")
    assert lines[4].endswith("(1 thread, no cross-origin isolation, 2 asked; coarse 16 x 12: 9.7 ms)")


def test_npm_missing_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(R2LError, match="needs npm") as err:
        viewer.ort_runtime(tmp_path / "cache")
    assert "\n" not in str(err.value)


def test_viewer_folder_and_mime_types(tmp_path, monkeypatch):
    folder = tmp_path / "results" / "lego" / "viewer"
    folder.mkdir(parents=True)
    for name, data in {"index.html": b"<html></html>", "scene.json": b"{}", "x.wasm": b"\0asm", "x.mjs": b""}.items():
        (folder / name).write_bytes(data)
    monkeypatch.chdir(tmp_path)
    assert viewer.viewer_folder(folder) == folder and viewer.viewer_folder(folder.parent) == folder.parent / "viewer"
    assert viewer.viewer_folder("lego") == Path("results/lego/viewer")
    with pytest.raises(R2LError, match="no viewer there"):
        viewer.viewer_folder(tmp_path)
    server, url = viewer.serve(folder)
    try:
        base = url.rsplit("/", 1)[0]
        for name, mime in {"x.wasm": "application/wasm", "x.mjs": "text/javascript", "index.html": "text/html"}.items():
            with urllib.request.urlopen(f"{base}/{name}") as reply:
                assert reply.headers["Content-Type"].split(";")[0] == mime
                assert reply.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
    finally:
        server.shutdown()
        server.server_close()


def test_r2l_view_serves_until_interrupted(tmp_path):
    folder = tmp_path / "results" / "lego" / "viewer"
    folder.mkdir(parents=True)
    (folder / "index.html").write_text("<html>lego</html>")
    (folder / "scene.json").write_text("{}")
    # Ctrl-C as in a terminal: a child inherits an ignored SIGINT (other tests' tools may leave it so in pytest)
    proc = subprocess.Popen([sys.executable, "-m", "r2l", "view", str(folder.parent)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        line = proc.stdout.readline()
        url = line.split(" at ")[1].split()[0]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/index.html")
        with urllib.request.urlopen(url) as reply:
            assert reply.read() == b"<html>lego</html>"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
    finally:
        proc.kill()
    helped = run_r2l("view", "--help", timeout=60)
    assert helped.returncode == 0 and helped.stdout.startswith("usage: r2l view")
    missing = run_r2l("view", "nowhere", cwd=tmp_path, timeout=60)
    assert missing.returncode == 1 and "no viewer there" in missing.stderr and len(missing.stderr.splitlines()) == 1


# ----------------------------------------------------------------------------- in headless Chromium


def _missing(what: str) -> None:
    """Skip (fail on CI) for a missing tool."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} (CI is set: the browser test must run)")
    pytest.skip(what)


def chromium() -> str:
    """Debian's chromium (.ci/run installs it on CI; the test itself downloads nothing)."""
    found = viewer.chromium_binary()
    if found is None:
        _missing("no chromium binary (apt-get install chromium; .ci/run does on CI)")
    return found


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium under Playwright (Debian's binary: Playwright downloads no browser)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Playwright is not installed (pip install -e '.[test]')")
    if shutil.which("npm") is None:
        _missing("npm is not installed (make test fetches onnxruntime-web with it before the tests)")
    executable = chromium()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()


def torch_view(model_path: Path, scene_json: dict, pose) -> np.ndarray:
    """torch's render (H, W, 3) in [0, 1] of ``pose`` (4x4) at the viewer's size."""
    student = load_model(model_path, "cpu")
    s = scene_json
    rays_o, rays_d = pose_rays(np.asarray(pose), s["H"], s["W"], s["focal"], s["ndc"], s["ndc_near"])
    return student.render_rays(rays_o, rays_d).reshape(s["H"], s["W"], 3).numpy()


def canvas_pixels(page) -> np.ndarray:
    """The canvas's pixels, (H, W, 3) uint8."""
    data = page.evaluate("""() => { const c = document.getElementById('view');
        const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        return {w: c.width, h: c.height, px: Array.from(px)}; }""")
    return np.asarray(data["px"], dtype=np.uint8).reshape(data["h"], data["w"], 4)[..., :3]


def drag(page, dx: float, dy: float) -> None:
    """Drag across the canvas by (dx, dy) of its displayed size, in a few pointer moves."""
    box = page.locator("#view").bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    for k in range(1, 5):
        page.mouse.move(x + dx * box["width"] * k / 4, y + dy * box["height"] * k / 4)
    page.mouse.up()


def render_and_drag(page, model_path: Path, scene_json: dict, pose) -> None:
    """In the open viewer page: render ``pose`` (4x4 nested lists), compare the canvas with torch's render of it
    (PSNR >= MIN_PSNR) and check the timing line, then drag the camera and check that coarse frames were drawn
    while it moved and that the view changed."""
    info = page.evaluate("pose => r2lViewer.renderPose(pose)", pose)
    assert (info["width"], info["height"]) == (scene_json["W"], scene_json["H"]) and not info["coarse"]
    assert info["ms"] > 0 and info["threads"] >= 1 and page.evaluate("self.crossOriginIsolated")  # (r2l view's headers)
    shown = canvas_pixels(page)
    reference = torch_view(model_path, scene_json, pose)
    assert shown.std() > 2.0, "the test view is flat: the drag check would prove nothing"
    assert psnr_db(shown / 255.0, reference) >= MIN_PSNR
    timing = page.locator("#timing").inner_text()
    assert re.fullmatch(rf"\d+\.\d ms/frame · {scene_json['W']}×{scene_json['H']} \(still\) · wasm ×\d+", timing)
    page.evaluate("r2lViewer.last = null; r2lViewer.frames.coarse = 0")
    drag(page, 0.25, 0.1)
    page.wait_for_function("r2lViewer.last && !r2lViewer.last.coarse")
    assert page.evaluate("r2lViewer.frames.coarse") > 0, "no coarse frames while dragging"
    moved = canvas_pixels(page)
    assert np.abs(moved.astype(int) - shown.astype(int)).mean() > 1.0, "the view did not change on a drag"


@contextlib.contextmanager
def viewer_page(browser, folder: Path):
    """The viewer ``folder`` served by ``r2l view``'s server and open in a new page, its first frame drawn; on
    leaving, no page error may have happened."""
    server, url = viewer.serve(folder)
    page = browser.new_page(viewport={"width": 640, "height": 640})
    errors = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    try:
        page.goto(url)
        page.wait_for_function("window.r2lViewer !== undefined")
        page.evaluate("r2lViewer.ready")
        yield page
        assert not errors, errors
    finally:
        page.close()
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("kind", ["orbit", "ff", pytest.param("grid", marks=pytest.mark.slow)])
def test_the_page_renders_like_torch_and_follows_a_drag(kind, students, browser, tmp_path):
    out = viewer.build_viewer_from_model(students[kind], tmp_path / "viewer")
    scene_json = json.loads((out / viewer.SCENE_FILE).read_text())
    assert all((out / name).is_file() for name in viewer.RUNTIME_FILES + viewer.PAGE_FILES + (viewer.MODEL_FILE,))
    with viewer_page(browser, out) as page:
        assert page.locator("#name").inner_text() == scene_json["name"]
        render_and_drag(page, students[kind], scene_json, scene_json["test_pose"])
        page.screenshot(path=str(tmp_path / f"viewer_{kind}.png"))
    if kind == "orbit":  # the report's screenshot: Chromium over its DevTools pipe, no driver
        shot = iio.imread(viewer.screenshot(out, tmp_path / "shot.png", size=(400, 440), chromium=chromium()))
        assert shot.shape[:2] == (440, 400) and shot[150:290, 130:270, :3].mean() > 30.0  # drawn, not black
        # frame times, from a plain static server: onnxruntime-web asked for 2 threads runs on 1 without isolation
        times = viewer.browser_frame_times(out, threads=2, frames=2, isolated=False, chromium=chromium())
        assert (times["asked"], times["threads"], times["isolated"]) == (2, 1, False)
        assert len(times["full"]) == len(times["coarse"]) == 2 and min(times["full"] + times["coarse"]) > 0
        assert (times["width"], times["height"], times["coarse_width"], times["coarse_height"]) == (24, 24, 6, 6)


# ----------------------------------------------------------------------------- real lego in headless Chromium

LEGO_NET = R2LNetConfig(n_points=8, n_freqs=4, depth=4, width=32)


def fit_to_training_views(net: torch.nn.Module, scene, steps: int, batch: int = 1024, lr: float = 5e-3) -> list:
    """``steps`` Adam steps of ``net`` towards random pixels of the scene's training views; returns the losses.
    Quality is not the point (the page must match torch on whatever network it is given), but a network that
    has seen the scene draws its colours and some of its shape: contrast for the drag check to see."""
    images, poses = scene.split("train")
    rays = [scene.rays(pose) for pose in poses]
    rays_o, rays_d = torch.cat([r[0] for r in rays]), torch.cat([r[1] for r in rays])
    rgb = torch.as_tensor(images.reshape(-1, 3))
    gen = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        pick = torch.randint(0, rgb.shape[0], (batch,), generator=gen)
        loss = ((net(rays_o[pick], rays_d[pick], scene.near, scene.far, True, gen) - rgb[pick]) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


def test_real_lego_renders_like_torch_in_the_page(lego_100, browser, tmp_path):
    """Real lego (NeRF-synthetic, 100 x 100): an r2l student of lego's cameras and bounds, trained 40 steps on
    lego's training pixels, exported into its viewer; the page renders one of lego's own test poses as torch
    does (PSNR >= 40 dB) and follows a drag."""
    scene = load_scene("blender", lego_100, name="lego", test_skip=25)
    torch.manual_seed(0)
    net, config = student_net(network=LEGO_NET)
    losses = fit_to_training_views(net, scene, steps=40)
    assert losses[-1] < 0.5 * losses[0], f"it learned nothing of lego: loss {losses[0]:.4f} -> {losses[-1]:.4f}"
    model = save_student_file(tmp_path / "lego.pt", net, config, scene, step=40)
    out = viewer.build_viewer_from_model(model, tmp_path / "viewer")
    scene_json = json.loads((out / viewer.SCENE_FILE).read_text())
    assert (scene_json["name"], scene_json["W"], scene_json["H"], scene_json["ndc"]) == ("lego", 100, 100, False)
    assert scene_json["controls"]["mode"] == "orbit" and abs(scene_json["focal"] - scene.focal) < 1e-4
    test_pose = scene.split("test")[1][0].astype(np.float64).tolist()
    with viewer_page(browser, out) as page:
        assert page.locator("#name").inner_text() == "lego"
        render_and_drag(page, model, scene_json, test_pose)
