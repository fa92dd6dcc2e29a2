"""Content identifiers: CIDv1, codec raw (0x55), multihash sha2-256, of a block's bytes.

The binary form is 36 bytes: ``01 55 12 20`` then the SHA-256 digest. The text form is multibase base32
(lower case, prefix ``b``). Blocks are built in the hot path by prefix + digest; tests check that this is
exactly what the multiformats library produces. Parsing text from users goes through multiformats.
"""

from __future__ import annotations

import base64
import hashlib

from protocol.errors import CidError, CorruptBlockError

CID_PREFIX = bytes([0x01, 0x55, 0x12, 0x20])
CID_LEN = len(CID_PREFIX) + 32
TEXT_LEN = 59  # "b" + base32 of 36 bytes, unpadded


def cid_of(block: bytes | memoryview) -> bytes:
    """The binary CID of ``block``."""
    return CID_PREFIX + hashlib.sha256(block).digest()


def check_cid(cid: bytes) -> bytes:
    """Return ``cid`` if it is a well-formed binary Sealbox CID, else raise :class:`CidError`."""
    if len(cid) != CID_LEN or not cid.startswith(CID_PREFIX):
        raise CidError("not a Sealbox block id (expected CIDv1, raw, sha2-256)")
    return cid


def verify_block(cid: bytes, block: bytes | memoryview) -> None:
    """Raise :class:`CorruptBlockError` unless ``block`` hashes to ``cid``."""
    if hashlib.sha256(block).digest() != cid[len(CID_PREFIX) :]:
        raise CorruptBlockError(f"block {cid_to_text(cid)} is corrupted: its bytes do not match its id")


def cid_to_text(cid: bytes) -> str:
    """Multibase base32 text of a binary CID."""
    return "b" + base64.b32encode(cid).decode("ascii").rstrip("=").lower()


def cid_from_text(text: str) -> bytes:
    """Parse a CID typed or pasted by a user; only CIDv1/raw/sha2-256 is accepted."""
    if not isinstance(text, str) or not 2 <= len(text) <= 200:
        raise CidError("not a block id")
    if len(text) == TEXT_LEN and text.startswith("b"):  # the canonical form: fast, exact
        try:
            body = text[1:].upper()
            raw = base64.b32decode(body + "=" * (-len(body) % 8))
        except ValueError:
            raise CidError(f"not a valid block id: {text[:80]!r}") from None
        if cid_to_text(raw) != text:
            raise CidError(f"not a valid block id: {text[:80]!r}")
        return check_cid(raw)
    from multiformats import CID  # only for the rare non-canonical forms: it is slow to import

    try:
        parsed = CID.decode(text)
    except (ValueError, KeyError, TypeError) as exc:
        raise CidError(f"not a valid block id: {text[:80]!r}") from exc
    if parsed.version != 1 or parsed.codec.name != "raw" or parsed.hashfun.name != "sha2-256":
        raise CidError("unsupported block id: Sealbox uses CIDv1, codec raw, sha2-256")
    raw = bytes(parsed)
    return check_cid(raw)
