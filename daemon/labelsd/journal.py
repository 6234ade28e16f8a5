"""The service's logging: to stderr, which under systemd is the journal.

Under systemd ($JOURNAL_STREAM set) each line starts with `<N>`, the syslog
priority journald reads, and carries no timestamp (journald adds its own); from
a terminal, lines carry a time and a level name. Only the entry point calls
`configure_logging`; every module logs through `logging.getLogger(__name__)`.
"""

from __future__ import annotations

import logging
import os
import sys

_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
             logging.CRITICAL: 2}


class JournalFormatter(logging.Formatter):
    """`<6>name: message`: journald reads the <N> prefix as the priority and adds
    its own timestamp, so none here."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        prio = _PRIORITY.get(record.levelno, 6)
        return "\n".join(f"<{prio}>{line}" for line in text.splitlines())


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    if level != "debug":
        # TensorFlow's C++ and absl chatter, and watchdog's internals
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        for name in ("tensorflow", "absl", "watchdog", "h5py"):
            logging.getLogger(name).setLevel(logging.WARNING)


__all__ = ["JournalFormatter", "configure_logging"]
