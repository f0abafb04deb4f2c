"""results/{scene}/viewer.png: the viewer at its test pose, taken by headless Chromium."""

import _require_r2l  # noqa: F401  (one clear line if r2l is not installed; first)
from r2l.report.viewer import screenshot
from r2l.workflow import stage

with stage(snakemake) as job:
    screenshot(snakemake.input[0], snakemake.output[0])
