"""The daemon's log: one line per record, ``time LEVEL logger: message``, on stderr.

py-libp2p keeps its own loggers apart: on import it clears their handlers and stops them propagating,
so their warnings reached stderr through Python's last-resort handler, bare, with no time or level, as
multi-line blocks, with tracebacks for cancellations that are part of normal operation. Here they join
the daemon's log like any other record: :class:`LibraryLines` folds a library record onto one line,
keeps its traceback only at the debug level, and shows the routine ones (a remote peer did not answer)
only at that level too. A command's short-lived node (``get`` without a daemon)
shows none of them: :func:`silence_libraries`. (What py-libp2p 0.8.1 logs and why: docs/py-libp2p.md, "Logs".)
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from node.daemon.errors import DaemonError

LIBRARIES = ("libp2p", "multiaddr", "async_service")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"


# py-libp2p's records of a remote peer that did not answer or went away: routine in a peer-to-peer network
# (a 20-node testnet logged ~400 in a minute), and each is also raised to the caller, which decides what
# it means. Shown only at the debug level.
ROUTINE = (
    ("libp2p.host.basic_host", "Failed to open stream to peer"),
    ("libp2p.protocol_muxer.multiselect_client", "MultiselectClient handshake"),
    ("libp2p.transport.tcp.tcp", "Failed to open TCP stream"),
    ("libp2p.network.swarm", "[ADDCONN_FAIL]"),
    ("libp2p.kad_dht.peer_routing", "Failed to open stream to"),
    ("libp2p.kad_dht.provider_store", "Failed to send ADD_PROVIDER"),
    ("libp2p.kad_dht.provider_store", "Error sending ADD_PROVIDER"),
    ("libp2p.kad_dht.provider_store", "Error getting providers from"),
)


def _routine(record: logging.LogRecord) -> bool:
    message = record.msg
    return isinstance(message, str) and any(
        record.name == name and message.startswith(start) for name, start in ROUTINE
    )


class LibraryLines(logging.Filter):
    """Drop a library's records below ``floor`` (some of py-libp2p's loggers set levels of their own),
    and its :data:`ROUTINE` ones unless ``debug``; fold the others onto one line, and drop their
    tracebacks unless ``debug``."""

    def __init__(self, *, floor: int, debug: bool) -> None:
        super().__init__()
        self.floor = floor
        self.debug = debug

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(LIBRARIES):
            return True
        if record.levelno < self.floor:
            return False
        if not self.debug and _routine(record):
            return False
        if record.exc_info is not None and not self.debug:
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
    handler.addFilter(LibraryLines(floor=floor, debug=debug))
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
