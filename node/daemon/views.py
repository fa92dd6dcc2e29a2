"""The JSON shapes the CLI prints with ``--json`` and the control API answers with (one source for both)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from node.files.add import AddResult
from node.store.repo import Pin
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


def add_json(result: AddResult, link: str) -> dict[str, Any]:
    """What ``add --json`` prints; ``link`` is passed in because the daemon may add peer hints to it."""
    return pin_json(result.pin) | {
        "link": link,
        "new_blocks": result.new_blocks,
        "already_added": result.existing,
    }
