"""``/sealbox/blocks/1.0.0`` over libp2p: serve blocks from the store, fetch blocks from many peers.

The wire format and the scheduler are pure (``protocol/messages.py``, ``protocol/fetch_plan.py``,
``specs/block-exchange.md``); ``node/net/block_server.py`` and ``node/net/block_fetch.py`` drive them with
trio, and this module names what the rest of the code imports. Serving: one task per inbound stream
reads requests (at most ``SERVER_MAX_OPEN`` open) and answers them in order, verifying each block against
its CID before it goes out. Fetching: one stream per provider, a reader task per stream, and one loop that
feeds the scheduler, sends requests, enforces deadlines, verifies and stores what arrives.
"""

from __future__ import annotations

from node.net.block_fetch import REQUEST_TIMEOUT, FetchError, FetchStats, fetch_blocks
from node.net.block_server import BlockServer
from protocol.exchange_server import MAX_WAITING, SERVER_MAX_OPEN

__all__ = [
    "MAX_WAITING",
    "REQUEST_TIMEOUT",
    "SERVER_MAX_OPEN",
    "BlockServer",
    "FetchError",
    "FetchStats",
    "fetch_blocks",
]
