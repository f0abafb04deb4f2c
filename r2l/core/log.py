"""Logging and progress bars: every stage logs through the ``r2l`` logger to stderr (the rule's log)."""

from __future__ import annotations

import logging
import sys

from tqdm import tqdm

log = logging.getLogger("r2l")


def progress(total: int, initial: int = 0, desc: str = "") -> tqdm:
    """A progress bar with rate and time left, written to stderr (the rule's log under Snakemake).

    In a log file (not a terminal) the bar is redrawn every 15 s instead of every 2 s, so logs stay short.
    """
    interval = 2.0 if sys.stderr.isatty() else 15.0
    return tqdm(
        total=total, initial=initial, desc=desc, file=sys.stderr, dynamic_ncols=True, mininterval=interval, smoothing=0.05
    )


CONSOLE = {"console": True}  # ``extra=`` of a record the user must see on the console too (it changes what runs)


class ConsoleEcho(logging.Handler):
    """Echoes the records logged with ``extra=CONSOLE`` to the process's own stderr (the console, where a
    Snakemake job's stderr is the rule's log) as ``r2l: warning: MESSAGE``."""

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "console", False) and sys.__stderr__ is not None and sys.stderr is not sys.__stderr__:
            print(f"r2l: {record.levelname.lower()}: {record.getMessage()}", file=sys.__stderr__, flush=True)


def setup_logging() -> None:
    """Log r2l messages (INFO and up, with a time stamp) to stderr; those logged with ``extra=CONSOLE`` also to
    the console when stderr has been sent elsewhere (a rule's log)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr,
                        force=True)
    logging.getLogger().addHandler(ConsoleEcho())
