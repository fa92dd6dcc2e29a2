"""``sealbox transfers``: what the running daemon is adding, fetching and serving now; ``transfers
cancel ID`` stops one (``GET /v1/transfers``, ``POST /v1/transfers/cancel``: node/daemon/transfers.py)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from node.cli.common import daemon
from node.cli.output import Output, clock, human

COLUMNS = ("ID", "KIND", "NAME/ROOT", "DONE/TOTAL", "%", "SPEED", "PEERS", "ETA")
NAME_WIDTH = 24


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """``transfers`` and ``transfers cancel ID``."""
    transfers = sub.add_parser(
        "transfers",
        parents=[common],
        help="list what the daemon is adding, fetching and serving now",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="List the daemon's adds and fetches (done/total, speed, peers, ETA) and what it\n"
        "serves; 'transfers cancel ID' stops one.",
        epilog="examples:\n"
        "  sealbox transfers\n"
        "  sealbox transfers --json\n"
        "  sealbox transfers cancel 3f9a01bc",
    )
    transfers.set_defaults(func=cmd_transfers)
    actions = transfers.add_subparsers(dest="action", metavar="ACTION")
    cancel = actions.add_parser(
        "cancel",
        parents=[common],
        help="stop a transfer (a fetch keeps what it stored, an add pins nothing)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Stop a transfer: a fetch keeps the blocks it stored (a later get resumes from them)\n"
        "but pins nothing; an add pins nothing and makes no link.",
        epilog="example:\n  sealbox transfers cancel 3f9a01bc",
    )
    cancel.add_argument("id", help="the transfer's id, as 'sealbox transfers' lists it")
    cancel.set_defaults(func=cmd_cancel)


def cmd_transfers(args: argparse.Namespace) -> None:
    data: dict[str, Any] = daemon(args).call("GET", "/v1/transfers")
    Output(args).emit(data, _table(data))


def cmd_cancel(args: argparse.Namespace) -> None:
    outcome: dict[str, Any] = daemon(args).call(
        "POST", "/v1/transfers/cancel", {"id": args.id.strip().lower()}, timeout=30
    )
    Output(args).emit(outcome, cancelled_line(outcome))


def cancelled_line(outcome: Mapping[str, Any]) -> str:
    """What a cancel did, in one line."""
    tid, state, kind = outcome.get("id"), outcome.get("state"), outcome.get("kind")
    if state == "done":
        return f"{tid} had already finished ({kind})"
    if state == "failed":
        return f"{tid} had already failed ({kind})"
    if state == "running":
        return f"{tid} was asked to stop and has not stopped yet: see 'sealbox transfers'"
    if kind == "add":
        return f"cancelled {tid}: nothing was pinned and no link was made"
    stored = int(outcome.get("done") or 0) + int(outcome.get("held") or 0)
    if not stored:
        return f"cancelled {tid}: nothing was fetched yet"
    return (
        f"cancelled {tid}: {human(stored)} already fetched stay in the repo and a later get resumes from them"
    )


def _table(data: Mapping[str, Any]) -> str:
    rows = [_row(t) for t in data.get("transfers", [])]
    serving = data.get("serving") or {}
    if serving.get("peers") or serving.get("speed"):
        speed = f"{human(serving.get('speed') or 0)}/s"
        rows.append(
            [
                "-",
                "serve",
                "-",
                human(serving.get("bytes") or 0),
                "-",
                speed,
                str(serving.get("peers", 0)),
                "-",
            ]
        )
    if not rows:
        return "no transfers running"
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(COLUMNS)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def _row(t: Mapping[str, Any]) -> list[str]:
    name = t.get("name") or (t.get("root") or "-")
    if len(name) > NAME_WIDTH:
        name = name[: NAME_WIDTH - 1] + "…"
    have = int(t.get("done") or 0) + int(t.get("held") or 0)
    total = t.get("total")
    done = f"{human(have)} / {human(total)}" if total else human(have)
    percent = f"{min(100, have * 100 // max(1, int(total)))}%" if total else "-"
    if t.get("phase") == "looking":
        percent = "looking"
    eta = t.get("eta")
    return [
        str(t.get("id")),
        str(t.get("kind")),
        name,
        done,
        percent,
        f"{human(t.get('speed') or 0)}/s",
        str(t.get("peers") or 0),
        clock(float(eta)) if eta is not None else "-",
    ]
