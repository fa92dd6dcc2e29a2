"""The daemon's log: one line per record, ``time LEVEL logger: message``, on stderr.

py-libp2p keeps its own loggers apart: on import it clears their handlers and stops them propagating,
so their warnings reached stderr through Python's last-resort handler, bare, with no time or level, as
multi-line blocks, with tracebacks for cancellations that are part of normal operation. Here they join
the daemon's log like any other record: :class:`LibraryLines` folds a library record onto one line, and
keeps its traceback only at the debug level. A command's short-lived node (``get`` without a daemon)
shows none of them: :func:`silence_libraries`.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from node.errors import DaemonError

LIBRARIES = ("libp2p", "multiaddr", "async_service")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"


class LibraryLines(logging.Filter):
    """Drop a library's records below ``floor`` (some of py-libp2p's loggers set levels of their own);
    fold the others onto one line, and drop their tracebacks unless ``tracebacks``."""

    def __init__(self, *, floor: int, tracebacks: bool) -> None:
        super().__init__()
        self.floor = floor
        self.tracebacks = tracebacks

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(LIBRARIES):
            return True
        if record.levelno < self.floor:
            return False
        if record.exc_info is not None and not self.tracebacks:
            record.exc_info = None
            record.exc_text = None
        message = record.getMessage()
        if "\n" in message:
            record.msg = " | ".join(line.strip() for line in message.splitlines() if line.strip())
            record.args = None
        return True


def silence_libraries() -> None:
    """For a command's short-lived node: the libraries' records are not for the user, whose command
    ends with one line saying what went wrong."""
    for name in LIBRARIES:
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)


def configure(level: str, stream: TextIO | None = None) -> logging.Handler:
    """Send every record at ``level`` or above to ``stream`` (stderr), libraries' from WARNING up unless
    the level is DEBUG. Calling it again replaces the handler it installed before."""
    number = logging.getLevelName(level.upper())
    if not isinstance(number, int):
        raise DaemonError(f"unknown log level {level[:20]!r}: use debug, info, warning or error")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT, DATE_FORMAT))
    debug = number <= logging.DEBUG
    floor = number if debug else max(number, logging.WARNING)
    handler.addFilter(LibraryLines(floor=floor, tracebacks=debug))
    handler.set_name("sealbox")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "sealbox"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(number)
    for name in LIBRARIES:
        library = logging.getLogger(name)
        library.setLevel(floor)
        library.propagate = True  # py-libp2p turns this off when it is imported
    return handler
