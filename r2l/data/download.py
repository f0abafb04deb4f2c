"""Dataset download and safe extraction (NeRF-synthetic, LLFF and any scene shipped as an archive).

Three steps, each safe to interrupt:

* :func:`download` fetches ``http://``, ``https://`` or ``file://`` URLs (or plain local paths) into
  ``<dest>.part``, resumes a partial ``.part`` with an HTTP ``Range`` request (starting over when the
  server ignores it), checks the sha256 when one is given and only then renames the file to ``dest``.
* :func:`safe_extract` checks every member of a ``.zip`` / ``.tar`` / ``.tar.gz`` / ``.tgz`` /
  ``.tar.bz2`` / ``.tar.xz`` archive before writing anything (no absolute names, no ``..``, no link
  pointing out of the destination, no device files), extracts into a temporary folder beside ``dest``
  and renames it into place, so ``dest`` is either complete or absent.
* :func:`fetch_scene` combines both for one scene of the config: a URL, a local archive or a local
  folder, plus the scene's sub-folder inside the archive (``member``).

Only the standard library is used (urllib, hashlib, zipfile, tarfile, shutil) plus the tqdm bar of
:func:`r2l.core.runtime.progress`.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import lzma
import os
import re
import shutil
import stat
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

try:
    import fcntl
except ImportError:  # Windows: no cross-process lock
    fcntl = None

from r2l.core.atomic import atomic_folder
from r2l.core.digest import file_sha256
from r2l.core.errors import DataError, R2LError
from r2l.core.log import progress

log = logging.getLogger("r2l")

CHUNK = 1 << 20  # bytes read and written at a time
ATTEMPTS = 3  # tries per download call when the connection breaks off mid-transfer (each resumes)
RETRY_DELAY = 2.0  # seconds between those tries
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
IGNORED_TOP = ("__MACOSX", ".DS_Store")  # macOS debris, skipped when looking for the single top folder
_HINT = (
    "If you are offline or the link is dead, get the file another way and point the scene's config at "
    "the local copy: `path: /local/folder` (an extracted scene folder) or `url: file:///path/archive.zip`."
)
_CORRUPT = (tarfile.TarError, zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error, lzma.LZMAError, OSError)


class _Interrupted(Exception):
    """The transfer broke off; the ``.part`` file holds what arrived so far."""


# ----------------------------------------------------------------------------------------- download


def _check_digest_format(sha256: str | None) -> str | None:
    """Normalise a configured digest (lower case, no blanks); R2LError if it is not 64 hex digits."""
    if sha256 is None:
        return None
    value = str(sha256).strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise R2LError(f"sha256 {sha256!r} in the config is not a 64-digit hex digest")
    return value


def _local_source(url: str) -> Path | None:
    """The local path a ``file://`` URL or plain path names; None for http(s); R2LError for other schemes."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        return None
    if scheme == "file":
        return Path(urllib.request.url2pathname(parts.path))
    if scheme and len(scheme) > 1:  # one letter: a Windows drive, i.e. a plain path
        raise R2LError(f"{url}: unsupported URL scheme {scheme!r} (use http, https, file or a local path)")
    return Path(url).expanduser()


def download(url: str, dest: Path, sha256: str | None = None, timeout: float = 30.0) -> Path:
    """Fetch ``url`` to ``dest`` (resuming ``<dest>.part``), verify ``sha256`` if given, rename into place.

    ``file://`` URLs and plain local paths are copied (and verified too). An existing ``dest`` is kept
    when it matches ``sha256`` (or when no digest is given) and fetched again otherwise.
    Raises R2LError when the server cannot be reached (with a hint to use a local copy), when the
    transfer keeps breaking off (the ``.part`` stays for the next call to resume) or on a digest mismatch.
    """
    dest, expected, local = Path(dest), _check_digest_format(sha256), _local_source(url)
    dest.parent.mkdir(parents=True, exist_ok=True)
    lock = dest.with_name(dest.name + ".lock")
    with _lock(lock):  # one process per file: the others wait, then find it complete
        if not _already_there(dest, expected):
            part = dest.with_name(dest.name + ".part")
            if local is None:
                _http_download(url, part, timeout)
            else:
                _copy_local(local, part, url)
            _verify(part, expected, dest, url)
            os.replace(part, dest)
        lock.unlink(missing_ok=True)  # safe once dest is complete: a waiter on the old lock finds dest
    return dest


@contextlib.contextmanager
def _lock(path: Path):
    """Hold an exclusive lock on the file ``path`` across processes (fcntl.flock; a no-op without fcntl).

    The kernel drops the lock when the holder dies, so a killed run never leaves a stale lock (the file
    stays after a failure and is reused by the next run).
    """
    with open(path, "a") as handle:
        if fcntl is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("waiting for another process that is fetching %s", path.with_suffix(""))
                fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _already_there(dest: Path, expected: str | None) -> bool:
    """True when ``dest`` exists and matches ``expected`` (any content when None); a mismatch is removed."""
    if not dest.is_file():
        return False
    actual = file_sha256(dest) if expected else None
    if actual == expected:
        log.info("%s already downloaded", dest)
        return True
    log.warning("%s does not match sha256 %s (got %s); fetching it again", dest, expected, actual)
    dest.unlink()
    return False


def _verify(part: Path, expected: str | None, dest: Path, url: str) -> None:
    """Check the sha256 of a finished transfer; on mismatch remove it and raise R2LError with both digests."""
    actual = file_sha256(part)
    if expected is None:
        log.info("sha256 of %s: %s (add `sha256: %s` to the config to pin it)", dest.name, actual, actual)
        return
    if actual != expected:
        part.unlink()
        raise R2LError(
            f"{dest}: sha256 mismatch for the file fetched from {url}: expected {expected}, got {actual}. "
            "The file was removed; check the URL and the `sha256:` in the config."
        )


def _copy_local(src: Path, part: Path, url: str) -> None:
    """Copy a local file into ``part`` with a byte progress bar."""
    if not src.is_file():
        raise DataError(src, f"no such file (source {url!r}); fix `url:` or `path:` in the config")
    with open(src, "rb") as fin, open(part, "wb") as fout, _byte_bar(src.stat().st_size, 0, src.name) as bar:
        for block in iter(lambda: fin.read(CHUNK), b""):
            fout.write(block)
            bar.update(len(block))


def _byte_bar(total: int | None, initial: int, name: str):
    """A :func:`progress` bar counting bytes (KiB, MiB, ...)."""
    bar = progress(total, initial=initial, desc=name)
    bar.unit, bar.unit_scale, bar.unit_divisor = "B", True, 1024
    return bar


def _http_download(url: str, part: Path, timeout: float) -> None:
    """Fetch ``url`` into ``part``, resuming it; retry (resuming) when the connection breaks off."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            _http_attempt(url, part, timeout)
            return
        except _Interrupted as exc:
            reason = exc
        have = part.stat().st_size if part.exists() else 0
        log.warning("download of %s broke off at %d bytes (%s); try %d of %d", url, have, reason, attempt, ATTEMPTS)
        if attempt < ATTEMPTS:
            time.sleep(RETRY_DELAY)
    raise R2LError(
        f"download of {url} failed: the connection broke off ({reason}). The partial file {part} is kept: "
        f"run again to resume. {_HINT}"
    )


def _http_attempt(url: str, part: Path, timeout: float) -> None:
    """One request: append to ``part`` from its current size (HTTP Range) or start over on a 200 reply."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "r2l-download"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:
            _range_not_satisfiable(exc, part, have)
            return
        raise R2LError(f"download of {url} failed: HTTP {exc.code} {exc.reason}. {_HINT}") from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise R2LError(f"download of {url} failed: cannot reach the server ({reason}). {_HINT}") from exc
    with response:
        start = _resume_offset(response, have)
        if start != have:
            log.warning("server did not resume %s at byte %d; starting over", url, have)
        _stream(response, part, start)


def _range_not_satisfiable(exc: urllib.error.HTTPError, part: Path, have: int) -> None:
    """HTTP 416 on a resume: the ``.part`` is complete if its size is the file's size, else start over."""
    total = (exc.headers.get("Content-Range") or "").rpartition("/")[2]
    if total.isdigit() and int(total) == have:
        return
    part.unlink()
    raise _Interrupted("the server cannot resume the partial file; it was removed")


def _resume_offset(response, have: int) -> int:
    """Byte offset the response body starts at: ``have`` for a matching 206 reply, 0 for a full 200 reply."""
    if response.status != 206:
        return 0
    match = re.match(r"bytes\s+(\d+)-", response.headers.get("Content-Range") or "")
    if not match or int(match.group(1)) != have:
        raise _Interrupted(f"unexpected Content-Range {response.headers.get('Content-Range')!r}")
    return have


def _stream(response, part: Path, start: int) -> None:
    """Write the body to ``part`` from offset ``start`` (truncating there); _Interrupted if it ends early."""
    length = response.headers.get("Content-Length")
    expected = int(length) if length and length.isdigit() else None
    got = 0
    mode = "ab" if start else "wb"
    total = start + expected if expected is not None else None
    with open(part, mode) as out, _byte_bar(total, start, part.name[: -len(".part")]) as bar:
        out.truncate(start)
        try:
            for block in iter(lambda: response.read(CHUNK), b""):
                out.write(block)
                got += len(block)
                bar.update(len(block))
        except (OSError, http.client.HTTPException) as exc:
            raise _Interrupted(f"{type(exc).__name__}: {exc}") from exc
    if expected is not None and got < expected:
        raise _Interrupted(f"got {got} of {expected} bytes")


# ------------------------------------------------------------------------------------- extraction


@dataclass
class _Entry:
    """One archive member: normalised ``/``-separated name, kind and (for links) the stored target."""

    name: str
    kind: str  # "file" | "dir" | "symlink" | "hardlink" | "other"
    target: str | None
    raw: zipfile.ZipInfo | tarfile.TarInfo


def _refuse(archive: Path, name: str, why: str) -> R2LError:
    return R2LError(f"{archive}: refusing member {name!r}: {why}; nothing was extracted")


def _parts(name: str) -> list[str]:
    """Path components of an archive name, treating both ``/`` and ``\\`` as separators."""
    return [p for p in re.split(r"[/\\]+", name) if p not in ("", ".")]


def _is_absolute(name: str) -> bool:
    return name.startswith(("/", "\\")) or bool(re.match(r"[A-Za-z]:", name))


def _escapes(path: str) -> bool:
    """True when a relative ``/``-path, normalised lexically, leaves its root (``..`` at the front)."""
    norm = os.path.normpath(path.replace("\\", "/"))
    return norm == ".." or norm.startswith("../") or os.path.isabs(norm)


def _validate(archive: Path, entries: list[_Entry]) -> None:
    """Lexical checks of every member before anything is written (R2LError naming archive and member)."""
    for e in entries:
        if _is_absolute(e.name):
            raise _refuse(archive, e.name, "absolute path")
        if ".." in _parts(e.name):
            raise _refuse(archive, e.name, "'..' in the path")
        if e.kind == "other":
            raise _refuse(archive, e.name, "not a regular file, folder or link (device, fifo, ...)")
        if e.kind in ("symlink", "hardlink"):
            target = e.target or ""
            base = str(PurePosixPath(*_parts(e.name)).parent) if e.kind == "symlink" else "."
            if not target or _is_absolute(target) or _escapes(os.path.join(base, target)):
                raise _refuse(archive, e.name, f"{e.kind} to {target!r} points out of the destination")


def _zip_entries(zf: zipfile.ZipFile) -> list[_Entry]:
    entries = []
    for info in zf.infolist():
        mode = info.external_attr >> 16
        if info.create_system == 3 and stat.S_ISLNK(mode):
            target = zf.read(info).decode("utf-8", errors="replace")
            entries.append(_Entry(info.filename, "symlink", target, info))
        else:
            entries.append(_Entry(info.filename, "dir" if info.is_dir() else "file", None, info))
    return entries


def _tar_entry(info: tarfile.TarInfo) -> _Entry:
    if info.isreg() or info.isdir():
        return _Entry(info.name, "dir" if info.isdir() else "file", None, info)
    if info.issym() or info.islnk():
        return _Entry(info.name, "symlink" if info.issym() else "hardlink", info.linkname, info)
    return _Entry(info.name, "other", None, info)


def _tar_entries(tf: tarfile.TarFile) -> list[_Entry]:
    return [_tar_entry(info) for info in tf.getmembers()]


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root + os.sep)


def _check_on_disk(archive: Path, e: _Entry, root: str) -> None:
    """Refuse a member that would write (or link) outside ``root`` through links extracted before it.

    root: the real path of the extraction folder.
    """
    target = os.path.join(root, *_parts(e.name))
    if not _inside(os.path.realpath(os.path.dirname(target)), root):
        raise _refuse(archive, e.name, "its folder resolves out of the destination")
    if os.path.islink(target):
        raise _refuse(archive, e.name, "it would overwrite a link extracted before it")
    if e.kind in ("symlink", "hardlink"):
        base = os.path.dirname(target) if e.kind == "symlink" else root
        if not _inside(os.path.realpath(os.path.join(base, e.target or "")), root):
            raise _refuse(archive, e.name, f"{e.kind} to {e.target!r} resolves out of the destination")


def _check_links_after(archive: Path, root: str, prefix: str = "") -> None:
    """Every symlink in the extracted tree must resolve inside ``root`` (catches link chains).

    prefix: the archive path of ``root`` ('' for the archive's top), for the error message.
    """
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            if os.path.islink(path) and not _inside(os.path.realpath(path), root):
                rel = PurePosixPath(prefix, os.path.relpath(path, root)).as_posix()
                raise _refuse(archive, rel, "link chain resolves out of the destination")


def _extract_zip(archive: Path, zf: zipfile.ZipFile, entries: list[_Entry], root: str) -> None:
    with progress(len(entries), desc=f"extract {archive.name}") as bar:
        for e in entries:
            _check_on_disk(archive, e, root)
            if e.kind == "symlink":
                path = os.path.join(root, *_parts(e.name))
                os.makedirs(os.path.dirname(path), exist_ok=True)
                os.symlink(e.target, path)
            else:
                zf.extract(e.raw, root)
            bar.update(1)


def _extract_tar(archive: Path, tf: tarfile.TarFile, entries: list[_Entry], root: str) -> None:
    bar = progress(len(entries), desc=f"extract {archive.name}")

    def check(info: tarfile.TarInfo, path: str) -> tarfile.TarInfo:
        _check_on_disk(archive, _tar_entry(info), root)
        bar.update(1)
        return tarfile.data_filter(info, path)

    with bar:
        if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: our checks, then the stdlib 'data' filter
            tf.extractall(root, members=[e.raw for e in entries], filter=check)
            return
        for e in entries:  # older Pythons: our checks alone
            _check_on_disk(archive, e, root)
            tf.extract(e.raw, root, set_attrs=not e.raw.isdir())
            bar.update(1)


def _open_archive(archive: Path):
    """Open a zip or tar archive (by content); R2LError when it is neither or cannot be read."""
    if not archive.is_file():
        raise DataError(archive, "archive not found")
    try:
        if zipfile.is_zipfile(archive):
            return zipfile.ZipFile(archive)
        if archive.name.lower().endswith(".zip"):
            raise zipfile.BadZipFile("no zip central directory")
        return tarfile.open(archive, "r:*")
    except _CORRUPT as exc:
        supported = ", ".join(ARCHIVE_SUFFIXES)
        raise DataError(archive, f"corrupt or unsupported archive ({exc}); supported: {supported}") from exc


def _top_level(entries: list[_Entry]) -> list[str]:
    """Sorted first path components of the members, macOS debris excluded."""
    return sorted({_parts(e.name)[0] for e in entries if _parts(e.name)} - set(IGNORED_TOP))


def _select(archive: Path, entries: list[_Entry], member: str | None, pick_single: bool) -> str:
    """The member prefix to extract ('' = everything), checked against the archive's names."""
    if member:
        wanted = _parts(member)
        if _is_absolute(member) or ".." in wanted:
            raise R2LError(f"member {member!r} for {archive} must be a relative path without '..'")
        prefix = "/".join(wanted)
        if not any("/".join(_parts(e.name)[: len(wanted)]) == prefix and e.kind != "symlink" for e in entries):
            raise R2LError(
                f"{archive}: has no folder {member!r}; top-level folders found: {_top_level(entries)}. "
                "Fix `member:` in the config."
            )
        return prefix
    tops = _top_level(entries)
    is_folder = any(len(_parts(e.name)) > 1 or e.kind == "dir" for e in entries)
    if pick_single and len(tops) == 1 and is_folder:
        return tops[0]
    return ""


def _extract_into(archive: Path, root: Path, member: str | None = None, pick_single: bool = False) -> Path:
    """Validate all members, extract those under the selected member into the empty folder ``root``.

    Returns the folder holding the selected member (``root`` itself when everything was extracted).
    """
    handle = _open_archive(archive)
    root.mkdir(parents=True, exist_ok=True)
    real_root = os.path.realpath(root)
    try:
        with handle:
            entries = _zip_entries(handle) if isinstance(handle, zipfile.ZipFile) else _tar_entries(handle)
            _validate(archive, entries)
            prefix = _select(archive, entries, member, pick_single)
            depth = len(_parts(prefix))
            chosen = [e for e in entries if "/".join(_parts(e.name)[:depth]) == prefix]
            extract = _extract_zip if isinstance(handle, zipfile.ZipFile) else _extract_tar
            extract(archive, handle, chosen, real_root)
    except getattr(tarfile, "FilterError", ()) as exc:
        raise _refuse(archive, exc.tarinfo.name, str(exc)) from exc
    except _CORRUPT as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise DataError(archive, f"cannot extract ({exc})") from exc
        raise DataError(archive, f"corrupt or truncated archive ({type(exc).__name__}: {exc})") from exc
    selected = root.joinpath(*_parts(prefix))
    _check_links_after(archive, os.path.realpath(selected), prefix)  # links must stay inside the folder kept
    return selected


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and not any(path.iterdir())


def _claim(dest: Path, archive: Path) -> None:
    """R2LError if ``dest`` exists; an empty folder (e.g. made by a workflow manager) is removed instead."""
    if _is_empty_dir(dest):
        dest.rmdir()
    elif dest.exists() or dest.is_symlink():
        raise R2LError(f"{dest}: already exists; remove it to extract {archive.name} again")


def safe_extract(archive: Path, dest: Path) -> Path:
    """Extract the whole archive into ``dest``: all members checked first, temp folder, atomic rename.

    Raises R2LError if ``dest`` exists, if a member is unsafe (absolute, ``..``, link out of ``dest``,
    device file) or if the archive is corrupt; ``dest`` does not exist after a failure.
    """
    archive, dest = Path(archive), Path(dest)
    _claim(dest, archive)
    atomic_folder(dest, lambda tmp: _extract_into(archive, tmp))
    log.info("extracted %s into %s", archive, dest)
    return dest


def extract_member(archive: Path, dest: Path, member: str | None = None) -> Path:
    """Extract only the folder ``member`` of ``archive`` and rename it to ``dest`` (atomic).

    member: path inside the archive (e.g. ``nerf_synthetic/lego``); None = the archive's single top-level
    folder, or the whole archive when it has several. A missing member -> R2LError listing the top level.
    """
    archive, dest = Path(archive), Path(dest)
    _claim(dest, archive)

    def fill(tmp: Path) -> Path:
        src = _extract_into(archive, tmp / "x", member, pick_single=True)
        if src.is_symlink() or not src.is_dir():
            raise R2LError(f"{archive}: member {member!r} is not a folder")
        return src

    atomic_folder(dest, fill)
    log.info("extracted %s from %s into %s", member or "the scene", archive, dest)
    return dest


# ------------------------------------------------------------------------------------------- scenes


def archive_path(url: str, cache_dir: Path = Path("resources/downloads")) -> Path:
    """Where :func:`fetch_scene` caches the archive of an http(s) URL: ``cache_dir / <file name of the URL>``."""
    name = PurePosixPath(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name
    if not name:
        raise R2LError(f"{url}: the URL names no file; give the archive's URL")
    return Path(cache_dir) / name


def _copy_folder(src: Path, dest: Path) -> Path:
    """Copy a local scene folder to ``dest`` via a temp folder and an atomic rename (no digest to check)."""
    log.info("copying %s to %s", src, dest)
    return atomic_folder(dest, lambda tmp: Path(shutil.copytree(src, tmp / "x")))


def fetch_scene(
    source: str,
    dest: Path,
    member: str | None = None,
    sha256: str | None = None,
    cache_dir: Path = Path("resources/downloads"),
) -> Path:
    """Put one scene folder at ``dest`` from a URL, a local archive or a local folder.

    source: ``http(s)://`` URL (downloaded into ``cache_dir``, resumable), ``file://`` URL or local path
    of an archive (used in place, no copy) or of a folder (copied; ``member`` is then a sub-folder).
    member: the scene's folder inside the archive, e.g. ``nerf_synthetic/lego``; see :func:`extract_member`.
    sha256: digest of the archive (a folder has none to check). An existing non-empty ``dest`` is taken as
    complete (this module only ever creates it complete); an empty one is filled.
    """
    dest = Path(dest)
    if _is_empty_dir(dest):
        dest.rmdir()
    if dest.is_dir():
        log.info("%s already present", dest)
        return dest
    local = _local_source(source)
    if local is None:
        archive = download(source, archive_path(source, cache_dir), sha256)
        try:
            return extract_member(archive, dest, member)
        except DataError as exc:  # a corrupt cached download: drop it so that the next run fetches it anew
            archive.unlink(missing_ok=True)
            raise DataError(archive, f"{exc.problem}; the cached download was removed, run again") from exc
    if local.is_dir():
        folder = local.joinpath(*_parts(member)) if member else local
        if not folder.is_dir():
            raise DataError(folder, f"no such scene folder (source {source!r}, member {member!r})")
        return _copy_folder(folder, dest)
    if not local.is_file():
        raise DataError(local, f"no such archive or folder (source {source!r}). {_HINT}")
    expected = _check_digest_format(sha256)
    actual = file_sha256(local) if expected else None
    if actual != expected:
        raise R2LError(f"{local}: sha256 mismatch: expected {expected}, got {actual}; fix `sha256:` or the file")
    return extract_member(local, dest, member)
