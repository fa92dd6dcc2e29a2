"""``add`` and ``get`` through a running daemon: the request as a stream of events, the progress drawn
from them, and Ctrl-C.

The request is bound to its connection (``node/daemon/transfers.py``): Ctrl-C leaves the stream, which
closes the connection, and the daemon stops the transfer at once. The CLI then asks the daemon to cancel
it by its id (in case the close was not seen yet) and waits, for at most ``CONFIRM_TIMEOUT`` seconds, for
its answer, so that the line printed says what really happened: what stays in the repo, what was pinned.
``get --detach`` instead hands the fetch to the daemon, bound to nothing, and returns at once.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from typing import Any

from node.cli.common import daemon, warn
from node.cli.output import Interrupted, Output, add_bar, fetch_status, human
from node.cli.trees import fetch_fields
from node.daemon.api_client import ApiClient, NoDaemon
from node.daemon.errors import ApiError, DaemonError
from node.errors import NodeError
from protocol.link import ShareLink

CONFIRM_TIMEOUT = 20.0  # seconds to wait for the daemon to confirm a cancel (it waits up to 10 itself)

Show = Callable[[Mapping[str, Any]], None]


def daemon_add(args: argparse.Namespace, daemon: ApiClient, request: dict[str, Any]) -> dict[str, Any]:
    """Ask the daemon to add ``request["path"]``, drawing its progress; print its warnings; return what
    ``add --json`` prints. Raises NoDaemon when no daemon runs."""
    with add_bar(args) as show:
        data = _follow(daemon, "/v1/add", request, show, _add_interrupted)
    for message in data.pop("warnings", []):
        warn(str(message))
    data.pop("event", None)
    data.pop("id", None)
    return data


def daemon_fetch(args: argparse.Namespace, daemon: ApiClient, link: ShareLink) -> None:
    """Ask the daemon to fetch ``link``, drawing its progress on a terminal."""
    body = {"link": str(link), "seed": not args.no_seed, **fetch_fields(args)}  # keep_key, path
    with fetch_status(args, link) as show:
        _follow(daemon, "/v1/fetch", body, show, _fetch_interrupted)


def detach_fetch(args: argparse.Namespace, link: ShareLink) -> None:
    """``get --detach``: the daemon fetches ``link`` on its own; print the transfer's id at once."""
    body = {"link": str(link), "seed": not args.no_seed, "detach": True, **fetch_fields(args)}
    try:
        data = daemon(args).call("POST", "/v1/fetch", body)
    except NoDaemon:
        raise DaemonError(
            "get --detach hands the fetch to a daemon, and none runs on this repo: start one with"
            " 'sealbox daemon'"
        ) from None
    text = (
        f"fetching in the daemon as transfer {data['id']}: follow it with 'sealbox transfers',"
        f" stop it with 'sealbox transfers cancel {data['id']}'; once it is done, the same get writes"
        " the output from the repo"
    )
    Output(args).emit(data, text)


def _follow(
    daemon: ApiClient,
    path: str,
    body: dict[str, Any],
    show: Show,
    interrupted: Callable[[dict[str, Any] | str | None], str],
) -> dict[str, Any]:
    """Send a long request and follow its events to the last; the ``done`` event is returned, an
    ``error`` raised. On Ctrl-C the connection is closed (the daemon stops the transfer), the cancel is
    confirmed by id, and :class:`Interrupted` carries the line ``interrupted`` makes of the answer."""
    transfer: str | None = None
    try:
        with daemon.stream("POST", path, body) as events:
            for event in events:
                kind = event.get("event")
                if kind == "started":
                    transfer = str(event.get("id"))
                elif kind == "progress":
                    show(event)
                elif kind == "done":
                    return event
                elif kind == "error":
                    status = event.get("status")
                    raise ApiError(str(event.get("error")), status if isinstance(status, int) else 500)
        raise DaemonError("the daemon ended the request without an answer")
    except KeyboardInterrupt:
        raise Interrupted(interrupted(_confirm(daemon, transfer))) from None


def _confirm(daemon: ApiClient, transfer: str | None) -> dict[str, Any] | str | None:
    """The daemon's word on the transfer once stopped: its outcome, or why it could not be had (None:
    the daemon had not started it yet)."""
    if transfer is None:
        return None
    try:
        outcome: dict[str, Any] = daemon.call(
            "POST", "/v1/transfers/cancel", {"id": transfer}, timeout=CONFIRM_TIMEOUT
        )
    except NodeError as exc:
        return str(exc)
    return outcome


def _unconfirmed(what: str, outcome: dict[str, Any] | str) -> str | None:
    """The line when the daemon's answer does not show the transfer stopped by this cancel."""
    if isinstance(outcome, str):
        return f"interrupted, but the daemon did not confirm that it stopped the {what} ({outcome})"
    if outcome.get("state") == "running":
        tid = outcome.get("id")
        return f"interrupted, but the daemon's {what} {tid} has not stopped yet: see 'sealbox transfers'"
    return None


def _fetch_interrupted(outcome: dict[str, Any] | str | None) -> str:
    if outcome is None:
        return "interrupted before the daemon started the fetch; nothing was fetched"
    if (line := _unconfirmed("fetch", outcome)) is not None:
        return line
    assert isinstance(outcome, dict)
    if outcome.get("state") == "done":
        return "interrupted: the fetch had already ended in the daemon; get again writes it from the repo"
    stored = int(outcome.get("done") or 0) + int(outcome.get("held") or 0)
    if not stored:
        return "interrupted: the daemon stopped the fetch; nothing was fetched yet"
    return (
        f"interrupted: the daemon stopped the fetch; {human(stored)} already fetched stay in the repo"
        " and a later get resumes from them"
    )


def _add_interrupted(outcome: dict[str, Any] | str | None) -> str:
    if outcome is not None and (line := _unconfirmed("add", outcome)) is not None:
        return line
    if isinstance(outcome, dict) and outcome.get("state") == "done":
        return (
            f"interrupted: the add had already ended in the daemon: {outcome.get('root')} is pinned"
            " ('sealbox ls'); its link was not printed"
        )
    return "interrupted: the daemon stopped the add; nothing was pinned and no link was made"
