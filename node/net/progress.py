"""What a fetch in progress reports: one mutable record the fetch writes and a bar or the daemon reads.

``node/net/netget.py``'s ``fetch_link(progress=...)`` fills a :class:`FetchProgress` as it goes; the
CLI's bar (``node/cli/output.py``) reads it a few times a second (no daemon), and the daemon's transfer
registry (``node/daemon/transfers.py``) turns it into the progress events of ``POST /v1/fetch``. The
fields are plain ints and strings, each written by one side only, so a reader in another thread or task
sees each one whole (at worst a moment late) without a lock.

Who writes what:

- ``phase``: netget (:meth:`FetchProgress.enter`): "starting" until the walk has looked at the repo,
  "looking" while it waits for providers (the DHT, the peer hints), "fetching" while blocks arrive,
  "pinning" while the pin reads the tree back, "done" at the end.
- ``walk``: netget, the fetch's ``Frontier`` (node/store/tree_walk.py) as soon as it makes one.
- ``size``, ``kind``, ``held``, ``total``: the reader, from the walk (:meth:`FetchProgress.refresh`, called
  before it reads): ``size`` once the root is open (plaintext bytes of the root's file or,
  for a folder, of its encoded entries), ``held`` the block bytes found already in the repo, ``total``
  the block bytes of the data the fetch needs (padded data and its tags: metadata blocks add well
  under 0.1% for big files), None until the walk has opened every node and listing on its way (for a
  file, its root; for a folder, every listing: they come in the first rounds, beside the first data).
  ``held`` leaves out what this fetch stored itself (the walk finds those held too, at the next round).
- ``resumed``: netget, once, after the walk's first round (before anything is fetched): the block
  bytes it found already here, what "resuming: … already here" says (``held`` also grows with what
  later rounds find, and, for a moment, with blocks this fetch stored before it counted them).
- ``done``: netget's on_bytes path (:meth:`FetchProgress.add`): block bytes this fetch stored.
- ``peers``, ``providers_known``: the provider search in netget (the providers pulled from now, and all
  found so far, reachable or not).
- ``started``, ``phase_since``: :func:`time.monotonic` values, for the elapsed time and the running
  clock while it looks for providers.

:func:`view` is what a reader shows of it, the same for the CLI's own fetch and the daemon's progress
events (``node/daemon/transfers.py``), so one function draws both (``node/cli/output.py``). The speed
there is a moving average (:class:`Speed`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from node.store.tree_walk import Frontier

PHASES = ("starting", "looking", "fetching", "pinning", "done")
SPEED_WINDOW = 3.0  # seconds: the time constant of a speed's moving average
MIN_SAMPLE = 0.2  # seconds between two samples of a speed


@dataclass
class FetchProgress:
    """A fetch's progress so far (see the module docstring for who writes which field)."""

    phase: str = "starting"
    size: int | None = None
    kind: str | None = None
    done: int = 0
    held: int = 0
    resumed: int = 0  # block bytes the first round found held, before this fetch stored any
    total: int | None = None
    peers: int = 0
    providers_known: int = 0
    started: float = field(default_factory=time.monotonic)
    phase_since: float = field(default_factory=time.monotonic)
    walk: Frontier | None = field(default=None, repr=False)

    def enter(self, phase: str) -> None:
        """Move to ``phase`` (one of :data:`PHASES`), restarting its clock if it is a new one."""
        if phase != self.phase:
            self.phase = phase
            self.phase_since = time.monotonic()

    def add(self, n: int) -> None:
        """``n`` more block bytes were stored by this fetch (the first ones mean it is fetching)."""
        if self.phase in ("starting", "looking"):
            self.enter("fetching")
        self.done += n

    def refresh(self) -> None:
        """Read what the walk knows now (from any thread: the walk's fields are plain values): the
        root's size and kind once it is open, the block bytes found held that this fetch did not store."""
        walk = self.walk
        if walk is None:
            return
        self.held = max(self.held, walk.held_bytes - self.done)
        root = walk.root
        if root is not None and self.size is None:
            self.size, self.kind = root.size, root.kind
        if self.total is None:
            self.total = walk.expected_bytes

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def waited(self) -> float:
        """Seconds spent in the current phase (the running clock of "looking for providers")."""
        return time.monotonic() - self.phase_since


@dataclass
class Speed:
    """A byte rate as a moving average (exponential, over ``SPEED_WINDOW`` seconds), sampled whenever
    someone asks (no timer of its own)."""

    rate: float = 0.0
    at: float | None = None
    count: int = 0

    def sample(self, count: int) -> float:
        now = time.monotonic()
        if self.at is None:
            self.at, self.count = now, count
            return self.rate
        elapsed = now - self.at
        if elapsed >= MIN_SAMPLE:
            instant = max(0, count - self.count) / elapsed
            self.rate += (1 - math.exp(-elapsed / SPEED_WINDOW)) * (instant - self.rate)
            self.at, self.count = now, count
        return self.rate


def view(progress: FetchProgress, speed: Speed) -> dict[str, Any]:
    """What is shown of ``progress`` now (bytes, bytes/s and seconds; None where unknown)."""
    progress.refresh()
    rate = speed.sample(progress.done)
    left = None if progress.total is None else max(0, progress.total - progress.done - progress.held)
    return {
        "phase": progress.phase,
        "done": progress.done,
        "held": progress.held,
        "resumed": progress.resumed,
        "total": progress.total,
        "size": progress.size,
        "peers": progress.peers,
        "providers_known": progress.providers_known,
        "speed": round(rate),
        "eta": None if left is None or rate <= 0 else round(left / rate, 1),
        "elapsed": round(progress.elapsed(), 1),
        "waited": round(progress.waited(), 1),
    }
