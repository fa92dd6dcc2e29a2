"""Key schedule and block sealing.

A file or tree has one random 256-bit master key ``K`` (it travels in the share link). Every node of the
tree (the root is node 0) has a number ``n``; each sealed stream of a node has its own subkey::

    K_node(n)     = HKDF-SHA256(K, salt="", info="sealbox/v1 node"  || u64be(n))
    K_data(n)     = HKDF-SHA256(K, salt="", info="sealbox/v1 data"  || u64be(n))
    K_index(n, l) = HKDF-SHA256(K, salt="", info="sealbox/v1 index" || u64be(n) || u8(l))

A block is ``AES-256-GCM(subkey, nonce=u96be(i), plaintext, aad="")``: the ciphertext followed by its
16-byte tag, where ``i`` is the block's position in its stream. Every (subkey, position) pair is sealed
once, so a nonce never repeats for a key, and a block moved to another position, stream, level or file
fails to open.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from protocol.errors import DecryptError

KEY_LEN = 32
TAG_LEN = 16
MAX_POSITION = (1 << 64) - 1
MAX_LEVEL = 8  # index levels a stream may have (K_index's level is 1..8); its one definition


def new_key() -> bytes:
    """A fresh random master key from the operating system's CSPRNG."""
    return os.urandom(KEY_LEN)


def _hkdf(key: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_LEN, salt=None, info=info).derive(key)


def subkey(master: bytes, label: str, number: int, level: int | None = None) -> bytes:
    """``HKDF-SHA256(master, salt="", info="sealbox/v1 " + label || u64be(number) [|| u8(level)])``."""
    if len(master) != KEY_LEN:
        raise ValueError("a master key is 32 bytes")
    if not 0 <= number <= MAX_POSITION:
        raise ValueError("node number out of range")
    info = b"sealbox/v1 " + label.encode("ascii") + number.to_bytes(8, "big")
    if level is not None:
        if not 1 <= level <= MAX_LEVEL:
            raise ValueError("index level out of range")
        info += bytes([level])
    return _hkdf(master, info)


def _nonce(position: int) -> bytes:
    if not 0 <= position <= MAX_POSITION:
        raise ValueError("block position out of range")
    return position.to_bytes(12, "big")


class StreamKey:
    """One subkey: seals and opens the blocks of one stream by position."""

    __slots__ = ("_aead",)

    def __init__(self, subkey: bytes) -> None:
        self._aead = AESGCM(subkey)

    def seal(self, position: int, plaintext: bytes | memoryview) -> bytes:
        return self._aead.encrypt(_nonce(position), plaintext, None)

    def open(self, position: int, block: bytes | memoryview, what: str = "block") -> bytes:
        if len(block) < TAG_LEN:
            raise DecryptError(f"{what} is too short to be sealed")
        try:
            return self._aead.decrypt(_nonce(position), block, None)
        except InvalidTag:
            raise DecryptError(f"{what} does not open: wrong key, or a block out of place") from None


class NodeKeys:
    """The subkeys of node ``number`` under a master key."""

    def __init__(self, master: bytes, number: int) -> None:
        self._master = master
        self._number = number
        self.node = StreamKey(subkey(master, "node", number))
        self.data = StreamKey(subkey(master, "data", number))
        self._index: dict[int, StreamKey] = {}

    def index(self, level: int) -> StreamKey:
        key = self._index.get(level)
        if key is None:
            key = self._index[level] = StreamKey(subkey(self._master, "index", self._number, level))
        return key
