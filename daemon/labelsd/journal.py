"""The service's logging: to stderr, which under systemd is the journal.

Under systemd ($JOURNAL_STREAM set) each line starts with `<N>`, the syslog
priority journald reads, and carries no timestamp (journald adds its own); from
a terminal, lines carry a time and a level name. Only the entry point calls
`configure_logging`; every module logs through `logging.getLogger(__name__)`.

A record is one line, whatever its arguments hold: a file name with a newline, a
carriage return or an escape sequence in it cannot start a line (or a journal entry) of
its own, nor move the cursor over what the line said. Names are logged through
`labelsd.paths.shown`; `LineFormatter` escapes the control characters of the whole
message (`labelsd.paths.one_line`) and of each exception's message in a traceback, so a
call that forgot `shown` is safe too. A traceback keeps its own lines.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback

from labelsd.paths import one_line

_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
             logging.CRITICAL: 2}


class LineFormatter(logging.Formatter):
    """A record's message on one line (control characters escaped), and a traceback
    in which no exception's message starts a line."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        return one_line(super().formatMessage(record))

    def formatException(self, ei) -> str:  # noqa: N802
        text = super().formatException(ei)
        # Each exception's own text (its type, message and notes), as the traceback holds
        # it, escaped; the traceback's structure (frames, source lines) is labelsd's code.
        seen, error = set(), ei[1]
        while error is not None and id(error) not in seen:
            seen.add(id(error))
            own = "".join(traceback.format_exception_only(type(error), error)).rstrip("\n")
            text = text.replace(own, one_line(own))
            error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
        return "\n".join(one_line(line) for line in text.split("\n"))

    def formatStack(self, stack_info: str) -> str:  # noqa: N802
        return "\n".join(one_line(line) for line in stack_info.split("\n"))


class JournalFormatter(LineFormatter):
    """`<6>name: message`: journald reads the <N> prefix as the priority and adds
    its own timestamp, so none here. A traceback's lines are entries of their own,
    at the record's priority."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        prio = _PRIORITY.get(record.levelno, 6)
        return "\n".join(f"<{prio}>{line}" for line in text.split("\n"))


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(LineFormatter(
            "%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    if level != "debug":
        # TensorFlow's C++ and absl chatter, and watchdog's internals
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        for name in ("tensorflow", "absl", "watchdog", "h5py"):
            logging.getLogger(name).setLevel(logging.WARNING)


__all__ = ["JournalFormatter", "LineFormatter", "configure_logging"]
