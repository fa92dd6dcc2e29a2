"""What the ``sealbox`` commands print: sizes, progress bars on a terminal, text or JSON results.

One unit system everywhere: decimal (kB, MB, GB; MB/s), in :func:`human` and in every bar. A fetch's
status line is drawn by one function, :func:`fetch_line`, from a view of its progress
(``node/net/progress.py``'s ``view``: the CLI's own fetch, or the daemon's progress events).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from protocol.link import ShareLink

if TYPE_CHECKING:
    from node.net.progress import FetchProgress

PROGRESS_INTERVAL = 0.25  # seconds between updates of a fetch's status line
UNIT = 1000  # decimal units: kB, MB, GB


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with the line that says truthfully what was stopped and what stays."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def human(n: float) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < UNIT or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= UNIT
    raise AssertionError("unreachable")


def clock(seconds: float) -> str:
    """``0:07``, ``12:34``, ``1:02:03``."""
    whole = max(0, int(seconds))
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def fetch_line(shown: Mapping[str, Any], size: int | None = None) -> str:
    """A fetch's status line from its progress view; ``size`` (the link's) stands in for an unknown
    total."""
    phase = shown.get("phase")
    known = int(shown.get("providers_known") or 0)
    if phase == "looking":
        found = f" ({known} known)" if known else ""
        return f"looking for providers… {clock(float(shown.get('waited') or 0))}{found}"
    if phase == "pinning":
        return "fetched: pinning…"
    if phase == "starting":
        return "fetching: opening the link…"
    done, held = int(shown.get("done") or 0), int(shown.get("held") or 0)
    total = shown.get("total") or size
    have = done + held
    parts = []
    if total:
        parts.append(
            f"fetching: {min(100, have * 100 // max(1, int(total))):3d}% {human(have)} / {human(total)}"
        )
    else:
        parts.append(f"fetching: {human(have)}")
    if speed := shown.get("speed"):
        parts.append(f"{human(speed)}/s")
    if (eta := shown.get("eta")) is not None and total:
        parts.append(f"ETA {clock(float(eta))}")
    if peers := shown.get("peers"):
        parts.append(f"{peers} peer{'s' if peers != 1 else ''}")
    if resumed := int(shown.get("resumed") or 0):
        parts.append(f"resuming: {human(resumed)} already here")
    return "  ".join(parts)


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
        total=total, unit="B", unit_scale=True, unit_divisor=UNIT, desc=what, leave=False, file=sys.stderr
    ) as bar:

        def advance(n: int) -> None:
            bar.update(n)

        yield advance


class _StatusLine:
    """One line on stderr, redrawn in place (cut to the terminal's width), cleared at the end."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.drawn = False

    def draw(self, text: str) -> None:
        width = shutil.get_terminal_size((100, 24)).columns - 1
        with self.lock:
            sys.stderr.write("\r" + text[: max(10, width)] + "\x1b[K")
            sys.stderr.flush()
            self.drawn = True

    def clear(self) -> None:
        with self.lock:
            if self.drawn:
                sys.stderr.write("\r\x1b[K")
                sys.stderr.flush()


@contextmanager
def fetch_status(
    args: argparse.Namespace, link: ShareLink, follow: FetchProgress | None = None
) -> Iterator[Callable[[Mapping[str, Any]], None]]:
    """A fetch's status line on a terminal (:func:`fetch_line`). Yields ``show(view)`` for views that
    come from elsewhere (the daemon's events); with ``follow``, a thread also draws that progress
    record a few times a second (the CLI's own fetch, whose trio loop runs in this thread)."""
    if not shows_progress(args):
        yield lambda _shown: None
        return
    line = _StatusLine()

    def show(shown: Mapping[str, Any]) -> None:
        line.draw(fetch_line(shown, link.size))

    stop = threading.Event()
    drawer = None
    if follow is not None:
        from node.net.progress import Speed, view

        speed = Speed()

        def draw() -> None:
            while not stop.wait(PROGRESS_INTERVAL):  # a refresh rate, not a wait for an event
                show(view(follow, speed))

        drawer = threading.Thread(target=draw, name="progress", daemon=True)
        drawer.start()
    try:
        yield show
    finally:
        stop.set()
        if drawer is not None:
            drawer.join()
        line.clear()


@contextmanager
def add_bar(args: argparse.Namespace) -> Iterator[Callable[[Mapping[str, Any]], None]]:
    """A "sealing" bar for an add in the daemon, moved by its progress events (their done and total)."""
    if not shows_progress(args):
        yield lambda _event: None
        return
    from tqdm import tqdm

    with tqdm(
        total=None, unit="B", unit_scale=True, unit_divisor=UNIT, desc="sealing", leave=False, file=sys.stderr
    ) as bar:

        def show(event: Mapping[str, Any]) -> None:
            total, done = event.get("total"), int(event.get("done") or 0)
            if total and bar.total != total:
                bar.total = int(total)
            if done > bar.n:
                bar.update(done - bar.n)

        yield show


class Output:
    def __init__(self, args: argparse.Namespace) -> None:
        self.json = args.json

    def emit(self, data: Any, text: str | None) -> None:
        if self.json:
            print(json.dumps(data, ensure_ascii=False))
        elif text is not None:
            print(text)
