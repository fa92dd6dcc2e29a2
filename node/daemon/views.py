"""The JSON shapes the CLI prints with ``--json`` and the control API answers with (one source for both)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from node.files.add import AddResult
from node.files.listing import TreeListing, root_name
from node.store.repo import Pin, Repo
from protocol.cid import cid_to_text


def iso_time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def pin_json(pin: Pin) -> dict[str, Any]:
    return {
        "root": cid_to_text(pin.root),
        "name": pin.name,
        "kind": pin.kind,
        "size": pin.size,
        "blocks": pin.blocks,
        "stored_bytes": pin.stored,
        "added": iso_time(pin.added),
    }


def listed_pins(repo: Repo, on_damaged: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """What ``ls --json`` prints (and ``GET /v1/ls`` answers): each pin, with the name sealed in its
    root (``root_name``, opened with the key the pin keeps; None without one) and whether the pin keeps
    the key (``key_kept``). The key itself never appears."""
    return [
        pin_json(pin) | {"root_name": root_name(repo, pin), "key_kept": pin.key is not None}
        for pin in repo.pins(on_damaged=on_damaged)
    ]


def tree_json(listing: TreeListing) -> dict[str, Any]:
    """What ``ls LINK --json`` prints (and ``POST /v1/tree`` answers)."""
    return {
        "name": listing.name,
        "kind": listing.kind,
        "size": listing.size,
        "entries": [
            {"path": e.path, "kind": e.kind, "size": e.size, "executable": e.executable}
            for e in listing.entries
        ],
    }


def add_json(result: AddResult, link: str) -> dict[str, Any]:
    """What ``add --json`` prints; ``link`` is passed in because the daemon may add peer hints to it."""
    return pin_json(result.pin) | {
        "link": link,
        "new_blocks": result.new_blocks,
        "already_added": result.existing,
    }
