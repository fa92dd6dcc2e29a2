"""The daemon's log: py-libp2p's records join it as single structured lines, tracebacks only at debug."""

from __future__ import annotations

import importlib
import inspect
import io
import logging
import re
from collections.abc import Iterator

import pytest
import trio

import node.net.host  # noqa: F401 - imports libp2p, which resets its loggers on import
from node.daemon import logs
from node.daemon.errors import DaemonError

LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: \S")


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    libraries = {
        name: (logging.getLogger(name).level, logging.getLogger(name).propagate) for name in logs.LIBRARIES
    }
    yield
    for handler in [h for h in root.handlers if h.get_name() == "sealbox"]:
        root.removeHandler(handler)
    root.setLevel(saved[0])
    for name, (level, propagate) in libraries.items():
        logging.getLogger(name).setLevel(level)
        logging.getLogger(name).propagate = propagate


def _cancelled() -> BaseException:
    async def cancelled_inside() -> BaseException:
        with trio.CancelScope() as scope:
            scope.cancel()
            try:
                await trio.sleep_forever()
            except trio.Cancelled as exc:
                return exc
        raise AssertionError("not cancelled")

    return trio.run(cancelled_inside)


def _log_library_noise() -> None:
    library = logging.getLogger("libp2p.host.basic_host")
    library.error("Stream handler failed for %s:\n  Error: %s\n  Timeout: 30s", "QmPeer", "reset")
    exc = _cancelled()
    library.error("add_conn failed for peer QmPeer: %r", exc, exc_info=(type(exc), exc, exc.__traceback__))
    logging.getLogger("node.daemon.main").info("ready")


def test_library_records_become_one_structured_line_each() -> None:
    out = io.StringIO()
    logs.configure("info", out)
    _log_library_noise()
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert all(LINE.match(line) for line in lines), lines
    assert lines[0].endswith(
        "libp2p.host.basic_host: Stream handler failed for QmPeer: | Error: reset | Timeout: 30s"
    )
    assert "add_conn failed for peer QmPeer: Cancelled(" in lines[1]
    assert lines[2].endswith("INFO node.daemon.main: ready")


def test_tracebacks_are_kept_at_the_debug_level() -> None:
    out = io.StringIO()
    logs.configure("debug", out)
    _log_library_noise()
    text = out.getvalue()
    assert "Traceback (most recent call last)" in text
    assert "trio.Cancelled" in text


def test_library_chatter_below_warning_is_hidden_unless_debugging() -> None:
    out = io.StringIO()
    logs.configure("info", out)
    logging.getLogger("libp2p.network.swarm").info("dialled QmPeer")
    chatty = logging.getLogger("libp2p.network.auto_connector")
    level = chatty.level
    chatty.setLevel(logging.INFO)  # as py-libp2p does for some of its loggers
    try:
        chatty.info("initiating 17 new dials")
    finally:
        chatty.setLevel(level)
    logging.getLogger("node.net.dht").info("announced")
    assert [line.split(" ", 2)[2] for line in out.getvalue().splitlines()] == ["node.net.dht: announced"]


def test_a_remote_peer_that_did_not_answer_is_shown_only_when_debugging() -> None:
    routine = logging.getLogger("libp2p.host.basic_host")
    for level in ("info", "debug"):
        out = io.StringIO()
        logs.configure(level, out)
        routine.error("Failed to open stream to peer QmPeer:\n  Error: protocol read failed")
        logging.getLogger("libp2p.kad_dht.provider_store").warning("Failed to send ADD_PROVIDER to QmPeer")
        # a get through a daemon whose providers were all gone wrote one per lookup round
        logging.getLogger("libp2p.kad_dht.provider_store").warning(
            "Error getting providers from QmPeer: Peer QmPeer recently failed all addresses (negative cache)"
        )
        logging.getLogger("libp2p.kad_dht.kad_dht").warning("Rejected a record: too large")
        shown = [line.split(" ", 2)[2] for line in out.getvalue().splitlines()]
        expected = ["libp2p.kad_dht.kad_dht: Rejected a record: too large"]
        if level == "debug":
            expected = [
                "libp2p.host.basic_host: Failed to open stream to peer QmPeer: | Error: protocol read failed",
                "libp2p.kad_dht.provider_store: Failed to send ADD_PROVIDER to QmPeer",
                "libp2p.kad_dht.provider_store: Error getting providers from QmPeer: Peer QmPeer recently"
                " failed all addresses (negative cache)",
                *expected,
            ]
        assert shown == expected


def test_configuring_again_replaces_the_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    logs.configure("info", first)
    logs.configure("warning", second)
    logging.getLogger("node.daemon.main").warning("once")
    assert first.getvalue() == ""
    assert second.getvalue().count("once") == 1


def test_an_unknown_level_is_refused() -> None:
    with pytest.raises(DaemonError, match="unknown log level"):
        logs.configure("chatty")


def test_the_routine_library_records_are_still_worded_so() -> None:
    """``logs.ROUTINE`` names py-libp2p 0.8.1's records by logger and wording (docs/py-libp2p.md, "Logs"):
    each logger is a library module that still holds the wording, or the filter would let them through."""
    for name, start in logs.ROUTINE:
        source = inspect.getsource(importlib.import_module(name))
        assert start in source, (name, start)
