"""What the ``sealbox`` commands print: sizes, progress bars on a terminal, text or JSON results."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from protocol.link import ShareLink

PROGRESS_INTERVAL = 0.25  # seconds between updates of a fetch's progress bar


def human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def shows_progress(args: argparse.Namespace) -> bool:
    return not (args.json or args.quiet) and sys.stderr.isatty()


@contextmanager
def progress_bar(args: argparse.Namespace, total: int | None, what: str) -> Iterator[Callable[[int], None]]:
    """A byte progress bar on stderr when it is a terminal (and output is not JSON)."""
    if not shows_progress(args):
        yield lambda _n: None
        return
    from tqdm import tqdm  # only when a bar is shown: it is slow to import

    with tqdm(
        total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=what, leave=False, file=sys.stderr
    ) as bar:

        def advance(n: int) -> None:
            bar.update(n)

        yield advance


@contextmanager
def fetch_bar(args: argparse.Namespace, link: ShareLink) -> Iterator[Callable[[int], None]]:
    """A "fetching" bar (:func:`progress_bar`), moved by the bytes fetched so far. The blocks also hold
    padding and the manifest, so the bar stops at the link's size."""
    shown = 0
    with progress_bar(args, link.size, "fetching") as advance:

        def reached(done: int) -> None:
            nonlocal shown
            if link.size is not None:
                done = min(done, link.size)
            if done > shown:
                advance(done - shown)
                shown = done

        yield reached


class Output:
    def __init__(self, args: argparse.Namespace) -> None:
        self.json = args.json

    def emit(self, data: Any, text: str | None) -> None:
        if self.json:
            print(json.dumps(data, ensure_ascii=False))
        elif text is not None:
            print(text)
