"""Fetch a dataset scene (URL or local archive) and move it atomically into resources/scenes/."""

import _require_r2l  # noqa: F401  (one clear line if r2l is not installed; first)
from pathlib import Path

from r2l.data.download import fetch_scene
from r2l.workflow import stage

with stage(snakemake) as job:
    entry = snakemake.params.entry
    fetch_scene(entry["url"], Path(snakemake.output[0]), member=entry.get("member"),
                sha256=entry.get("sha256"), cache_dir=Path("resources/downloads"))
