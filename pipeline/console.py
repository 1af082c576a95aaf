"""Messages for the person at the terminal: what a run, a worker or a training is doing.

Library code reports progress and results through the ``rts.console`` logger instead of
printing. ``rts`` (:func:`pipeline.cli.main`) shows its records on standard output as plain
lines (diagnostics go to standard error through the root logger); a program that calls the
library sees them through its own logging configuration, or not at all.
"""

from __future__ import annotations

import logging
import sys

log = logging.getLogger("rts.console")


class _Stdout(logging.Handler):
    """Writes each record to whatever ``sys.stdout`` is when it is emitted (so a redirected or
    captured stdout gets it too)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stdout.write(self.format(record) + "\n")
            sys.stdout.flush()
        except Exception:  # noqa: BLE001 - logging's own contract: report, never raise
            self.handleError(record)


def attach() -> None:
    """Show console messages on standard output, once (``rts`` calls this)."""
    if not any(isinstance(h, _Stdout) for h in log.handlers):
        h = _Stdout()
        h.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(h)
    log.setLevel(logging.INFO)
    log.propagate = False


def say(message: str) -> None:
    """One line for the terminal."""
    log.info(message)
