"""``add`` and ``get`` through a running daemon: the request, the progress shown meanwhile, warnings."""

from __future__ import annotations

import argparse
import threading
from typing import Any

from node.cli.common import warn
from node.cli.output import PROGRESS_INTERVAL, fetch_bar, shows_progress
from node.cli.trees import fetch_fields
from node.daemon.api_client import ApiClient
from node.daemon.errors import DaemonError
from node.errors import NodeError
from protocol.cid import cid_to_text
from protocol.link import ShareLink


def daemon_add(args: argparse.Namespace, daemon: ApiClient, request: dict[str, Any]) -> dict[str, Any]:
    """Ask the daemon to add ``request["path"]``; print its warnings; return what ``add --json`` prints.
    Raises NoDaemon when no daemon runs."""
    data: dict[str, Any] = daemon.call("POST", "/v1/add", request, timeout=None)
    for message in data.pop("warnings", []):
        warn(str(message))
    return data


def daemon_fetch(args: argparse.Namespace, daemon: ApiClient, link: ShareLink) -> None:
    """Ask the daemon to fetch ``link``; on a terminal, show its progress (asked of the daemon a few
    times a second while the fetch runs in a thread)."""
    body = {"link": str(link), "seed": not args.no_seed, **fetch_fields(args)}  # keep_key, path
    if not shows_progress(args):
        daemon.call("POST", "/v1/fetch", body, timeout=None)
        return
    outcome: list[BaseException | dict[str, Any]] = []

    def fetch() -> None:
        try:
            outcome.append(daemon.call("POST", "/v1/fetch", body, timeout=None))
        except (NodeError, OSError) as exc:  # handed to the main thread, which raises it
            outcome.append(exc)

    worker = threading.Thread(target=fetch, name="fetch", daemon=True)
    root = cid_to_text(link.root)
    with fetch_bar(args, link) as show:
        worker.start()
        while worker.is_alive():
            worker.join(PROGRESS_INTERVAL)  # a refresh rate for the bar, not a wait for an event
            try:
                fetches = daemon.call("GET", "/v1/fetching", timeout=PROGRESS_INTERVAL * 4)["fetches"]
                show(sum(int(f["bytes"]) for f in fetches if f["root"] == root))
            except (NodeError, KeyError, TypeError, ValueError):
                continue  # the bar is a nicety: the fetch itself reports any failure
        if not outcome:
            raise DaemonError("the fetch through the daemon ended without an answer")
        result = outcome[0]
        if isinstance(result, BaseException):
            raise result
        show(int(result.get("bytes", 0)) if isinstance(result, dict) else 0)
