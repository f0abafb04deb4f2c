"""Make results/{scene}/pseudo_data one view store of its part folders (meta.json lists their shards)."""

import _require_r2l  # noqa: F401  (one clear line if r2l is not installed; first)
from pathlib import Path

from r2l.stages.pseudo_data import gather_pseudo_data
from r2l.workflow import stage

with stage(snakemake) as job:
    store = Path(snakemake.output.meta).parent
    gather_pseudo_data(store, [Path(p).parent for p in snakemake.input.parts])
