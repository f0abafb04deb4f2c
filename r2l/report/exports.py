"""The deployment table: every exported student beside its torch original (``results/deploy.csv``, ``.md``).

:func:`write_deploy_summary` reads the ``check.json`` files the ``export`` rule writes
(``results/{scene}/export{_NAME}/check.json``, :func:`r2l.models.export_check.export_and_check`) and writes a row
per (scene, family) with the columns :data:`DEPLOY_COLUMNS`: the ONNX file's size, its largest colour difference
from torch and the PSNR between them, how far each is from a float64 render of the same weights, and
onnxruntime's and torch's ms per frame timed in the same job.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from r2l.core.atomic import atomic_write_text
from r2l.core.errors import DataError
from r2l.report.tables import _fmt, _md_table

DEPLOY_COLUMNS = ["scene", "family", "fp16", "onnx_mb", "max_abs_diff", "psnr_vs_torch", "onnx_ms_per_frame",
                  "torch_ms_per_frame", "threads", "H", "W", "onnx_vs_fp64", "torch_vs_fp64"]
FP64_COLUMNS = DEPLOY_COLUMNS[-2:]  # not in the checks of r2l before they were measured: empty cells there
_HEADER = ["scene", "family", "weights", "ONNX (MB)", "max abs diff", "PSNR vs torch (dB)",
           "vs float64: onnxruntime / torch", "onnxruntime ms/frame", "torch ms/frame", "threads", "view"]


def deploy_row(path: str | Path) -> dict:
    """One table row from a ``check.json`` (its scene: the folder above ``export*/``); DataError naming the file
    when it is not one."""
    path = Path(path)
    try:
        check = json.loads(path.read_text())
        row = {"scene": path.parent.parent.name, "family": check["family"], "fp16": bool(check["fp16"]),
               "onnx_mb": check["size_bytes"] / 1e6}
        row.update({key: check[key] for key in DEPLOY_COLUMNS[4:-2]})
        row.update({key: check.get(key) for key in FP64_COLUMNS})
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(path, f"not an export check written by r2l ({type(err).__name__}: {err})") from err
    return row


def deploy_markdown(df: pd.DataFrame) -> str:
    """The table as Markdown, one row per exported student."""
    rows = [[str(r["scene"]), str(r["family"]), "float16" if r["fp16"] else "float32", _fmt(r["onnx_mb"], ".2f"),
             _fmt(r["max_abs_diff"], ".1e"), _fmt(r["psnr_vs_torch"], ".1f"),
             f"{_fmt(r['onnx_vs_fp64'], '.1e')} / {_fmt(r['torch_vs_fp64'], '.1e')}",
             _fmt(r["onnx_ms_per_frame"], ".1f"), _fmt(r["torch_ms_per_frame"], ".1f"), _fmt(r["threads"], "d"),
             f"{r['W']} x {r['H']}"]
            for _, r in df.iterrows()]
    intro = ("Each exported student (ONNX, `r2l export`) against the torch student it came from, on one view of its "
             "scene's camera path; both runtimes timed in the same job on the same CPU threads.")
    return f"# Exported students\n\n{intro}\n\n{_md_table(_HEADER, rows)}\n"


def write_deploy_summary(check_paths: list[str | Path], out_csv: str | Path, out_md: str | Path) -> pd.DataFrame:
    """Write the table of ``check_paths`` to ``out_csv`` (columns :data:`DEPLOY_COLUMNS`) and ``out_md``."""
    df = pd.DataFrame([deploy_row(p) for p in check_paths], columns=DEPLOY_COLUMNS)
    atomic_write_text(out_csv, df.to_csv(index=False))
    atomic_write_text(out_md, deploy_markdown(df))
    return df
