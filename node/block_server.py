"""Serving ``/sealbox/blocks/1.0.0``: answer a peer's requests from the block store.

One task per inbound stream reads requests (at most ``SERVER_MAX_OPEN`` open) and answers them in
order, verifying each block against its CID before it goes out. See ``node/exchange.py``.
"""

from __future__ import annotations

import contextlib
import logging

import trio
from libp2p.abc import IHost, INetStream
from libp2p.exceptions import BaseLibp2pError

from node.blockstore import BlockStore, block_digest
from node.errors import NotFoundError, RepoError
from node.host import set_handler
from protocol.errors import CorruptBlockError
from protocol.messages import (
    PROTOCOL_ID,
    Block,
    Cancel,
    FrameDecoder,
    Have,
    MessageError,
    NotFound,
    Want,
    encode_message,
)

log = logging.getLogger(__name__)

SERVER_MAX_OPEN = 64
LOAD_BATCH = 4  # replies read from the store in one worker-thread call
LOAD_AHEAD = 8  # replies framed and waiting to be written
READ_SIZE = 1 << 20
MAX_WAITING = 8192  # NOT_FOUND answers a server remembers per stream, to send HAVE for them later
_STREAM_ERRORS = (BaseLibp2pError, OSError, trio.BrokenResourceError, trio.ClosedResourceError)


class _Requests(dict[int, bytes]):
    """A stream's open requests (request id -> CID), answered oldest first."""

    def popitem_first(self) -> tuple[int, bytes]:
        request = next(iter(self))
        return request, self.pop(request)


class _Waiting:
    """What one inbound stream's asker was told NOT_FOUND for (request -> digest), newest last, so that
    a HAVE can follow once this node holds the block (it may be fetching the same file)."""

    def __init__(self) -> None:
        self.requests: dict[int, bytes] = {}
        self.haves: list[int] = []
        self.wake = trio.Event()

    def remember(self, request: int, digest: bytes) -> None:
        self.requests.pop(request, None)
        self.requests[request] = digest
        while len(self.requests) > MAX_WAITING:
            del self.requests[next(iter(self.requests))]

    def stored(self, digests: set[bytes]) -> None:
        hits = [request for request, digest in self.requests.items() if digest in digests]
        for request in hits:
            del self.requests[request]
        if hits:
            self.haves += hits
            self.wake.set()


class BlockServer:
    """Answers ``/sealbox/blocks/1.0.0`` requests from ``store``. Counts what it served.

    A request answered NOT_FOUND is remembered (at most ``MAX_WAITING`` per stream): when the block
    arrives in the store later (this node fetches the same file), the asker gets a HAVE for it.
    """

    def __init__(self, store: BlockStore) -> None:
        self.store = store
        self.served_blocks = 0
        self.served_bytes = 0
        self.haves_sent = 0
        self._streams: set[_Waiting] = set()
        self._token: trio.lowlevel.TrioToken | None = None

    def install(self, host: IHost) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self.store.add_listener(self._committed)
        set_handler(host, PROTOCOL_ID, self.handle)

    def _committed(self, digests: list[bytes]) -> None:
        """From the committing thread: pass the news to the streams, in the trio thread."""
        if self._token is not None and self._streams:
            with contextlib.suppress(trio.RunFinishedError):
                self._token.run_sync_soon(self._notify, set(digests))

    def _notify(self, digests: set[bytes]) -> None:
        for waiting in list(self._streams):
            waiting.stored(digests)

    async def handle(self, stream: INetStream) -> None:
        queue = _Requests()
        waiting = _Waiting()
        finished = False
        broken = False

        async def read_requests(cancel: trio.CancelScope) -> None:
            nonlocal finished, broken
            decoder = FrameDecoder()
            try:
                while data := await stream.read(READ_SIZE):
                    for message in decoder.feed(data):
                        if isinstance(message, Want):
                            if len(queue) >= SERVER_MAX_OPEN or message.request in queue:
                                raise MessageError("too many open requests")
                            queue[message.request] = message.cid
                        elif isinstance(message, Cancel):
                            queue.pop(message.request, None)
                        else:
                            raise MessageError("a client sent a reply")
                    waiting.wake.set()
            except MessageError as exc:
                log.info("block exchange: dropping a stream that broke the protocol: %s", exc)
                broken = True
                cancel.cancel()
            except _STREAM_ERRORS:
                pass  # the asker went away or closed its side: answer what is queued
            finished = True
            waiting.wake.set()

        frames_in, frames_out = trio.open_memory_channel[tuple[bytes, int]](LOAD_AHEAD)

        def load(batch: list[tuple[int, bytes]]) -> list[tuple[bytes, int, int, bytes | None]]:
            """In a worker thread: read, verify and frame a few replies at once. Each reply comes
            with its request and, when it is NOT_FOUND, the digest asked for."""
            out: list[tuple[bytes, int, int, bytes | None]] = []
            try:
                where = self.store.locate(cid for _, cid in batch)  # one index query for the batch
            except RepoError:
                where = {}  # each get below looks its block up again, and reports what fails
            for request, cid in batch:
                try:
                    block = self.store.get(cid, where=where.get(cid))
                except (NotFoundError, CorruptBlockError, RepoError):
                    out.append((encode_message(NotFound(request)), 0, request, block_digest(cid)))
                else:
                    out.append((encode_message(Block(request, block)), len(block), request, None))
            return out

        async def prepare() -> None:
            # reads the next replies from disk while the previous ones are being written
            async with frames_in:
                while queue or waiting.haves or not finished:
                    if waiting.haves:
                        haves, waiting.haves = waiting.haves, []
                        for request in haves:
                            await frames_in.send((encode_message(Have(request)), -1))
                        continue
                    if not queue:
                        await waiting.wake.wait()
                        waiting.wake = trio.Event()
                        continue
                    batch = [queue.popitem_first() for _ in range(min(LOAD_BATCH, len(queue)))]
                    for frame, size, request, missing in await trio.to_thread.run_sync(load, batch):
                        if missing is not None:
                            waiting.remember(request, missing)
                        await frames_in.send((frame, size))

        async def send(cancel: trio.CancelScope) -> None:
            nonlocal broken
            try:
                async for frame, size in frames_out:
                    await stream.write(frame)
                    if size > 0:
                        self.served_blocks += 1
                        self.served_bytes += size
                    elif size < 0:
                        self.haves_sent += 1
            except _STREAM_ERRORS:
                broken = True
                cancel.cancel()

        self._streams.add(waiting)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_requests, nursery.cancel_scope)
                nursery.start_soon(prepare)
                nursery.start_soon(send, nursery.cancel_scope)
        finally:
            self._streams.discard(waiting)
        if broken:
            await _reset(stream)
        else:
            with contextlib.suppress(*_STREAM_ERRORS):
                await stream.close()


async def _reset(stream: INetStream) -> None:
    with contextlib.suppress(*_STREAM_ERRORS):
        await stream.reset()
