#!/usr/bin/env python3
"""Generate specs/vectors/*.json from fixed seeds (or, with --check, verify they are up to date).

Every input is derived from a seed string, so the files are reproducible byte for byte:
``key(seed) = SHA-256("sealbox vector key " + seed)`` and ``data(seed, n)`` is the first n bytes of
``SHA-256(seed || u32be(0)) || SHA-256(seed || u32be(1)) || ...`` (specs/format.md, *Test vectors*).
Trees too large to ship whole (index levels 1 and 2) ship sample blocks: the root, the index blocks on
the way to a few data blocks, and those data blocks.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import msgpack

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from protocol.cid import CID_LEN, cid_of, cid_to_text  # noqa: E402
from protocol.link import ShareLink, format_link  # noqa: E402
from protocol.manifest import Entry, Node, encode_entry, encode_node, fanout  # noqa: E402
from protocol.messages import (  # noqa: E402
    MAX_FRAME,
    PROTOCOL_ID,
    BlockMessage,
    Cancel,
    Have,
    Message,
    NotFound,
    Want,
    encode_message,
    uvarint,
)
from protocol.names import fold_name  # noqa: E402
from protocol.padding import padded_size  # noqa: E402
from protocol.seal import NodeKeys, subkey  # noqa: E402
from protocol.stream import Chunker, IndexBuilder, seal_chunk  # noqa: E402
from protocol.tree import Dir, File, Item, seal_tree  # noqa: E402

VECTORS = ROOT / "specs" / "vectors"
INLINE_LIMIT = 64 * 1024  # vectors whose blocks exceed this list CIDs and a digest instead of bytes


def key(seed: str) -> bytes:
    return hashlib.sha256(b"sealbox vector key " + seed.encode()).digest()


def data(seed: str, length: int) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < length:
        out += hashlib.sha256(seed.encode() + counter.to_bytes(4, "big")).digest()
        counter += 1
    return bytes(out[:length])


def padding_vectors() -> list[dict[str, int]]:
    lengths = [
        0,
        1,
        1023,
        1024,
        1025,
        1100,
        4095,
        4096,
        4097,
        65_537,
        262_144,
        262_145,
        10**6,
        2**30 + 1,
        10**12,
    ]
    return [{"length": n, "padded": padded_size(n)} for n in lengths]


def key_vectors() -> dict[str, Any]:
    master = key("keys")
    rows = []
    for number in (0, 1, 2**32 + 5):
        rows.append({"number": number, "label": "node", "subkey": subkey(master, "node", number).hex()})
        rows.append({"number": number, "label": "data", "subkey": subkey(master, "data", number).hex()})
        for level in (1, 2):
            rows.append(
                {
                    "number": number,
                    "label": "index",
                    "level": level,
                    "subkey": subkey(master, "index", number, level).hex(),
                }
            )
    seal_rows = []
    keys = NodeKeys(master, 0)
    for position, plain in ((0, b""), (1, b"sealbox"), (2**40, data("seal", 100))):
        block = keys.data.seal(position, plain)
        seal_rows.append(
            {
                "subkey_label": "data",
                "number": 0,
                "position": position,
                "nonce": position.to_bytes(12, "big").hex(),
                "plaintext": plain.hex(),
                "block": block.hex(),
                "cid": cid_to_text(cid_of(block)),
            }
        )
    return {"master_key": master.hex(), "subkeys": rows, "seals": seal_rows}


def describe(item: Item) -> dict[str, Any]:
    if isinstance(item, File):
        return {"kind": "file", "executable": item.executable, "data": item.data.hex()}
    return {"kind": "dir", "entries": {name: describe(child) for name, child in sorted(item.entries.items())}}


def tree_cases() -> list[tuple[str, str, Item, int, str | None]]:
    """(case, root name, content, chunk size, None): trees shipped whole, every block inline."""
    return [
        ("small-file", "hello.txt", File(b"Hello, Sealbox!\n"), 256 * 1024, None),
        ("empty-file", "empty", File(b""), 256 * 1024, None),
        ("executable", "run.sh", File(b"#!/bin/sh\necho hi\n", executable=True), 256 * 1024, None),
        ("three-chunks", "three.bin", File(data("three", 40_000)), 16 * 1024, None),
        (
            "folder",
            "photos",
            Dir(
                {
                    "a.txt": File(b"first\n"),
                    "empty-dir": Dir(),
                    "nested": Dir(
                        {"deeper": Dir({"z": File(data("z", 3000), executable=True)}), "empty": File(b"")}
                    ),
                    "\u00e9t\u00e9.md": File("\u00e9t\u00e9\n".encode()),
                }
            ),
            16 * 1024,
            None,
        ),
    ]


def tree_vectors() -> list[dict[str, Any]]:
    out = []
    for case, name, item, chunk_size, _seed in tree_cases():
        master = key(case)
        root, blocks = seal_tree(master, name, item, chunk_size)
        out.append(
            {
                "case": case,
                "master_key": master.hex(),
                "chunk_size": chunk_size,
                "name": name,
                "root": cid_to_text(root),
                "content": describe(item),
                "blocks": {cid_to_text(c): blocks[c].hex() for c in sorted(blocks, key=cid_to_text)},
            }
        )
    cs = 16 * 1024  # the least chunk size: the smallest files that need index blocks
    fan = fanout(cs)
    # level 1: 1,008 data blocks under 3 index blocks (455, 455, 98 CIDs); its last content byte is in
    # data block 1,000 and blocks 1,001-1,007 are padding only
    length = 1000 * cs + 5
    out.append(
        big_file_vector("index-level-1", "big.bin", length, "index", [0, fan - 1, fan, 2 * fan, 1000, 1007])
    )
    # level 2: 116,736 data blocks, 257 level-1 index blocks, 1 level-2 block (a 1.9 GB file of zeros)
    length = 1_900_000_000
    out.append(big_file_vector("index-level-2", "zeros.bin", length, None, [0, fan - 1, fan, 116_735]))
    return out


def big_file_vector(
    case: str, name: str, length: int, seed: str | None, samples: list[int]
) -> dict[str, Any]:
    """A file of ``length`` bytes (``data(seed, length)``, or zeros without a seed) at 16 KiB chunks,
    sealed streaming; the vector ships the root, the data blocks at positions ``samples`` and every
    index block on their way down from the root, and digests of the rest."""
    cs = 16 * 1024
    master = key(case)
    keys = NodeKeys(master, 0)
    content = data(seed, length) if seed is not None else None
    chunker = Chunker(cs)
    index = IndexBuilder(keys, cs)
    kept: dict[bytes, bytes] = {}  # index blocks (all) and the sampled data blocks
    leaves = hashlib.sha256()
    cids: list[str] = []
    total = 0

    def store(cid: bytes, block: bytes, keep: bool) -> None:
        nonlocal total
        cids.append(cid_to_text(cid))
        total += len(block)
        if keep:
            kept[cid] = block

    def seal(position: int, chunk: bytes) -> None:
        cid, block = seal_chunk(keys.data, position, chunk)
        leaves.update(cid)
        store(cid, block, position in samples)
        for index_cid, index_block in index.add(cid):
            store(index_cid, index_block, True)

    zero = bytes(cs)
    for start in range(0, length, cs):
        piece = content[start : start + cs] if content is not None else zero[: min(cs, length - start)]
        for position, chunk in chunker.feed(piece):
            seal(position, chunk)
    for position, chunk in chunker.finish():
        seal(position, chunk)
    level, top, more = index.finish()
    for index_cid, index_block in more:
        store(index_cid, index_block, True)
    node_block = keys.node.seal(0, encode_node(Node("file", length, cs, level, top, False, name)))
    root = cid_of(node_block)
    store(root, node_block, True)
    shipped = [{"stream": "node", "cid": cid_to_text(root), "block": node_block.hex()}]
    for lvl, position, cid in _sample_paths(keys, cs, level, top, kept, samples):
        row: dict[str, Any] = {"stream": "index" if lvl else "data", "level": lvl, "position": position}
        shipped.append({**row, "cid": cid_to_text(cid), "block": kept[cid].hex()})
    counts = Node("file", length, cs, level, top).counts()
    generated: dict[str, Any] = {"data_seed": seed} if seed is not None else {"zeros": True}
    return {
        "case": case,
        "master_key": master.hex(),
        "chunk_size": cs,
        "name": name,
        "root": cid_to_text(root),
        "content": {"kind": "file", "executable": False, **generated, "length": length},
        "levels": counts,
        "block_count": len(cids),
        "block_bytes": total,
        "cids_sha256": hashlib.sha256("\n".join(sorted(cids)).encode()).hexdigest(),
        "leaves_sha256": leaves.hexdigest(),
        "sample_blocks": shipped,
    }


def _sample_paths(
    keys: NodeKeys, cs: int, level: int, top: tuple[bytes, ...], kept: dict[bytes, bytes], samples: list[int]
) -> list[tuple[int, int, bytes]]:
    """``(level, position, cid)`` of every block from the top down to each sampled data block, each
    once, in order (index blocks of the highest level first, data blocks last)."""
    fan = fanout(cs)
    found: dict[tuple[int, int], bytes] = {}
    for sample in samples:
        cid = top[sample // fan**level]
        for lvl in range(level, 0, -1):
            position = sample // fan**lvl
            found[(lvl, position)] = cid
            plain = keys.index(lvl).open(position, kept[cid])
            child = (sample // fan ** (lvl - 1)) % fan
            cid = plain[child * CID_LEN : (child + 1) * CID_LEN]
        found[(0, sample)] = cid
    return [(lvl, pos, found[(lvl, pos)]) for lvl, pos in sorted(found, key=lambda k: (-k[0], k[1]))]


def _pack_pairs(pairs: list[tuple[Any, Any]]) -> bytes:
    """A msgpack map written pair by pair, so that it can repeat a key (``msgpack.packb`` cannot)."""
    out = bytes([0x80 | len(pairs)])
    for k, v in pairs:
        out += msgpack.packb(k, use_bin_type=True) + msgpack.packb(v, use_bin_type=True)
    return out


def invalid_node_vectors() -> list[dict[str, Any]]:
    """Root node blocks that hash and open correctly but whose map breaks the strict msgpack rules
    (specs/format.md, "Encoding"): a decoder MUST refuse each."""
    top = [cid_of(b"sealbox invalid node vector")]
    base: list[tuple[Any, Any]] = [
        ("v", 1),
        ("kind", "file"),
        ("size", 16),
        ("cs", 256 * 1024),
        ("lvl", 0),
        ("top", top),
        ("x", False),
        ("name", "f"),
    ]
    cases: list[tuple[str, list[tuple[Any, Any]], str, str]] = [
        ("repeated-x", [*base, ("x", True)], "bad-manifest", "the map repeats the key 'x'"),
        ("repeated-name", [*base, ("name", "g")], "bad-manifest", "the map repeats the key 'name'"),
        ("repeated-same-value", [base[0], *base], "bad-manifest", "the map repeats 'v' with one value"),
        ("bytes-key", [*base, (b"v", 1)], "bad-manifest", "a map key that is bin, not str"),
        ("too-deep", [("v", [[[1]]]), *base[1:]], "bad-manifest", "containers nest deeper than 2"),
        ("version-2", [("v", 2), *base[1:]], "unsupported-version", "format version 2"),
        ("bool-version", [("v", True), *base[1:]], "bad-manifest", "v is a bool, not an int"),
        ("c1-root-name", [*base[:-1], ("name", "a\u0085b")], "unsafe-name", "the root name holds U+0085"),
        ("device-root-name", [*base[:-1], ("name", "LPT\u00b3.txt")], "unsafe-name", "LPT³ is a device"),
    ]
    out = []
    for case, pairs, category, why in cases:
        master = key("invalid node " + case)
        packed = _pack_pairs(pairs)
        plain = packed + bytes(padded_size(len(packed)) - len(packed))
        block = NodeKeys(master, 0).node.seal(0, plain)
        out.append(
            {
                "case": case,
                "master_key": master.hex(),
                "root": cid_to_text(cid_of(block)),
                "plaintext": plain.hex(),
                "block": block.hex(),
                "category": category,
                "why": why,
            }
        )
    return out


NFC_E, NFD_E = "\u00e9", "e\u0301"

UNSAFE_NAMES: list[tuple[str, str]] = [
    ("", "empty"),
    (".", "dot"),
    ("..", "dot-dot"),
    ("a/b", "slash"),
    ("a\\b", "backslash"),
    ("a\x00b", "NUL"),
    ("tab\there", "C0 control"),
    ("del\x7f", "DEL"),
    ("next\x85line", "C1 control U+0085"),
    ("csi\x9b", "C1 control U+009B"),
    ("x" * 256, "256 bytes"),
    (NFC_E * 128, "256 UTF-8 bytes"),
    ("con", "device name, any case"),
    ("NUL.txt", "device name with an extension"),
    ("Con.tar.gz", "the stem is everything before the first dot"),
    ("CON .txt", "trailing spaces of the stem are ignored"),
    ("aux  ", "trailing spaces of the stem are ignored"),
    ("lpt9.log", "LPT1-LPT9"),
    ("COM\u00b9", "superscript one"),
    ("lpt\u00b2.txt", "superscript two"),
    ("CON\u0131N$", "dotless i uppercases to I"),
    ("conout$", "CONOUT$"),
]
SAFE_NAMES = [
    "a",
    "a..b",
    ".hidden",
    "x" * 255,
    NFC_E * 127,
    NFD_E,
    "\u65e5\u672c\u8a9e.txt",
    "\U0001f600",
    "with space",
    " con",
    "CONSOLE",
    "con_",
    "com10",
    "COM0",
    "LPT\u2074",
    "\u00a0\u00a0",
    "nul\u00a0",
]
COLLIDING = [
    (["a.txt", "A.txt"], "case"),
    ([NFC_E, NFD_E], "NFC beside NFD"),
    (["Caf" + NFD_E, "CAF" + NFC_E], "case and normalization"),
    (["stra\u00dfe", "STRASSE"], "full case folding: \u00df folds to ss"),
    (["\ufb01le", "FILE"], "full case folding: the ligature \ufb01 folds to fi"),
    (["\u212a", "k"], "KELVIN SIGN is canonically K"),
    (["\u03c3", "\u03c2"], "final sigma folds to sigma"),
    (["\u2126", "\u03c9"], "OHM SIGN is canonically \u03a9, which folds to \u03c9"),
]
DISTINCT = [
    (["a", "b"], "different letters"),
    (["e", NFC_E], "an accent is not case"),
    (["\u0131", "i"], "dotless i folds to itself"),
    (["a", "a "], "a trailing space is part of the name"),
    (["\u00c5", "A"], "a ring is not case"),
]


def _utf8(name: str) -> str:
    return name.encode("utf-8", "surrogatepass").hex()


def name_vectors() -> dict[str, Any]:
    """Names one by one (specs/format.md, *Names*) and pairs of names in one folder: a pair collides
    when the names fold alike (``fold`` is NFD(casefold(NFD(name))), given as UTF-8 hex)."""
    for names, _why in DISTINCT:
        assert len({fold_name(n) for n in names}) == len(names), names
    return {
        "unsafe": [
            {"name": n, "utf8": _utf8(n), "category": "unsafe-name", "why": w} for n, w in UNSAFE_NAMES
        ],
        "safe": [{"name": n, "utf8": _utf8(n)} for n in SAFE_NAMES],
        "colliding": [
            {"names": ns, "folded": [_utf8(fold_name(n)) for n in ns], "category": "unsafe-name", "why": w}
            for ns, w in COLLIDING
        ],
        "distinct": [
            {"names": ns, "folded": [_utf8(fold_name(n)) for n in ns], "why": w} for ns, w in DISTINCT
        ],
    }


def _seal_stream(
    keys: NodeKeys, content: bytes, cs: int, blocks: dict[bytes, bytes]
) -> tuple[int, tuple[bytes, ...]]:
    chunker = Chunker(cs)
    index = IndexBuilder(keys, cs)
    for position, chunk in [*chunker.feed(content), *chunker.finish()]:
        cid, block = seal_chunk(keys.data, position, chunk)
        blocks[cid] = block
        blocks.update(index.add(cid))
    level, top, more = index.finish()
    blocks.update(more)
    return level, top


def _raw_folder(master: bytes, names: list[str], cs: int = 16 * 1024) -> tuple[bytes, dict[bytes, bytes]]:
    """A root folder named "folder" whose entries are small files named ``names``, in the order given and
    unchecked (the reference sealer would refuse them): for trees a decoder MUST refuse."""
    blocks: dict[bytes, bytes] = {}

    def node(number: int, kind: str, content: bytes, name: str | None) -> bytes:
        keys = NodeKeys(master, number)
        level, top = _seal_stream(keys, content, cs, blocks)
        block = keys.node.seal(0, encode_node(Node(kind, len(content), cs, level, top, False, name)))  # type: ignore[arg-type]
        blocks[cid_of(block)] = block
        return cid_of(block)

    listing = b"".join(
        encode_entry(Entry(n, i, node(i, "file", f"file {i}\n".encode(), None)))
        for i, n in enumerate(names, 1)
    )
    return node(0, "dir", listing, "folder"), blocks


def invalid_tree_vectors() -> list[dict[str, Any]]:
    """Whole trees (every block inline) that open under their key but that a decoder MUST refuse,
    writing nothing."""
    cases = [
        ("case-collision", ["A.txt", "a.txt"], "unsafe-name"),
        ("normalization-collision", [NFD_E, NFC_E], "unsafe-name"),
        ("casefold-collision", ["STRASSE", "stra\u00dfe"], "unsafe-name"),
        ("c1-control", ["ok", "bad\x9b"], "unsafe-name"),
        ("superscript-device", ["COM\u00b9.txt", "ok"], "unsafe-name"),
        ("unsorted", ["b", "a"], "bad-manifest"),
        ("duplicate", ["a", "a"], "bad-manifest"),
    ]
    out = []
    for case, names, category in cases:
        master = key("invalid tree " + case)
        root, blocks = _raw_folder(master, names)
        out.append(
            {
                "case": case,
                "master_key": master.hex(),
                "root": cid_to_text(root),
                "names": names,
                "category": category,
                "blocks": {cid_to_text(c): blocks[c].hex() for c in sorted(blocks, key=cid_to_text)},
            }
        )
    return out


PEER_ID = "12D3KooWEyoppNCUx8Yx66oV9fJnriXwCcXwDDUA2kj6vnc6iDEp"
PEER_HINTS = [
    (f"/ip4/127.0.0.1/tcp/4001/p2p/{PEER_ID}",),
    (f"/ip6/2001:db8::7/tcp/4001/p2p/{PEER_ID}", f"/dns4/peer-1.example.org/tcp/4001/p2p/{PEER_ID}"),
    ("/dns/example.com/tcp/443/tls/http-path/%2Fsb%3Fa%26b",),
    ("/x/" + ":" * 253,),  # 256 characters, 762 once encoded: the limit is on the hint, not its encoding
    ("/ip6/::1/udp/4001/quic-v1", "/dns6/h_x~y.example/tcp/1/wss"),
]


def link_vectors() -> dict[str, Any]:
    root = cid_of(b"sealbox link vector root")
    master = key("link")
    valid = []
    cases: list[tuple[str | None, int | None, tuple[str, ...]]] = [
        (None, None, ()),
        ("Holiday photos \u00e9t\u00e9 & more", 123_456_789, ()),
        *((None, 0, peers) for peers in PEER_HINTS[:1]),
        ("a/b?c#d", None, PEER_HINTS[1]),
        *((None, None, peers) for peers in PEER_HINTS[2:]),
    ]
    for name, size, peers in cases:
        link = ShareLink(root, master, name, size, peers)
        valid.append(
            {
                "root": cid_to_text(root),
                "key": master.hex(),
                "name": name,
                "size": size,
                "peers": list(peers),
                "link": format_link(link),
            }
        )
    good = valid[0]["link"]
    body = good.rsplit("&c=", 1)[0]
    query, fragment = body.split("#")
    v6 = "pe=/ip6/%3A%3A1/tcp/4001"

    def hinted(*hints: str) -> str:
        return _with_checksum(query + "".join("&" + h for h in hints) + "#" + fragment)

    invalid = [
        (good.replace("sealbox:", "magnet:", 1), "bad-link", "not a sealbox: link"),
        (body, "damaged-link", "no checksum"),
        (good[:-1] + ("0" if good[-1] != "0" else "1"), "damaged-link", "checksum mismatch"),
        (good.split("#")[0], "damaged-link", "no fragment"),
        (_with_checksum(body.replace("v=1", "v=2", 1)), "unsupported-version", "version 2"),
        (_with_checksum(body + "&zz=1"), "bad-link", "unknown parameter"),
        (_with_checksum(body.replace("k=", "k=A", 1)), "bad-link", "key is 44 characters"),
        (_with_checksum(body.replace(cid_to_text(root), cid_to_text(root)[:20], 1)), "bad-link", "root cut"),
        (
            _with_checksum(body.replace("xt=urn:sealbox:b", "xt=urn:sealbox:B", 1)),
            "bad-link",
            "upper-case root",
        ),
        (_with_checksum(body + "&xl=01"), "bad-link", "size with a leading zero"),
        ("sealbox:?" + "a" * 5000, "bad-link", "over 4,096 characters"),
        (_with_checksum(body.replace("v=1", "v=1&v=1", 1)), "bad-link", "v repeated"),
        (_with_checksum(_repeat(body, "xt=")), "bad-link", "xt repeated"),
        (_with_checksum(_repeat(body, "k=")), "bad-link", "k repeated"),
        (_with_checksum(body.replace(cid_to_text(root), "u=", 1)), "bad-link", "root is not a CID"),
        (hinted(v6.replace("%3A", "%3a")), "bad-link", "lower-case hex in a peer hint"),
        (hinted("pe=/ip6/::1/tcp/4001"), "bad-link", "':' not percent-encoded"),
        (hinted("pe=/x%2Fy"), "bad-link", "'/' percent-encoded"),
        (hinted("pe=/a%7Eb"), "bad-link", "'~' percent-encoded"),
        (hinted("pe=/x/" + "a" * 254), "bad-link", "a hint of 257 characters"),
        (hinted("pe=/a%20b"), "bad-link", "a space in a hint"),
        (hinted("pe=/caf%C3%A9"), "bad-link", "a non-ASCII hint"),
        (hinted("pe=ip4/1.2.3.4"), "bad-link", "a hint not starting with '/'"),
        (hinted(*[v6] * 9), "bad-link", "nine hints"),
        (_with_checksum(body.replace("&xt=", "&" + v6 + "&xt=", 1)), "bad-link", "a hint before xt"),
        (_with_checksum(body.replace("#k=", "#" + v6 + "&k=", 1)), "bad-link", "a hint in the fragment"),
    ]
    return {"valid": valid, "invalid": [{"link": t, "category": c, "why": w} for t, c, w in invalid]}


def exchange_vectors() -> dict[str, Any]:
    cid = cid_of(b"sealbox exchange vector")
    frames = []
    messages: list[Message] = [
        Want(1, cid),
        BlockMessage(2, data("block", 48)),
        NotFound(3),
        Cancel(4),
        Have(3),
        Want(2**32 - 1, cid),
    ]
    for message in messages:
        frames.append(
            {
                "message": type(message).__name__.removesuffix("Message"),  # the spec's name: Block
                "fields": _fields(message),
                "frame": encode_message(message).hex(),
            }
        )
    invalid = [
        {"frame": "00", "category": "bad-message", "why": "a frame of length 0"},
        {"frame": "8000", "category": "bad-message", "why": "a length prefix not in its shortest form"},
        {"frame": "8080808001", "category": "bad-message", "why": "a length prefix of more than 4 bytes"},
        {
            "frame": uvarint(MAX_FRAME + 1).hex(),
            "category": "bad-message",
            "why": "a frame longer than max_frame",
        },
        {"frame": "039209" + "01", "category": "bad-message", "why": "an unknown message type (9)"},
        {"frame": "029101", "category": "bad-message", "why": "a message with the wrong number of fields"},
        {
            "frame": _frame([1, 1, b"x" * 36]).hex(),
            "category": "bad-message",
            "why": "a WANT whose block id is not a CID",
        },
        {"frame": _frame([3, 2**32]).hex(), "category": "bad-message", "why": "a request id over 2^32 - 1"},
    ]
    return {"protocol": PROTOCOL_ID, "max_frame": MAX_FRAME, "frames": frames, "invalid": invalid}


def _fields(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"request": message.request}
    if isinstance(message, Want):
        out["cid"] = cid_to_text(message.cid)
    if isinstance(message, BlockMessage):
        out["data"] = message.data.hex()
    return out


def _frame(fields: list[Any]) -> bytes:
    body = msgpack.packb(fields, use_bin_type=True)
    return uvarint(len(body)) + body


def _repeat(body: str, prefix: str) -> str:
    """``body`` with its parameter starting ``prefix`` given twice, the copy right after it."""
    start = body.index(prefix)
    end = min((i for i in (body.find("&", start), body.find("#", start)) if i != -1), default=len(body))
    return body[:end] + "&" + body[start:end] + body[end:]


def _with_checksum(body: str) -> str:
    return body + "&c=" + hashlib.sha256(body.encode("ascii")).hexdigest()[:8]


def build() -> dict[str, Any]:
    return {
        "padding.json": padding_vectors(),
        "keys.json": key_vectors(),
        "trees.json": tree_vectors(),
        "links.json": link_vectors(),
        "exchange.json": exchange_vectors(),
        "invalid-nodes.json": invalid_node_vectors(),
        "invalid-trees.json": invalid_tree_vectors(),
        "names.json": name_vectors(),
    }


def render(value: Any) -> str:
    return json.dumps(value, indent=1, ensure_ascii=False) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--check", action="store_true", help="fail if the files differ from what would be written"
    )
    args = parser.parse_args()
    stale = []
    for filename, value in build().items():
        path = VECTORS / filename
        text = render(value)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(filename)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print(f"stale vectors: {', '.join(stale)}; run scripts/gen_vectors.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
