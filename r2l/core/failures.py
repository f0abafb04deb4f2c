"""The failed jobs of a Snakemake run, said again at the end of its console output (``onerror``).

A failing r2l job says what went wrong in one line, but Snakemake buries that line under about 20 lines of its
own. :func:`failure_lines` reads the run's Snakemake log for the failed rules and their logs, and takes from each
rule log its last ``ERROR`` line (what r2l reported) or, failing that, its last line.
"""

from __future__ import annotations

import re
from pathlib import Path

FAILED_RULE = re.compile(r"^Error in rule (\S+):$")
RULE_LOG = re.compile(r"^\s+log: (\S+)")
ERROR_LINE = re.compile(r"^\S+ \S+ ERROR (.*)$")  # r2l's log format: date, time, level, message


def failed_jobs(snakemake_log: str | Path) -> list[tuple[str, str | None]]:
    """``(rule, its log file or None)`` for each "Error in rule" block of a Snakemake log, in order."""
    jobs: list[tuple[str, str | None]] = []
    try:
        lines = Path(snakemake_log).read_text(errors="replace").splitlines()
    except OSError:
        return jobs
    for line in lines:
        rule, log = FAILED_RULE.match(line), RULE_LOG.match(line)
        if rule:
            jobs.append((rule.group(1), None))
        elif log and jobs and jobs[-1][1] is None:
            jobs[-1] = (jobs[-1][0], log.group(1).rstrip(","))
    return jobs


def last_error(rule_log: str | Path) -> str | None:
    """The last ``ERROR`` message in a rule log, else its last non-empty line; None when it cannot be read."""
    try:
        lines = [ln for ln in Path(rule_log).read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return None
    errors = [m.group(1) for m in map(ERROR_LINE.match, lines) if m]
    return errors[-1] if errors else (lines[-1].strip() if lines else None)


def failure_lines(snakemake_logs: str | Path | list[str | Path], workdir: str | Path = ".") -> list[str]:
    """One line per failed job of the run whose Snakemake log(s) these are (``onerror``'s ``log``: a list):
    ``r2l: rule NAME failed: MESSAGE (log: PATH)``; the rule logs' paths are relative to ``workdir``."""
    logs = snakemake_logs if isinstance(snakemake_logs, list | tuple) else [snakemake_logs]
    out = []
    for rule, log in [job for path in logs for job in failed_jobs(path)]:
        message = last_error(Path(workdir) / log) if log else None
        where = f" (log: {log})" if log else ""
        out.append(f"r2l: rule {rule} failed: {message or 'see Snakemake output above'}{where}")
    return out
