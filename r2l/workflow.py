"""Glue between Snakemake scripts and the package: logging to the rule's log, config, scene loading.

The scripts in ``workflow/scripts`` stay thin: ``with stage(snakemake) as job:`` sends stderr and the
``r2l`` logger to the rule's log, turns an :class:`~r2l.core.errors.R2LError` into one clear line and a
non-zero exit, and offers ``job.section(name)`` (a stage's settings for this scene) and
``job.scene()`` (the scene loaded as the config says). The config helpers the Snakefile needs too live in
:mod:`r2l.core.config` (torch-free); this module is for the jobs.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from r2l.core.atomic import atomic_write_json, write_error
from r2l.core.checkpoint import CHECKPOINT_GLOB
from r2l.core.config import scene_identity, scene_settings, scene_source_dir, stage_section
from r2l.core.digest import file_sha256, files_digest
from r2l.core.errors import R2LError
from r2l.core.lock import FolderLock, remove_stale_temps
from r2l.core.log import setup_logging
from r2l.data.registry import load_scene
from r2l.data.scene import Scene

log = logging.getLogger("r2l")


def scene_from_config(config: dict, scene: str, folder: str | Path | None = None) -> Scene:
    """Load ``scene`` as its config entry says (format, resolution, factor, background, test_skip).

    A photos scene is read as the format the colmap rule wrote (``r2l_colmap.json``: llff or blender).
    ``layout: unbounded`` makes a Blender-format scene unbounded (:func:`r2l.data.registry.unbounded_by_hand`).
    """
    entry = scene_settings(config, scene)
    fmt = entry["format"]
    if fmt == "builtin":
        fmt = "llff" if entry["builtin"]["layout"] == "forward_facing" else "blender"
    return load_scene(
        fmt,
        folder or scene_source_dir(config, scene),
        name=scene,
        resolution=entry["resolution"],
        factor=entry["factor"],
        background=tuple(entry["background"]),
        test_skip=entry["test_skip"],
        llff_hold=entry["llff_hold"],
        resize_order=entry["resize_order"],
        layout=entry["layout"],
    )


def inside_workdir(path: str | Path) -> Path:
    """``path``, checked to lie inside the working directory (where r2l writes everything); R2LError if not.

    Scene names are checked by the schema; this is the one place that checks every path a job writes.
    """
    root = Path.cwd().resolve()
    if not Path(path).resolve().is_relative_to(root):
        raise R2LError(f"{path}: refusing to write outside the working directory {root} (check scene names and paths)")
    return Path(path)


DIGESTS = Path("resources") / "digests"  # per-scene caches of file sizes, times and sha256s

# Settings that may change between runs without invalidating a stage's checkpoints.
RESUMABLE_KEYS = ("steps", "val_every", "val_views", "ckpt_every", "log_every", "device", "chunk")


def prepare_resume_dir(resume_dir: str | Path, sections: dict[str, dict], inputs: list[str | Path]) -> Path:
    """Keep a stage's checkpoints only if they were made with the same settings and input files.

    sections: the settings the stage depends on, by name. Changing anything in them but
    :data:`RESUMABLE_KEYS` (more steps continue the old run), or changing an input file (a new teacher, new
    pseudo-data), removes the old checkpoints, so a rerun never resumes stale weights.
    """
    resume_dir = Path(resume_dir)
    identity = {
        "settings": {name: {k: v for k, v in sec.items() if k not in RESUMABLE_KEYS} for name, sec in sections.items()},
        "inputs": {str(p): file_sha256(p) for p in inputs},
    }
    identity = json.loads(json.dumps(identity, sort_keys=True, default=str))
    path = resume_dir / "identity.json"
    stale = sorted(resume_dir.glob(CHECKPOINT_GLOB))
    if stale and (not path.exists() or json.loads(path.read_text()) != identity):
        log.warning("settings or inputs changed since the checkpoints in %s were written (or are unknown): "
                    "starting over (%d checkpoints removed)", resume_dir, len(stale))
        for ckpt in stale:
            ckpt.unlink()
    atomic_write_json(path, identity)
    return resume_dir


@dataclass
class Job:
    """What a script needs from its Snakemake job."""

    config: dict
    scene_name: str
    smk: object
    locks: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    loaded: Scene | None = None  # the scene, once :meth:`scene` has loaded it

    def lock(self, folder: str | Path) -> Path:
        """Hold ``folder``'s lock until the job ends (R2LError if another job holds it), then remove the temp
        files of killed writers from it."""
        folder = inside_workdir(folder)
        self.locks.enter_context(FolderLock(folder))
        remove_stale_temps(folder)
        return folder

    def section(self, stage: str) -> dict:
        """The stage's settings for this scene (the rule's ``settings`` param where it has one)."""
        settings = getattr(self.smk.params, "settings", None)
        if settings and stage in settings:
            return settings[stage]
        return stage_section(self.config, stage, self.scene_name)

    def resume_dir(self, stages: tuple[str, ...], inputs: list[str | Path] = ()) -> Path:
        """The rule's resume folder, emptied first if the ``stages``' settings or ``inputs`` changed."""
        sections = {stage: self.section(stage) for stage in stages}
        sections["scene"] = scene_identity(self.config, self.scene_name)
        if self.loaded is not None:  # a stage that reads the scene resumes only on the same bytes
            sections["data"] = {"sha256": self.loaded.digest}
        return prepare_resume_dir(self.lock(self.smk.params.resume_dir), sections, list(inputs))

    def scene(self) -> Scene:
        """The job's scene as the config says, with the digest of its files (cached in resources/digests/)."""
        folder = getattr(self.smk.input, "scene", None)
        scene = scene_from_config(self.config, self.scene_name, folder)
        scene.digest = files_digest(scene.source_files(), inside_workdir(DIGESTS / f"{self.scene_name}.json"))
        self.loaded = scene
        return scene


def use_threads(threads: int | None) -> None:
    """Give torch the job's ``threads:`` (what Snakemake or SLURM granted), so it does not take every core."""
    if threads:
        torch.set_num_threads(max(1, int(threads)))
        log.info("torch uses %d CPU thread(s)", torch.get_num_threads())


def attempt_log_path(log_path: Path) -> Path:
    """Where this attempt's copy of the rule's log goes: ``{folder}/attempts/{name}.{time}.log``.

    Snakemake deletes a rule's log before it reruns the rule, so the log of a killed attempt would be lost;
    its copy under ``attempts/`` stays.
    """
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    return log_path.parent / "attempts" / f"{log_path.stem}.{stamp}.{os.getpid()}.log"


class Tee:
    """A text stream writing to several streams (the rule's log and this attempt's copy)."""

    def __init__(self, *streams):
        self.streams = streams

    def write(self, text: str) -> int:
        for s in self.streams:
            s.write(text)
        return len(text)

    def flush(self) -> None:
        for s in self.streams:
            s.flush()

    def isatty(self) -> bool:
        return False


@contextlib.contextmanager
def stage(smk):
    """Run a stage inside a Snakemake script: log to the rule's log; user errors as one line, exit 1."""
    for path in [*smk.log, *smk.output]:
        inside_workdir(path)  # before anything is opened or written
    log_path = Path(smk.log[0])
    attempt = attempt_log_path(log_path)
    attempt.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", buffering=1) as stream, open(attempt, "a", buffering=1) as copy:
        sys.stderr = Tee(stream, copy)
        setup_logging()
        use_threads(getattr(smk, "threads", None))
        job = Job(config=smk.config, scene_name=smk.wildcards.get("scene", ""), smk=smk)
        try:
            with job.locks:
                yield job
        except (R2LError, OSError) as err:
            if isinstance(err, OSError):  # a write outside the atomic writers: one line, if one the user can fix
                err = write_error(err.filename or "a file of this job", err)
                if err is None:
                    raise
            log.error("%s", err)
            print(f"r2l: {err}", file=sys.__stderr__)
            sys.exit(1)
        finally:
            sys.stderr = sys.__stderr__
