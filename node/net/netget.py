"""Getting a link from the network: find providers, fetch the whole tree into the repo, pin it.

The tree is fetched in rounds. One walk of the tree (``node/store/tree_walk.py``'s ``Frontier``, in a worker
thread) lasts the whole fetch: each round it looks again only at what the last round asked for, opens
the metadata blocks that came (a root, node or index blocks, directory listings) and walks on until it
has a round's worth of blocks the repo lacks, which are then fetched from every provider at once
(``node/net/exchange.py``). So each block is looked up about once in a whole fetch, whatever the tree's
size. Metadata needs one round per level of the tree; data is fetched as soon as the walk reaches it,
spread over all providers. When nothing is missing, the root is pinned with its whole block list (so gc
keeps it and the node serves it: it becomes a seed) and the output is written by the ordinary local
``get`` (``node/files/get.py``), which checks everything again.

gc may run at any moment meanwhile (in the daemon, or in another process): the fetch holds a lease
(``node/store/lease.py``) from start to end, filled with every block the walk finds held (written out
before the round that relies on it starts) and every block its writer sessions store, and pins under the
repo's shared lock, after reading back every block (once: ``read_tree``). A gc that read the leases
just before the walk leased a block it found held may still remove that block; the pin finds it gone,
and one more walk (all else leased by then) fetches it again.
"""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import trio
from libp2p.abc import IHost

from node.errors import NodeError
from node.net.dht import FIND_TIMEOUT, Dht, open_dht
from node.net.errors import NetworkError
from node.net.exchange import FetchError, FetchStats, fetch_blocks
from node.net.host import new_identity, open_host
from node.net.progress import FetchProgress
from node.net.provider_search import ProviderSearch
from node.store.errors import NotFoundError
from node.store.lease import Lease
from node.store.pin_tree import pin_fetched
from node.store.repo import Repo
from node.store.tree_walk import Frontier, Selection
from protocol.errors import ProtocolError
from protocol.link import ShareLink

log = logging.getLogger(__name__)

ROUND_LIMIT = 8192  # blocks asked for in one round: bounds memory whatever the tree's size
QUICK_FAILURE = 5.0  # seconds: a fetch round that failed sooner is retried once at once


@dataclass
class FetchReport:
    root: bytes
    providers: int
    rounds: int = 0
    stats: FetchStats | None = None
    pinned: bool = False


def next_round(frontier: Frontier, lease: Lease, limit: int = ROUND_LIMIT) -> list[bytes]:
    """Up to ``limit`` blocks the next round must fetch (empty when the tree is complete); every block
    the frontier finds held is leased (gc keeps it until the fetch ends), and written out now, not at the
    next commit: a gc from here on keeps them."""
    missing = frontier.round(limit)
    lease.flush()
    return missing


async def fetch_link(
    host: IHost,
    dht: Dht | None,
    repo: Repo,
    link: ShareLink,
    *,
    announce: bool = True,
    pin: bool = True,
    find_timeout: float = FIND_TIMEOUT,
    on_bytes: Callable[[int], None] | None = None,
    progress: FetchProgress | None = None,
    keep_key: bool = True,
    path: tuple[str, ...] | None = None,
    data: bool = True,
) -> FetchReport:
    """Make every block of ``link``'s tree present in ``repo`` and, with ``pin``, pin it.

    ``keep_key``: the pin keeps the link's key (``get --no-keep-key`` says no). ``path``: only the
    folders on the way to that entry and its subtree (``get LINK PATH``); ``data=False``: the metadata
    only (``ls LINK``). Either leaves the tree incomplete: it is neither pinned nor announced, and its
    blocks stay unpinned for a later whole get (node/store/tree_walk.py's Selection).

    ``on_bytes(n)``, if given, is called as each block of ``n`` bytes is stored (for a progress bar).

    Providers come from the link's peer hints and the DHT at once (node/net/provider_search.py: the fetch
    starts from the first that connects; later ones join it). With ``announce``, the node
    announces the root in the background as soon as it starts (it serves what it holds while
    fetching, like a BitTorrent peer). Without ``pin`` the blocks stay unpinned: gc may remove them
    and the reprovider does not announce them (``get --no-seed``). ``progress``, if given, is filled in
    as the fetch goes (node/net/progress.py says who writes which field).
    """
    selection = Selection(path or (), data)
    pinned = (pin and selection.whole, keep_key)
    if progress is not None:
        on_bytes = _counting(progress, on_bytes)
    with repo.lease() as lease:
        report = await _fetch_leased(
            host,
            dht,
            repo,
            link,
            lease,
            announce and selection.whole,
            pinned,
            find_timeout,
            on_bytes,
            selection,
            progress,
        )
    if progress is not None:
        progress.enter("done")
    return report


def _counting(progress: FetchProgress, on_bytes: Callable[[int], None] | None) -> Callable[[int], None]:
    """``on_bytes`` that also adds the bytes to ``progress``."""

    def counted(n: int) -> None:
        progress.add(n)
        if on_bytes is not None:
            on_bytes(n)

    return counted


async def _fetch_leased(
    host: IHost,
    dht: Dht | None,
    repo: Repo,
    link: ShareLink,
    lease: Lease,
    announce: bool,
    pinned: tuple[bool, bool],  # (pin, keep_key)
    find_timeout: float,
    on_bytes: Callable[[int], None] | None,
    selection: Selection,
    progress: FetchProgress | None = None,
) -> FetchReport:
    # The walk leases each block it finds held as it finds it, but a gc that read the leases just
    # before may still delete one in between. The pin reads every block back and says so
    # (NotFoundError): then one more walk, with a lease that by now holds everything else, fetches it.
    rounds = functools.partial(_fetch_rounds, host, dht, repo, link, lease, find_timeout, on_bytes, progress)
    report = FetchReport(link.root, 0)
    second = False
    while True:
        frontier = Frontier(repo.blocks, link, lease.add, selection)
        if progress is not None:
            progress.walk = frontier
        missing = await trio.to_thread.run_sync(next_round, frontier, lease)
        if missing:
            if progress is not None and progress.phase == "starting":
                progress.resumed = frontier.held_bytes  # the first round: nothing fetched yet
                progress.enter("looking")
            await rounds(frontier, missing, report, announce=announce and not second)
        pin, keep_key = pinned
        if not pin:
            return report
        if progress is not None:
            progress.enter("pinning")
        try:
            await trio.to_thread.run_sync(functools.partial(pin_fetched, repo, link, keep_key=keep_key))
        except NotFoundError:
            if second:
                raise
            log.info("fetch: a block found held was removed (gc) before it was leased; walking again")
            second = True
            continue
        report.pinned = True
        return report


async def _fetch_rounds(
    host: IHost,
    dht: Dht | None,
    repo: Repo,
    link: ShareLink,
    lease: Lease,
    find_timeout: float,
    on_bytes: Callable[[int], None] | None,
    progress: FetchProgress | None,
    frontier: Frontier,
    missing: list[bytes],
    report: FetchReport,
    *,
    announce: bool,
) -> None:
    """Fetch what ``frontier`` lacks (``missing`` first) from the providers, announcing the root
    meanwhile with ``announce``; ``report`` adds up what it took."""
    failure: NodeError | OSError | ProtocolError | None = None
    async with trio.open_nursery() as nursery:
        if dht is not None and announce:
            # announced at once, in the background: a slow or unreachable DHT peer must not hold up the
            # fetch; once the fetch is over the caller announces the pinned root again (see control.py)
            nursery.start_soon(_announce_early, dht, link.root)
        try:
            search = ProviderSearch(host, dht, link, {}, find_timeout, progress)
            peers = await search.first(nursery)
            fetch = _Rounds(host, dht, repo, link, lease, frontier, peers, search, on_bytes)
            stats = await fetch.run(missing, report)
            report.providers = max(report.providers, len(peers))  # those found during the fetch included
            if report.stats is None:
                report.stats = stats
            else:
                report.stats.add(stats)
        # raised below, once the nursery has closed (no exception group); a ProtocolError: a bad tree
        except (NodeError, OSError, ProtocolError) as exc:
            failure = exc
        nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure


async def _announce_early(dht: Dht, root: bytes) -> None:
    try:
        await dht.provide(root)
    except NetworkError as exc:
        log.info("announcing a root being fetched: %s", exc)


@dataclass
class _Rounds:
    """A fetch's rounds: each fetches what the frontier lacks, until it lacks nothing."""

    host: IHost
    dht: Dht | None
    repo: Repo
    link: ShareLink
    lease: Lease
    frontier: Frontier
    peers: dict[str, None]
    search: ProviderSearch
    on_bytes: Callable[[int], None] | None

    async def run(self, missing: list[bytes], report: FetchReport) -> FetchStats:
        on_bytes = self.on_bytes
        on_block = None if on_bytes is None else lambda _cid, _peer, size: on_bytes(size)
        total = FetchStats()
        quick_retry = True
        while missing:
            report.rounds += 1
            started = trio.current_time()
            held = self.frontier.held
            random.shuffle(missing)  # downloaders of the same file hold different blocks, to swap them
            try:
                stats = await fetch_blocks(
                    self.host,
                    self.repo.blocks,
                    list(self.peers),
                    missing,
                    discover=self._more,
                    on_block=on_block,
                    lease=self.lease,
                )
            except FetchError as exc:
                if exc.stats is not None:
                    total.add(exc.stats)
                # Other fetchers of the same root may hold more by now, and a provider may have failed
                # for a moment: go on while a round makes progress or the DHT names new providers, and
                # retry once at once after a failure that came fast (a refused or broken stream).
                missing = await trio.to_thread.run_sync(next_round, self.frontier, self.lease)
                known = len(self.peers)
                await self._look_again()
                quick = quick_retry and trio.current_time() - started < QUICK_FAILURE
                if self.frontier.held == held and len(self.peers) == known and not quick:
                    raise
                quick_retry = quick_retry and not quick
                log.info(
                    "fetch: retrying with %d provider(s), %d block(s) asked", len(self.peers), len(missing)
                )
                report.providers = len(self.peers)
                continue
            total.add(stats)
            missing = await trio.to_thread.run_sync(next_round, self.frontier, self.lease)
        return total

    async def _more(self) -> list[str]:
        """For the running fetch: the providers connected by now (the first search may still run),
        else those a new lookup finds."""
        if self.search.over.is_set():
            await self.search.look_again()
        return list(self.peers)

    async def _look_again(self) -> None:
        """After a failed round: the first search's outcome, and a new lookup if it named no one new."""
        known = len(self.peers)
        await self.search.over.wait()
        if len(self.peers) == known:
            await self.search.look_again()


def get_from_network(
    repo: Repo,
    link: ShareLink,
    *,
    bootstrap: Sequence[str] = (),
    pin: bool = True,
    on_bytes: Callable[[int], None] | None = None,
    progress: FetchProgress | None = None,
    keep_key: bool = True,
    path: tuple[str, ...] | None = None,
    data: bool = True,
) -> FetchReport:
    """Fetch ``link`` into ``repo`` with a temporary node (no daemon runs): a host on loopback with a
    fresh identity, the DHT bootstrapped from ``bootstrap``, the link's peer hints. It does not announce
    (it will not stay up to serve). Then ``node.files.get.get_link`` writes the output from the repo."""

    async def run() -> FetchReport:
        async with open_host(new_identity()) as host, open_dht(host) as dht:
            routing: Dht | None = dht
            if bootstrap and not await dht.bootstrap(bootstrap):
                # nobody to ask through the DHT: say so now, not after a lookup's whole deadline
                if not link.peers:
                    raise FetchError(
                        f"no peer to ask for this link: none of the {len(bootstrap)} bootstrap peer(s)"
                        " answered, and the link has no peer hints"
                    )
                routing = None  # the link's peer hints alone
            return await fetch_link(
                host,
                routing,
                repo,
                link,
                announce=False,
                pin=pin,
                on_bytes=on_bytes,
                progress=progress,
                keep_key=keep_key,
                path=path,
                data=data,
            )

    return trio.run(run)
