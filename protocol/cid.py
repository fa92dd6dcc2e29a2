"""Content identifiers: CIDv1, codec raw (0x55), multihash sha2-256, of a block's bytes.

The binary form is 36 bytes: ``01 55 12 20`` then the SHA-256 digest. The text form is multibase base32
(lower case, prefix ``b``). Blocks are built in the hot path by prefix + digest; tests check that this is
exactly what the multiformats library produces. The parts of a binary CID are taken out here only
(:func:`cid_digest`, :func:`cid_multihash`, :func:`split_cids`; :func:`cid_from_digest` the other way),
so no other module slices one by hand. Parsing text from users uses the standard library
only (multiformats raised undocumented errors, e.g. IndexError on ``"u="``), and tests check it against
multiformats' encodings.
"""

from __future__ import annotations

import base64
import hashlib

from protocol.errors import CidError, CorruptBlockError

MULTIHASH_PREFIX = bytes([0x12, 0x20])  # sha2-256, 32 bytes
CID_PREFIX = bytes([0x01, 0x55]) + MULTIHASH_PREFIX  # CIDv1, raw, then the multihash's prefix
DIGEST_LEN = 32
CID_LEN = len(CID_PREFIX) + DIGEST_LEN
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


def cid_digest(cid: bytes) -> bytes:
    """The sha2-256 digest ``cid`` names (:class:`CidError` if it is not a Sealbox CID): what the block
    index is keyed on."""
    return check_cid(cid)[len(CID_PREFIX) :]


def cid_from_digest(digest: bytes | memoryview) -> bytes:
    """The CID naming the sha2-256 digest ``digest``, as the block index holds it. Not checked here: a
    damaged index row still names its block in a report, and its CID fails :func:`check_cid` where used."""
    return CID_PREFIX + bytes(digest)


def cid_multihash(cid: bytes) -> bytes:
    """The multihash inside ``cid`` (its digest behind ``MULTIHASH_PREFIX``): the DHT's key of a root."""
    return check_cid(cid)[len(CID_PREFIX) - len(MULTIHASH_PREFIX) :]


def split_cids(data: bytes | memoryview) -> list[bytes]:
    """The CIDs of a list of binary CIDs back to back (a pin's block list, an index block), each checked:
    :class:`CidError` if its length is not a whole number of CIDs or one of them is malformed."""
    if len(data) % CID_LEN:
        raise CidError("a list of block ids has a partial one at its end")
    return [check_cid(bytes(data[i : i + CID_LEN])) for i in range(0, len(data), CID_LEN)]


def cid_to_text(cid: bytes) -> str:
    """Multibase base32 text of a binary CID."""
    return "b" + base64.b32encode(cid).decode("ascii").rstrip("=").lower()


# multibase prefixes a user may paste a Sealbox CID in (the ones other IPFS tools print), and their
# alphabets; rfc4648 bases pack bits (no padding), the others are big-endian numbers
_RFC4648 = {
    "b": "abcdefghijklmnopqrstuvwxyz234567",
    "B": "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567",
    "f": "0123456789abcdef",
    "F": "0123456789ABCDEF",
    "m": "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
    "u": "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
}
_NUMERIC = {
    "k": "0123456789abcdefghijklmnopqrstuvwxyz",
    "K": "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "z": "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz",
}
_CASELESS = frozenset("bBfFkK")
MAX_TEXT_LEN = 200  # far above the longest supported spelling (base16: 73 characters)


def _rfc4648_encode(data: bytes, alphabet: str) -> str:
    bits = len(alphabet).bit_length() - 1
    value = int.from_bytes(data, "big")
    total = len(data) * 8
    count = -(-total // bits)
    value <<= count * bits - total
    return "".join(alphabet[(value >> (bits * (count - 1 - i))) & ((1 << bits) - 1)] for i in range(count))


def _numeric_encode(data: bytes, alphabet: str) -> str:
    zeros = len(data) - len(data.lstrip(b"\0"))
    value = int.from_bytes(data, "big")
    digits = []
    while value:
        value, digit = divmod(value, len(alphabet))
        digits.append(alphabet[digit])
    return alphabet[0] * zeros + "".join(reversed(digits))


def _multibase_decode(text: str) -> bytes | None:
    """The bytes of a multibase text in one of the supported bases, or None. Pure stdlib: every check
    is made here (prefix, alphabet, canonical spelling: the bytes must encode back to exactly the same
    text), so nothing depends on which exceptions a multibase library raises on odd input."""
    if not text.isascii():  # before any case folding: "\u017f".upper() is "S", "\u212a".lower() "k"
        return None
    prefix, body = text[0], text[1:]
    if prefix in _CASELESS:  # these bases ignore case, as multibase decoders do: "Bafk..." is read
        body = body.upper() if prefix.isupper() else body.lower()
    if prefix in _RFC4648:
        alphabet = _RFC4648[prefix]
        bits = len(alphabet).bit_length() - 1
        if not body or any(c not in alphabet for c in body):
            return None
        value = 0
        for c in body:
            value = value << bits | alphabet.index(c)
        length = len(body) * bits // 8
        data = (value >> (len(body) * bits - length * 8)).to_bytes(length, "big")
        return data if _rfc4648_encode(data, alphabet) == body else None
    if prefix in _NUMERIC:
        alphabet = _NUMERIC[prefix]
        if not body or any(c not in alphabet for c in body):
            return None
        value = 0
        for c in body:
            value = value * len(alphabet) + alphabet.index(c)
        zeros = len(body) - len(body.lstrip(alphabet[0]))
        data = bytes(zeros) + value.to_bytes((value.bit_length() + 7) // 8, "big")
        return data if _numeric_encode(data, alphabet) == body else None
    return None


def cid_from_text(text: str) -> bytes:
    """Parse a CID typed or pasted by a user; only CIDv1/raw/sha2-256 is accepted.

    Accepted spellings: the canonical base32 (``b...``) and, for pasted CIDs, base32 upper case, base16,
    base36, base58btc, base64 and base64url, each in its canonical spelling only (but for the case of
    base32, base16 and base36). Decoded with the standard library alone: any malformed text raises
    :class:`CidError` and nothing else.
    """
    if not isinstance(text, str) or not 2 <= len(text) <= MAX_TEXT_LEN:
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
    decoded = _multibase_decode(text)
    if decoded is None:
        if text.startswith("Qm") and len(text) == 46:
            raise CidError("unsupported block id (CIDv0): Sealbox uses CIDv1, codec raw, sha2-256")
        raise CidError(f"not a valid block id: {text[:80]!r}")
    if len(decoded) != CID_LEN or not decoded.startswith(CID_PREFIX):
        if decoded[:1] == b"\x01":
            raise CidError("unsupported block id: Sealbox uses CIDv1, codec raw, sha2-256")
        raise CidError(f"not a valid block id: {text[:80]!r}")
    return decoded
