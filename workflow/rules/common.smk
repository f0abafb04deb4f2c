# Config handling and input functions shared by every stage. Everything imported here is torch-free (r2l.core:
# PyYAML, jsonschema and the standard library), so a Snakemake environment without r2l's dependencies can
# parse the workflow and drive `--sdm conda`.

import re
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

from r2l.core.config import (
    compared_families,
    family_section,
    scene_identity,
    scene_settings,
    scene_source_dir,
    stage_section,
)
from r2l.core.failures import failure_lines
from r2l.core.imagefiles import list_images

SCENES = list(config["scenes"])
RUN_SCENES = config.get("run_scenes") or SCENES
VIDEO = "results/{scene}/video.mp4"  # MP4 on every machine: imageio-ffmpeg's wheel carries ffmpeg


wildcard_constraints:
    extra="(_[a-z0-9]+)?",  # "" for a scene's own student family, "_NAME" for one of student.compare


def scenes_where(test):
    """A wildcard constraint matching exactly the scenes whose config entry passes ``test``."""
    names = [name for name, entry in config["scenes"].items() if test(entry)]
    return "|".join(re.escape(name) for name in names) or "(?!)"


BUILTIN_SCENES = scenes_where(lambda entry: entry["format"] == "builtin")
URL_SCENES = scenes_where(lambda entry: "url" in entry)
PHOTO_SCENES = scenes_where(lambda entry: entry["format"] == "photos")


def scene_dir(wildcards):
    """The scene's folder: its configured ``path:`` or the one the builtin/download rule makes."""
    return str(scene_source_dir(config, wildcards.scene))


def photos_dir(wildcards):
    """The folder of a photos scene's photos (its ``path:``)."""
    return config["scenes"][wildcards.scene]["path"]


def photo_files(wildcards):
    """The photos themselves, so that changing one reruns COLMAP (none yet if the folder is missing)."""
    folder = Path(photos_dir(wildcards))
    return [str(p) for p in list_images(folder)] if folder.is_dir() else []


def colmap_settings(wildcards):
    """What the colmap rule's output depends on, as a ``params:`` entry (a change reruns COLMAP)."""
    entry = scene_settings(config, wildcards.scene)
    scene = {key: entry[key] for key in ("path", "layout", "factor", "llff_hold")}
    return {"scene": scene, "colmap": stage_section(config, "colmap", wildcards.scene)}


def scene_entry(wildcards):
    """The scene's config entry with ``scene_defaults`` filled in, without its stage sections."""
    return scene_identity(config, wildcards.scene)


def settings(*stages):
    """A rule's settings for its scene as a ``params:`` entry, so that changing them reruns the rule."""

    def for_scene(wildcards):
        out = {stage: stage_section(config, stage, wildcards.scene) for stage in stages}
        return {"scene": scene_identity(config, wildcards.scene), **out}

    return for_scene


def student_settings(*stages):
    """``settings(*stages)`` for the student of the job's family (``{extra}``): its ``student`` section names
    that family and has no ``compare`` (r2l.core.config.family_section)."""
    of_scene = settings(*stages)

    def for_job(wildcards):
        out = of_scene(wildcards)
        out["student"] = family_section(out["student"], wildcards.extra)
        return out

    return for_job


def compared_files(scene, stages, name):
    """``{folder: path}`` of file ``name`` in the folders (``student_NAME``, ``finetuned_NAME``) of a scene's
    compared student families at ``stages``."""
    return {
        f"{stage}_{family}": f"results/{scene}/{stage}_{family}/{name}"
        for family in compared_families(config, scene)
        for stage in stages
    }


def compared_models(stage):
    """The model files of a scene's compared student families at ``stage`` (student or finetuned)."""

    def for_scene(wildcards):
        return list(compared_files(wildcards.scene, [stage], "model.pt").values())

    return for_scene


def compared_histories(wildcards):
    """The history.csv files of a scene's compared student families, by name (``student_NAME``, ...)."""
    return compared_files(wildcards.scene, ["student", "finetuned"], "history.csv")


def pseudo_parts(wildcards):
    """The part markers the pseudo-data store of a scene is gathered from: one per job of ``pseudo_data.jobs``
    (more jobs than shards is an error: some jobs would have nothing to render)."""
    section = stage_section(config, "pseudo_data", wildcards.scene)
    jobs = section["jobs"]
    n_shards = -(-section["n_views"] // section["views_per_shard"])
    if jobs > n_shards:
        raise WorkflowError(
            f"scene {wildcards.scene}: pseudo_data.jobs is {jobs} but its {section['n_views']} views make only "
            f"{n_shards} shards of {section['views_per_shard']}: lower jobs or views_per_shard"
        )
    return expand(
        "results/{scene}/pseudo_data/part_{part}/part.json",
        scene=wildcards.scene,
        part=range(jobs),
    )


def existing_part(wildcards):
    """No input: it stops a request for a pseudo-data part that ``pseudo_data.jobs`` does not make, when the DAG
    is built (before Snakemake creates the part's folder)."""
    jobs = stage_section(config, "pseudo_data", wildcards.scene)["jobs"]
    if int(wildcards.part) >= jobs:
        raise WorkflowError(
            f"scene {wildcards.scene}: pseudo-data part {wildcards.part} does not exist: pseudo_data.jobs is "
            f"{jobs} (parts 0 to {jobs - 1})"
        )
    return []


def paper_scenes(wildcards):
    """Which of R2L's published scenes each run scene is (None: matched by name)."""
    return {
        name: scene_settings(config, name).get("paper_scene") for name in RUN_SCENES
    }


def final_outputs():
    """The targets of the default run: every stage's product for every scene (every model file too, so that
    one deleted is trained again), then the summary."""
    per_scene = [
        "results/{scene}/metrics.csv",
        "results/{scene}/comparison.png",
        "results/{scene}/curves.png",
        VIDEO,
        "results/{scene}/teacher/model.pt",
        "results/{scene}/student/model.pt",
        "results/{scene}/finetuned/model.pt",
    ]
    compared = [
        path
        for scene in RUN_SCENES
        for path in compared_files(scene, ["student", "finetuned"], "model.pt").values()
    ]
    return (
        expand(per_scene, scene=RUN_SCENES)
        + compared
        + deploy_outputs()
        + ["results/summary.md"]
    )


def deploy_checks(wildcards=None):
    """The check.json of every finetuned student of every run scene (the export rule's), primary first."""
    out = []
    for scene in RUN_SCENES:
        out += [f"results/{scene}/export/check.json"]
        out += compared_files(scene, ["export"], "check.json").values()
    return out


def deploy_outputs():
    """What the ``deploy:`` section asks for: every finetuned student's ONNX file and check with their table, the
    viewer, its screenshot (each implies the ones before it)."""
    wanted = config["deploy"]
    viewer = wanted["viewer"] or wanted["screenshot"]
    out = []
    if wanted["export"] or viewer:
        out += expand("results/{scene}/export/model.onnx", scene=RUN_SCENES)
        out += deploy_checks() + ["results/deploy.md"]
    out += expand("results/{scene}/viewer", scene=RUN_SCENES) if viewer else []
    out += (
        expand("results/{scene}/viewer.png", scene=RUN_SCENES)
        if wanted["screenshot"]
        else []
    )
    return out


def job_threads(stage):
    """A rule's ``threads:`` from the config's ``resources.{stage}`` (Snakemake caps it at ``--cores`` locally)."""
    return config["resources"][stage]["threads"]


def job_resources(stage):
    """A rule's ``resources:`` from the config's ``resources.{stage}``: ``gpu`` (the count, which is what
    ``--resources gpu=G`` limits on one machine and what the SLURM plugin turns into ``--gpus``), ``mem_mb`` and
    ``runtime`` (minutes)."""
    entry = config["resources"][stage]
    return {
        "gpu": entry["gpus"],
        "mem_mb": entry["mem_mb"],
        "runtime": entry["runtime"],
    }


onerror:
    # the failed jobs' r2l lines again, below Snakemake's own report of them
    print("\n".join(failure_lines(log)), file=sys.stderr)
