"""Share links: the wire form ``sealbox:?v=1&xt=...#k=...&c=...`` <-> :class:`ShareLink`.

Everything a web gateway may see sits before ``#`` (version, root CID, peer hints); everything secret or
identifying sits in the fragment, which HTTP clients never send (the key, the display name, the size).
The link ends with a checksum over all that precedes it, so a damaged or truncated copy is refused
before anything is fetched. Encoding is canonical: a link parses only if re-encoding gives it back.
See ``specs/share-link.md``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

from protocol.cid import cid_from_text, cid_to_text
from protocol.errors import CidError, LinkDamagedError, LinkError, LinkVersionError
from protocol.manifest import MAX_SIZE
from protocol.seal import KEY_LEN

SCHEME = "sealbox:"
LINK_VERSION = 1
MAX_LINK_LEN = 4096
MAX_PEERS = 8
MAX_PEER_LEN = 256
MAX_DISPLAY_NAME = 255
_KEY_RE = re.compile(r"[A-Za-z0-9_-]{43}")
_SIZE_RE = re.compile(r"0|[1-9][0-9]{0,18}")
_CHECK_RE = re.compile(r"[0-9a-f]{8}")


@dataclass(frozen=True)
class ShareLink:
    """What a share link carries. ``name``, ``size`` and ``peers`` are optional, opt-in hints."""

    root: bytes
    key: bytes = field(repr=False)
    name: str | None = None
    size: int | None = None
    peers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.key) != KEY_LEN:
            raise LinkError("a link key is 32 bytes")
        if self.name is not None:
            _check_display_name(self.name)
        if self.size is not None and not 0 <= self.size <= MAX_SIZE:
            raise LinkError("link size out of range")
        if len(self.peers) > MAX_PEERS:
            raise LinkError(f"a link carries at most {MAX_PEERS} peer addresses")
        for peer in self.peers:
            _check_peer(peer)
        if len(format_link(self)) > MAX_LINK_LEN:
            raise LinkError(
                f"link would be longer than {MAX_LINK_LEN} characters: carry fewer peer addresses"
            )

    def __str__(self) -> str:
        return format_link(self)


def _check_display_name(name: str) -> None:
    if not name or len(name.encode("utf-8", "surrogatepass")) > MAX_DISPLAY_NAME:
        raise LinkError(f"display name must be 1 to {MAX_DISPLAY_NAME} bytes")
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 or 0xD800 <= ord(c) < 0xE000 for c in name):
        raise LinkError("display name holds control characters")


def _check_peer(peer: str) -> None:
    if not (
        1 < len(peer) <= MAX_PEER_LEN and peer.startswith("/") and all(0x21 <= ord(c) < 0x7F for c in peer)
    ):
        raise LinkError("peer address in link is not a multiaddr")


def _checksum(text: str) -> str:
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:8]


def format_link(link: ShareLink) -> str:
    query = [f"v={LINK_VERSION}", f"xt=urn:sealbox:{cid_to_text(link.root)}"]
    query += [f"pe={quote(peer, safe='/')}" for peer in link.peers]
    fragment = ["k=" + base64.urlsafe_b64encode(link.key).decode("ascii").rstrip("=")]
    if link.name is not None:
        fragment.append("dn=" + quote(link.name, safe=""))
    if link.size is not None:
        fragment.append(f"xl={link.size}")
    body = SCHEME + "?" + "&".join(query) + "#" + "&".join(fragment)
    return body + "&c=" + _checksum(body)


REPEATABLE = frozenset({"pe"})  # the one parameter a link may carry more than once


def _params(part: str) -> list[tuple[str, str]]:
    """``name=value`` pairs in order. A name other than ``pe`` given twice is refused here, before any
    value is looked at, so no reader can pick the first copy and another the last."""
    pairs = []
    seen: set[str] = set()
    for item in part.split("&"):
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise LinkError("link is malformed: expected name=value parameters")
        if name in seen and name not in REPEATABLE:
            raise LinkError(f"link repeats the parameter {name[:16]!r}")
        seen.add(name)
        pairs.append((name, value))
    return pairs


def parse_link(text: str) -> ShareLink:
    """Parse a share link; anything malformed, damaged or unknown raises :class:`LinkError` (its
    subclasses :class:`LinkDamagedError` and :class:`LinkVersionError` for a cut or changed copy and
    for a version this program does not read)."""
    if not isinstance(text, str):
        raise LinkError("link must be text")
    text = text.strip()
    if len(text) > MAX_LINK_LEN:
        raise LinkError(f"link is longer than {MAX_LINK_LEN} characters")
    if not text.startswith(SCHEME + "?"):
        raise LinkError("not a sealbox link: it must start with 'sealbox:?'")
    if not text.isascii() or not text.isprintable():
        raise LinkError("link holds characters a link cannot hold: copy it again")
    body, sep, check = text.rpartition("&c=")
    if not sep or "#" not in body:
        raise LinkDamagedError("link is incomplete: copy the whole link, including the part after '#'")
    if not _CHECK_RE.fullmatch(check) or check != _checksum(body):
        raise LinkDamagedError("link is damaged (checksum mismatch): copy it again")
    query, _, fragment = body[len(SCHEME) + 1 :].partition("#")
    root, peers = _parse_query(query)
    key, display, size = _parse_fragment(fragment)
    try:
        link = ShareLink(root, key, display, size, peers)
    except ValueError as exc:
        raise LinkError(str(exc)) from None
    if format_link(link) != text:
        raise LinkError("link is not in canonical form: copy it again")
    return link


def _parse_query(query: str) -> tuple[bytes, tuple[str, ...]]:
    """``v`` first, then one ``xt``, then ``pe`` only: the root and the peer hints (decoded)."""
    qparams = _params(query)
    if not qparams or qparams[0][0] != "v":
        raise LinkError("link has no version")
    if qparams[0][1] != str(LINK_VERSION):
        raise LinkVersionError(
            f"link version {qparams[0][1][:8]!r} is not supported by this sealbox: upgrade it"
        )
    root: bytes | None = None
    peers: list[str] = []
    for name, value in qparams[1:]:
        if name == "xt" and root is None and not peers:
            if not value.startswith("urn:sealbox:"):
                raise LinkError("link's xt is not a sealbox root")
            try:
                root = cid_from_text(value[len("urn:sealbox:") :])
            except CidError as exc:
                raise LinkError(f"link's root is invalid: {exc}") from None
        elif name == "pe" and root is not None:
            peers.append(_unquote(value))
        else:
            raise LinkError(f"link has an unexpected parameter {name[:16]!r}")
    if root is None:
        raise LinkError("link has no root (xt)")
    return root, tuple(peers)


def _parse_fragment(fragment: str) -> tuple[bytes, str | None, int | None]:
    """``k``, then optional ``dn`` and ``xl``, in that order: the key, display name and size."""
    key: bytes | None = None
    display: str | None = None
    size: int | None = None
    order = ["k", "dn", "xl"]
    last = -1
    for name, value in _params(fragment):
        if name not in order or order.index(name) <= last:
            raise LinkError(f"link has an unexpected parameter {name[:16]!r}")
        last = order.index(name)
        if name == "k":
            key = _decode_key(value)
        elif name == "dn":
            display = _unquote(value)
        else:
            if not _SIZE_RE.fullmatch(value):
                raise LinkError("link size is not a number")
            size = int(value)
    if key is None:
        raise LinkError("link has no key: copy the whole link, including the part after '#'")
    return key, display, size


def _decode_key(value: str) -> bytes:
    if not _KEY_RE.fullmatch(value):
        raise LinkError("link key is malformed")
    try:
        key = base64.urlsafe_b64decode(value + "=")
    except binascii.Error:
        raise LinkError("link key is malformed") from None
    return key


def _unquote(value: str) -> str:
    try:
        return unquote(value, errors="strict")
    except UnicodeDecodeError:
        raise LinkError("link holds badly encoded text") from None
