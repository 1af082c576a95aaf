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


class _Stdout(logging.StreamHandler):
    """A handler on whatever ``sys.stdout`` is when a record is emitted."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:
        pass


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
