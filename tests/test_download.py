"""Tests of r2l.data.download against a real HTTP server on 127.0.0.1 (no internet needed)."""

from __future__ import annotations

import hashlib
import io
import os
import re
import socket
import stat
import tarfile
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

import r2l.data.download as dl
from r2l.core.errors import R2LError

# ------------------------------------------------------------------------------------------ server


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.files``; honours ``Range: bytes=N-`` unless told otherwise.

    server.mode: "ok" | "slow" | "ignore_range" (always 200 + whole file) | "truncate" (the connection drops
    when the body reaches byte ``server.drop_at`` of the file, on every request) | "truncate_once"
    (only the first request is cut).
    """

    def do_GET(self):  # noqa: N802 (http.server naming)
        srv = self.server
        rng = self.headers.get("Range")
        srv.seen.append(rng)
        data = srv.files.get(self.path.split("?")[0])
        if data is None:
            self.send_error(404)
            return
        start = 0
        if rng and srv.mode != "ignore_range":
            start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        if srv.mode == "slow":  # in 8 pieces with pauses, so that a second client arrives mid-transfer
            step = -(-(len(data) - start) // 8)
            for i in range(start, len(data), step):
                self.wfile.write(data[i : i + step])
                self.wfile.flush()
                time.sleep(0.05)
            return
        cut = srv.mode == "truncate" or (srv.mode == "truncate_once" and len(srv.seen) == 1)
        end = max(start, srv.drop_at) if cut else len(data)
        self.wfile.write(data[start:end])  # HTTP/1.0: the connection closes after this, short or not

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files, srv.seen, srv.mode, srv.drop_at = {}, [], "ok", 0
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join()


@pytest.fixture(autouse=True)
def _no_retry_wait(monkeypatch):
    monkeypatch.setattr(dl, "RETRY_DELAY", 0.0)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _payload(n: int, seed: int = 0) -> bytes:
    """Deterministic pseudo-random bytes."""
    out, block = bytearray(), hashlib.sha256(str(seed).encode()).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:n])


def _tree(root: Path) -> dict[str, str]:
    """Every path under ``root`` -> 'dir' | 'link:<target>' | file content hash (for before/after checks)."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            out[rel] = "link:" + os.readlink(path)
        elif path.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = _sha(path.read_bytes())
    return out


# -------------------------------------------------------------------------------------- archives

SCENE = {  # a tiny fake dataset archive: two scenes of each kind plus macOS debris
    "nerf_synthetic/lego/transforms_train.json": b'{"camera_angle_x": 0.69, "frames": []}',
    "nerf_synthetic/lego/train/r_0.png": _payload(3000, 1),
    "nerf_synthetic/chair/transforms_train.json": b'{"camera_angle_x": 0.5}',
    "nerf_llff_data/fern/poses_bounds.npy": _payload(500, 2),
    "__MACOSX/nerf_synthetic/._lego": b"junk",
}


def _make_archive(path: Path, members: list[tuple]) -> Path:
    """Write a zip or tar (compression from the suffix). members: (name, kind, payload) with kind
    file (payload bytes) | dir | symlink (payload target) | hardlink (payload target)."""
    if path.name.endswith(".zip"):
        with zipfile.ZipFile(path, "w") as zf:
            for name, kind, payload in members:
                info = zipfile.ZipInfo(name + ("/" if kind == "dir" else ""))
                info.create_system = 3
                mode = {"file": stat.S_IFREG | 0o644, "dir": stat.S_IFDIR | 0o755, "symlink": stat.S_IFLNK | 0o777}
                info.external_attr = mode[kind] << 16
                data = payload.encode() if kind == "symlink" else (payload or b"")
                zf.writestr(info, data)
        return path
    comp = {".tar": "", ".gz": "gz", ".tgz": "gz", ".bz2": "bz2", ".xz": "xz"}[path.suffix]
    with tarfile.open(path, f"w:{comp}" if comp else "w") as tf:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            types = {
                "file": tarfile.REGTYPE,
                "dir": tarfile.DIRTYPE,
                "symlink": tarfile.SYMTYPE,
                "hardlink": tarfile.LNKTYPE,
            }
            info.type = types[kind]
            info.mode = 0o755 if kind == "dir" else 0o644
            if kind in ("symlink", "hardlink"):
                info.linkname = payload
            data = payload if kind == "file" else b""
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def _scene_members() -> list[tuple]:
    return [(name, "file", data) for name, data in SCENE.items()]


# -------------------------------------------------------------------------------------- download


def test_download_complete_with_sha256(server, tmp_path):
    data = _payload(200_000)
    server.files["/data.bin"] = data
    dest = dl.download(server.base + "/data.bin", tmp_path / "dl" / "data.bin", sha256=_sha(data).upper())
    assert dest == tmp_path / "dl" / "data.bin"
    assert dest.read_bytes() == data
    assert sorted(p.name for p in dest.parent.iterdir()) == ["data.bin"]  # no .part left
    assert server.seen == [None]
    # a second call finds the verified file and does not ask the server again
    assert dl.download(server.base + "/data.bin", dest, sha256=_sha(data)) == dest
    assert server.seen == [None]


def test_truncated_download_keeps_part_and_next_call_resumes(server, tmp_path):
    data = _payload(150_000)
    server.files["/scene.zip"] = data
    server.mode, server.drop_at = "truncate", 60_000
    dest = tmp_path / "scene.zip"
    with pytest.raises(R2LError, match="broke off") as err:
        dl.download(server.base + "/scene.zip", dest, sha256=_sha(data))
    part = tmp_path / "scene.zip.part"
    assert "resume" in str(err.value) and str(part) in str(err.value)
    assert not dest.exists()
    assert part.read_bytes() == data[:60_000]
    # every retry inside the call resumed from what had arrived
    assert server.seen == [None] + ["bytes=60000-"] * (dl.ATTEMPTS - 1)

    server.mode, server.seen = "ok", []
    assert dl.download(server.base + "/scene.zip", dest, sha256=_sha(data)).read_bytes() == data
    assert server.seen == ["bytes=60000-"]
    assert not part.exists()


def test_concurrent_downloads_of_one_file_fetch_it_once(server, tmp_path):
    data = _payload(80_000)
    server.files["/shared.zip"] = data
    server.mode = "slow"
    dest, results, errors = tmp_path / "shared.zip", [], []

    def fetch():
        try:
            results.append(dl.download(server.base + "/shared.zip", dest, _sha(data)).read_bytes())
        except R2LError as exc:  # pragma: no cover - reported by the asserts below
            errors.append(exc)

    threads = [threading.Thread(target=fetch) for _ in range(2)]
    for t in threads:
        t.start()
        time.sleep(0.1)  # the second starts while the first is mid-transfer
    for t in threads:
        t.join()
    assert errors == [] and results == [data, data]
    assert server.seen == [None]  # the second waited for the lock, then found the verified file


def test_broken_transfer_is_resumed_within_one_call(server, tmp_path):
    data = _payload(100_000)
    server.files["/a.bin"] = data
    server.mode, server.drop_at = "truncate_once", 12_345
    dest = dl.download(server.base + "/a.bin", tmp_path / "a.bin", sha256=_sha(data))
    assert dest.read_bytes() == data
    assert server.seen == [None, "bytes=12345-"]


def test_server_ignoring_range_starts_over(server, tmp_path):
    data = _payload(50_000)
    server.files["/a.bin"] = data
    server.mode = "ignore_range"
    (tmp_path / "a.bin.part").write_bytes(b"x" * 1000)  # stale partial content that must not survive
    dest = dl.download(server.base + "/a.bin", tmp_path / "a.bin", sha256=_sha(data))
    assert dest.read_bytes() == data
    assert server.seen == ["bytes=1000-"]


def test_complete_part_answered_with_416_is_accepted(server, tmp_path):
    data = _payload(4096)
    server.files["/a.bin"] = data
    (tmp_path / "a.bin.part").write_bytes(data)
    assert dl.download(server.base + "/a.bin", tmp_path / "a.bin", _sha(data)).read_bytes() == data
    assert server.seen == ["bytes=4096-"]


def test_wrong_checksum_names_both_digests_and_leaves_no_file(server, tmp_path):
    data = _payload(10_000)
    server.files["/a.zip"] = data
    wrong = "0" * 64
    with pytest.raises(R2LError) as err:
        dl.download(server.base + "/a.zip", tmp_path / "a.zip", sha256=wrong)
    msg = str(err.value)
    assert wrong in msg and _sha(data) in msg and "a.zip" in msg
    assert [p.name for p in tmp_path.iterdir()] == ["a.zip.lock"]  # no a.zip, no a.zip.part


def test_malformed_checksum_is_refused(tmp_path):
    with pytest.raises(R2LError, match="64-digit"):
        dl.download(str(tmp_path / "x"), tmp_path / "y", sha256="abc")


def test_file_url_and_plain_path_are_copied_and_verified(tmp_path):
    data = _payload(5000)
    src = tmp_path / "src dir" / "a.zip"
    src.parent.mkdir()
    src.write_bytes(data)
    got = dl.download(src.as_uri(), tmp_path / "out" / "a.zip", sha256=_sha(data))
    assert got.read_bytes() == data
    assert dl.download(str(src), tmp_path / "out2" / "a.zip").read_bytes() == data
    with pytest.raises(R2LError, match="sha256 mismatch"):
        dl.download(str(src), tmp_path / "out3" / "a.zip", sha256="1" * 64)
    assert not (tmp_path / "out3" / "a.zip").exists()
    with pytest.raises(R2LError, match="no such file"):
        dl.download((tmp_path / "missing.zip").as_uri(), tmp_path / "out4" / "a.zip")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_offline_gives_a_clear_error_with_the_local_copy_hint(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/nerf_synthetic.zip"
    with pytest.raises(R2LError) as err:
        dl.fetch_scene(url, tmp_path / "lego", member="nerf_synthetic/lego", cache_dir=tmp_path / "cache")
    msg = str(err.value)
    assert "download of " + url + " failed" in msg
    assert "path: /local/folder" in msg and "file:///" in msg
    assert not (tmp_path / "lego").exists()


def test_http_error_is_reported(server, tmp_path):
    with pytest.raises(R2LError, match="HTTP 404"):
        dl.download(server.base + "/nope.zip", tmp_path / "nope.zip")


# ------------------------------------------------------------------------------------ extraction


@pytest.mark.parametrize("suffix", [".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz"])
def test_safe_extract_every_format_is_complete_and_leaves_no_temp(tmp_path, suffix):
    members = [("top", "dir", None)] + [("top/" + n, "file", d) for n, d in SCENE.items()]
    members.append(("top/nerf_synthetic/link_to_lego", "symlink", "lego/train/r_0.png"))
    archive = _make_archive(tmp_path / ("a" + suffix), members)
    dest = dl.safe_extract(archive, tmp_path / "out" / "scene")
    assert dest == tmp_path / "out" / "scene"
    assert os.listdir(tmp_path / "out") == ["scene"]  # the temp folder is gone
    for name, data in SCENE.items():
        assert (dest / "top" / name).read_bytes() == data
    link = dest / "top" / "nerf_synthetic" / "link_to_lego"
    assert link.is_symlink() and link.read_bytes() == SCENE["nerf_synthetic/lego/train/r_0.png"]
    n_files = sum(1 for p in dest.rglob("*") if p.is_file() and not p.is_symlink())
    assert n_files == len(SCENE)
    with pytest.raises(R2LError, match="already exists"):
        dl.safe_extract(archive, dest)
    empty = tmp_path / "out" / "empty"  # an empty folder (as a workflow manager may make) is filled
    empty.mkdir()
    assert (dl.safe_extract(archive, empty) / "top" / "nerf_synthetic" / "chair" / "transforms_train.json").is_file()


UNSAFE = {
    "absolute": [("/tmp/r2l_evil_abs.txt", "file", b"evil")],
    "dotdot": [("scene/ok.txt", "file", b"ok"), ("scene/../../../evil.txt", "file", b"evil")],
    "symlink_out": [("scene/link", "symlink", "../../../outside"), ("scene/link/evil.txt", "file", b"evil")],
    "symlink_abs": [("scene/link", "symlink", "/tmp")],
    "link_chain": [("p", "symlink", "."), ("e", "symlink", "p/.."), ("e/evil.txt", "file", b"evil")],
    "link_chain_reversed": [("e", "symlink", "p/.."), ("p", "symlink", ".")],
}
TAR_ONLY = {
    "hardlink_out": [("scene/hard", "hardlink", "../../etc/passwd")],
    "hardlink_via_symlink": [("p", "symlink", "."), ("h", "hardlink", "p/../x.txt"), ("h", "file", b"evil")],
}
UNSAFE_CASES = [(c, s) for c in sorted(UNSAFE) for s in (".zip", ".tar.gz")] + [(c, ".tar") for c in sorted(TAR_ONLY)]


@pytest.mark.parametrize(("case", "suffix"), UNSAFE_CASES)
def test_unsafe_members_are_refused_and_nothing_is_written(tmp_path, suffix, case):
    members = UNSAFE.get(case) or TAR_ONLY[case]
    (tmp_path / "arch").mkdir()
    archive = _make_archive(tmp_path / "arch" / ("evil" + suffix), members)
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "x.txt").write_bytes(b"outside, must stay")
    (tmp_path / "a" / "b" / "x.txt").write_bytes(b"next to dest, must stay")
    before = _tree(tmp_path)
    dest = tmp_path / "a" / "b" / "scene"
    with pytest.raises(R2LError) as err:
        dl.safe_extract(archive, dest)
    msg = str(err.value)
    assert str(archive) in msg and "refusing member" in msg
    assert _tree(tmp_path) == before  # dest absent, no temp folder, nothing written anywhere
    assert not Path("/tmp/r2l_evil_abs.txt").exists()


def test_unsafe_member_message_names_the_member(tmp_path):
    archive = _make_archive(tmp_path / "e.zip", [("scene/../../evil.txt", "file", b"x")])
    with pytest.raises(R2LError, match=re.escape("'scene/../../evil.txt'")):
        dl.safe_extract(archive, tmp_path / "out")


def test_device_member_is_refused(tmp_path):
    archive = tmp_path / "dev.tar"
    with tarfile.open(archive, "w") as tf:
        info = tarfile.TarInfo("scene/null")
        info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
        tf.addfile(info)
    with pytest.raises(R2LError, match="device"):
        dl.safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_corrupt_archives_are_reported_by_name(tmp_path):
    good = _make_archive(tmp_path / "good.tar.gz", _scene_members())
    cases = {
        "garbage.zip": _payload(2000),
        "truncated.zip": _make_archive(tmp_path / "g.zip", _scene_members()).read_bytes()[:-200],
        "truncated.tar.gz": good.read_bytes()[: good.stat().st_size // 2],
        "garbage.tar": _payload(3000),
    }
    for name, data in cases.items():
        archive = tmp_path / name
        archive.write_bytes(data)
        dest = tmp_path / ("out_" + name)
        with pytest.raises(R2LError) as err:
            dl.safe_extract(archive, dest)
        assert str(archive) in str(err.value), name
        assert not dest.exists(), name
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_failure_midway_leaves_no_partial_scene(tmp_path):
    """A CRC error in the second member: the first was already written, yet dest never appears."""
    archive = tmp_path / "crc.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("scene/a.bin", _payload(1000, 3))
        zf.writestr("scene/b.bin", _payload(1000, 4))
    raw = bytearray(archive.read_bytes())
    pos = raw.find(_payload(1000, 4)[:32])
    raw[pos + 10] ^= 0xFF
    archive.write_bytes(bytes(raw))
    with pytest.raises(R2LError, match="corrupt"):
        dl.safe_extract(archive, tmp_path / "out" / "scene")
    assert os.listdir(tmp_path / "out") == []


# ---------------------------------------------------------------------------------------- scenes


def test_fetch_scene_over_http_extracts_only_the_member(server, tmp_path):
    archive = _make_archive(tmp_path / "nerf_example_data.zip", _scene_members())
    server.files["/data/nerf_example_data.zip"] = archive.read_bytes()
    url = server.base + "/data/nerf_example_data.zip?download=true"
    cache, scenes = tmp_path / "cache", tmp_path / "scenes"
    lego = dl.fetch_scene(url, scenes / "lego", "nerf_synthetic/lego", _sha(archive.read_bytes()), cache)
    assert lego == scenes / "lego"
    assert _tree(lego) == {
        "train": "dir",
        "train/r_0.png": _sha(SCENE["nerf_synthetic/lego/train/r_0.png"]),
        "transforms_train.json": _sha(SCENE["nerf_synthetic/lego/transforms_train.json"]),
    }
    assert os.listdir(scenes) == ["lego"]
    assert os.listdir(cache) == ["nerf_example_data.zip"]
    # the second scene of the same archive reuses the cached download
    fern = dl.fetch_scene(url, scenes / "fern", "nerf_llff_data/fern/", cache_dir=cache)
    assert (fern / "poses_bounds.npy").read_bytes() == SCENE["nerf_llff_data/fern/poses_bounds.npy"]
    assert len(server.seen) == 1
    assert sorted(os.listdir(scenes)) == ["fern", "lego"]
    # an existing scene folder is taken as complete
    assert dl.fetch_scene(url, scenes / "lego", "nerf_synthetic/lego", cache_dir=cache) == lego


def test_fetch_scene_missing_member_lists_top_level_folders(tmp_path):
    archive = _make_archive(tmp_path / "d.zip", _scene_members())
    with pytest.raises(R2LError) as err:
        dl.fetch_scene(str(archive), tmp_path / "out", member="nerf_synthetic/ship")
    msg = str(err.value)
    assert "nerf_synthetic/ship" in msg and "['nerf_llff_data', 'nerf_synthetic']" in msg
    assert sorted(os.listdir(tmp_path)) == ["d.zip"]


def test_fetch_scene_from_file_url_with_member_and_checksum(tmp_path):
    (tmp_path / "data").mkdir()
    archive = _make_archive(tmp_path / "data" / "nerf_synthetic.tar.xz", _scene_members())
    digest = _sha(archive.read_bytes())
    chair = dl.fetch_scene(archive.as_uri(), tmp_path / "chair", "nerf_synthetic/chair", digest, tmp_path / "cache")
    assert _tree(chair) == {"transforms_train.json": _sha(SCENE["nerf_synthetic/chair/transforms_train.json"])}
    assert not (tmp_path / "cache").exists()  # a local archive is used in place
    with pytest.raises(R2LError, match="sha256 mismatch"):
        dl.fetch_scene(archive.as_uri(), tmp_path / "lego", "nerf_synthetic/lego", "f" * 64)
    assert not (tmp_path / "lego").exists()


def test_fetch_scene_single_top_folder_without_member(tmp_path):
    members = [("fern/poses_bounds.npy", "file", b"pb"), ("fern/images/IMG_1.JPG", "file", b"jpg")]
    archive = _make_archive(tmp_path / "fern.tgz", members + [("__MACOSX/fern/._x", "file", b"j")])
    fern = dl.fetch_scene(str(archive), tmp_path / "scenes" / "fern")
    assert _tree(fern) == {"images": "dir", "images/IMG_1.JPG": _sha(b"jpg"), "poses_bounds.npy": _sha(b"pb")}
    flat = _make_archive(tmp_path / "flat.zip", [("a.json", "file", b"a"), ("b.json", "file", b"b")])
    whole = dl.fetch_scene(str(flat), tmp_path / "scenes" / "flat")
    assert sorted(os.listdir(whole)) == ["a.json", "b.json"]


def test_fetch_scene_from_local_folder(tmp_path):
    src = tmp_path / "nerf_synthetic"
    for name, data in SCENE.items():
        if name.startswith("nerf_synthetic/"):
            (src.parent / name).parent.mkdir(parents=True, exist_ok=True)
            (src.parent / name).write_bytes(data)
    (tmp_path / "scenes" / "lego").mkdir(parents=True)  # empty: not taken as a complete scene
    lego = dl.fetch_scene(str(src), tmp_path / "scenes" / "lego", member="lego")
    assert _tree(lego) == _tree(src / "lego")
    chair = dl.fetch_scene((src / "chair").as_uri(), tmp_path / "scenes" / "chair")
    assert _tree(chair) == _tree(src / "chair")
    assert sorted(os.listdir(tmp_path / "scenes")) == ["chair", "lego"]
    with pytest.raises(R2LError, match="no such scene folder"):
        dl.fetch_scene(str(src), tmp_path / "scenes" / "ship", member="ship")
    with pytest.raises(R2LError, match="no such archive or folder"):
        dl.fetch_scene(str(tmp_path / "nowhere"), tmp_path / "scenes" / "x")


def test_archive_path_uses_the_url_file_name(tmp_path):
    url = "https://example.org/a%20b/nerf_llff_data.zip?dl=1"
    assert dl.archive_path(url, tmp_path) == tmp_path / "nerf_llff_data.zip"
    with pytest.raises(R2LError, match="names no file"):
        dl.archive_path("https://example.org/", tmp_path)


def test_example_datasets_config_lists_the_paper_scenes():
    root = Path(__file__).resolve().parents[1]
    example = yaml.safe_load((root / "config" / "datasets.example.yaml").read_text())
    scenes = example["scenes"]
    blender = ["chair", "drums", "ficus", "hotdog", "lego", "materials", "mic", "ship"]
    llff = ["fern", "flower", "fortress", "horns", "leaves", "orchids", "room", "trex"]
    assert sorted(scenes) == sorted(blender + llff)
    for name, entry in scenes.items():
        top = "nerf_synthetic" if name in blender else "nerf_llff_data"
        assert entry["format"] == ("blender" if name in blender else "llff")
        assert entry["member"] == f"{top}/{name}"
        assert entry["url"].startswith(("http://", "https://", "file:///"))
        assert entry.get("resolution" if name in blender else "factor") == (400 if name in blender else 8)
    config = pytest.importorskip("r2l.core.config")
    merged = config.deep_merge(yaml.safe_load((root / "config" / "config.yaml").read_text()), example)
    config.validate_config(merged)  # raises R2LError listing problems if the schema rejects an entry


def test_corrupt_cached_download_is_dropped_and_fetched_again(server, tmp_path):
    server.files["/d.zip"] = _payload(5000)  # not a zip
    url, cache = server.base + "/d.zip", tmp_path / "cache"
    with pytest.raises(R2LError) as err:
        dl.fetch_scene(url, tmp_path / "lego", "nerf_synthetic/lego", cache_dir=cache)
    assert str(cache / "d.zip") in str(err.value) and "removed" in str(err.value)
    assert list(cache.iterdir()) == [] and not (tmp_path / "lego").exists()
    server.files["/d.zip"] = _make_archive(tmp_path / "good.zip", _scene_members()).read_bytes()
    lego = dl.fetch_scene(url, tmp_path / "lego", "nerf_synthetic/lego", cache_dir=cache)
    assert (lego / "train" / "r_0.png").read_bytes() == SCENE["nerf_synthetic/lego/train/r_0.png"]


@pytest.mark.parametrize("suffix", [".zip", ".tar"])
def test_member_link_to_a_sibling_outside_the_member_is_refused(tmp_path, suffix):
    members = _scene_members() + [("nerf_synthetic/lego/peek", "symlink", "../chair/transforms_train.json")]
    archive = _make_archive(tmp_path / ("d" + suffix), members)
    assert dl.safe_extract(archive, tmp_path / "whole").is_dir()  # fine for the whole archive
    with pytest.raises(R2LError, match="refusing member 'nerf_synthetic/lego/peek'"):
        dl.fetch_scene(str(archive), tmp_path / "scenes" / "lego", member="nerf_synthetic/lego")
    assert os.listdir(tmp_path / "scenes") == []
