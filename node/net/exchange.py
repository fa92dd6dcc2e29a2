"""``/sealbox/blocks/1.0.0`` over libp2p: serve blocks from the store, fetch blocks from many peers.

The wire format, the session rules of both sides and the scheduler are pure and synchronous
(``protocol/messages.py``, ``protocol/exchange_server.py``, ``protocol/exchange_asker.py``,
``protocol/fetch_plan.py``; ``specs/block-exchange.md``); ``node/net/block_server.py`` and
``node/net/block_fetch.py`` drive them with trio (streams, tasks, the store, the clock), and this module
names what the rest of the code imports. Serving: three tasks per inbound stream read requests (at most
``SERVER_MAX_OPEN`` open), read the blocks from the store and write the answers in order, each block
verified against its CID before it goes out. Fetching: one stream per provider, a reader task per stream
that verifies and stores what arrives, and one loop that feeds the session and writes what it decides.
"""

from __future__ import annotations

from node.net.block_fetch import FetchError, FetchStats, fetch_blocks
from node.net.block_server import BlockServer
from protocol.exchange_asker import REQUEST_TIMEOUT
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
