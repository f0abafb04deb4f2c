"""The static viewer (issue 20, part 2): scene.json, the folder it builds, ``r2l view``'s server, and the page in
a real browser.

The browser test builds the viewer of tiny r2l students of an object scene and of a forward-facing one (and, marked
slow because torch's exporter takes about a minute over its gathers, of a tiny grid student), serves each
with ``r2l view``'s server, opens it in headless Chromium (Debian's ``chromium``, driven by Playwright without a
downloaded browser), renders the scene's test pose, compares the canvas with torch's render of that pose (PSNR
>= 40 dB), drags the camera and checks that the view changed, and saves a screenshot. Without chromium,
Playwright or npm it is skipped with the reason, unless CI is set: then it fails. `make test` fetches
onnxruntime-web (npm ci) into the cache before the tests run, and .ci/run installs chromium.
"""

from __future__ import annotations

import dataclasses
import json
import os
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

from helpers import object_and_forward_scenes, save_student_file

from r2l.core.errors import R2LError
from r2l.models.gridstudent import GridStudentConfig, GridStudentNet
from r2l.models.load import load_model
from r2l.models.r2lnet import R2LNet, R2LNetConfig
from r2l.models.render import pose_rays
from r2l.report import viewer
from r2l.stages.student import DistillConfig

GRID_NET = GridStudentConfig(n_points=8, geometry_resolution=16, n_fine=2, resolutions=(8, 16), channels=3,
                             mlp_width=16)
NET = R2LNetConfig(n_points=8, n_freqs=4, depth=4, width=16)
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
    if family == "grid":
        net = GridStudentNet(GRID_NET, 1.5 * torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))
        config = dataclasses.asdict(DistillConfig(family="grid", grid=GRID_NET))
    else:
        net, config = R2LNet(NET), dataclasses.asdict(DistillConfig(network=NET))
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
    proc = subprocess.Popen([sys.executable, "-m", "r2l", "view", str(folder.parent)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        line = proc.stdout.readline()
        url = line.split(" at ")[1].split()[0]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/index.html")
        with urllib.request.urlopen(url) as reply:
            assert reply.read() == b"<html>lego</html>"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0, proc.stderr.read()
    finally:
        proc.kill()
    helped = subprocess.run([sys.executable, "-m", "r2l", "view", "--help"], capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and helped.stdout.startswith("usage: r2l view")
    missing = subprocess.run([sys.executable, "-m", "r2l", "view", "nowhere"], capture_output=True, text=True,
                             cwd=tmp_path, timeout=60)
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


def torch_view(model_path: Path, scene_json: dict) -> np.ndarray:
    """torch's render (H, W, 3) in [0, 1] of the viewer's test pose."""
    student = load_model(model_path, "cpu")
    s = scene_json
    rays_o, rays_d = pose_rays(np.asarray(s["test_pose"]), s["H"], s["W"], s["focal"], s["ndc"], s["ndc_near"])
    return student.render_rays(rays_o, rays_d).reshape(s["H"], s["W"], 3).numpy()


def canvas_pixels(page) -> np.ndarray:
    """The canvas's pixels, (H, W, 3) uint8."""
    data = page.evaluate("""() => { const c = document.getElementById('view');
        const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        return {w: c.width, h: c.height, px: Array.from(px)}; }""")
    return np.asarray(data["px"], dtype=np.uint8).reshape(data["h"], data["w"], 4)[..., :3]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else -10.0 * np.log10(mse)


def drag(page, dx: float, dy: float) -> None:
    """Drag across the canvas by (dx, dy) of its displayed size, in a few pointer moves."""
    box = page.locator("#view").bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    for k in range(1, 5):
        page.mouse.move(x + dx * box["width"] * k / 4, y + dy * box["height"] * k / 4)
    page.mouse.up()


@pytest.mark.parametrize("kind", ["orbit", "ff", pytest.param("grid", marks=pytest.mark.slow)])
def test_the_page_renders_like_torch_and_follows_a_drag(kind, students, browser, tmp_path):
    out = viewer.build_viewer_from_model(students[kind], tmp_path / "viewer")
    scene_json = json.loads((out / viewer.SCENE_FILE).read_text())
    assert all((out / name).is_file() for name in viewer.RUNTIME_FILES + viewer.PAGE_FILES + (viewer.MODEL_FILE,))
    server, url = viewer.serve(out)
    page = browser.new_page(viewport={"width": 640, "height": 640})
    errors = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    try:
        page.goto(url)
        page.wait_for_function("window.r2lViewer !== undefined")
        page.evaluate("r2lViewer.ready")
        assert page.locator("#name").inner_text() == scene_json["name"]
        info = page.evaluate("pose => r2lViewer.renderPose(pose)", scene_json["test_pose"])
        assert (info["width"], info["height"]) == (scene_json["W"], scene_json["H"]) and not info["coarse"]
        shown = canvas_pixels(page)
        reference = torch_view(students[kind], scene_json)
        assert shown.std() > 2.0, "the test view is flat: the drag check would prove nothing"
        assert psnr(shown / 255.0, reference) >= MIN_PSNR
        assert "ms/frame" in page.locator("#timing").inner_text()
        page.evaluate("r2lViewer.last = null; r2lViewer.frames.coarse = 0")
        drag(page, 0.25, 0.1)
        page.wait_for_function("r2lViewer.last && !r2lViewer.last.coarse")
        assert page.evaluate("r2lViewer.frames.coarse") > 0, "no coarse frames while dragging"
        moved = canvas_pixels(page)
        assert np.abs(moved.astype(int) - shown.astype(int)).mean() > 1.0, "the view did not change on a drag"
        page.screenshot(path=str(tmp_path / f"viewer_{kind}.png"))
        assert not errors, errors
        if kind == "orbit":  # the report's screenshot: Chromium's own --screenshot, no driver
            shot = iio.imread(viewer.screenshot(out, tmp_path / "shot.png", size=(400, 440), chromium=chromium()))
            assert shot.shape[:2] == (440, 400) and shot[150:290, 130:270, :3].mean() > 30.0  # drawn, not black
    finally:
        page.close()
        server.shutdown()
        server.server_close()
