"""Build results/{scene}/viewer/: the static page that renders the exported student in the browser."""

import _require_r2l  # noqa: F401  (one clear line if r2l is not installed; first)
from r2l.report.viewer import build_viewer
from r2l.workflow import stage

with stage(snakemake) as job:
    build_viewer(snakemake.input.onnx, snakemake.output[0], cache=snakemake.params.npm_cache)
