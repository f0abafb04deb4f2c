"""Export one finetuned student to ONNX and write how it compares with torch (check.json; docs/export.md)."""

import _require_r2l  # noqa: F401  (one clear line if r2l is not installed; first)
from r2l.core.atomic import atomic_write_json
from r2l.models.export_check import check_line, export_and_check
from r2l.workflow import log, stage

with stage(snakemake) as job:
    check = export_and_check(snakemake.input.model, snakemake.output.onnx, snakemake.params.fp16,
                             threads=snakemake.threads)
    log.info("%s", check_line(check))
    atomic_write_json(snakemake.output.check, check)
