#!/usr/bin/env python3
"""Generate specs/vectors/*.json from fixed seeds (or, with --check, verify they are up to date).

Every input is derived from a seed string, so the files are reproducible byte for byte:
``key(seed) = SHA-256("sealbox vector key " + seed)`` and ``data(seed, n)`` is the first n bytes of
``SHA-256(seed || u32be(0)) || SHA-256(seed || u32be(1)) || ...``.
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

from protocol.cid import cid_of, cid_to_text  # noqa: E402
from protocol.link import ShareLink, format_link  # noqa: E402
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
from protocol.padding import padded_size  # noqa: E402
from protocol.seal import NodeKeys, subkey  # noqa: E402
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
    """(case, root name, content, chunk size, seed of a generated file or None)."""
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
        ("index-level-1", "big.bin", File(data("index", 300 * 16 * 1024)), 16 * 1024, "index"),
    ]


def tree_vectors() -> list[dict[str, Any]]:
    out = []
    for case, name, item, chunk_size, seed in tree_cases():
        master = key(case)
        root, blocks = seal_tree(master, name, item, chunk_size)
        vector: dict[str, Any] = {
            "case": case,
            "master_key": master.hex(),
            "chunk_size": chunk_size,
            "name": name,
            "root": cid_to_text(root),
        }
        if seed is not None and isinstance(item, File):
            vector["content"] = {
                "kind": "file",
                "executable": item.executable,
                "data_seed": seed,
                "length": len(item.data),
            }
            cids = sorted(cid_to_text(c) for c in blocks)
            vector["block_count"] = len(cids)
            vector["block_bytes"] = sum(len(b) for b in blocks.values())
            vector["cids_sha256"] = hashlib.sha256("\n".join(cids).encode()).hexdigest()
        else:
            vector["content"] = describe(item)
            vector["blocks"] = {cid_to_text(c): blocks[c].hex() for c in sorted(blocks, key=cid_to_text)}
        out.append(vector)
    return out


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
    cases: list[tuple[str, list[tuple[Any, Any]], str]] = [
        ("repeated-x", [*base, ("x", True)], "repeats the map key 'x'"),
        ("repeated-name", [*base, ("name", "g")], "repeats the map key 'name'"),
        ("repeated-same-value", [base[0], *base], "repeats the map key 'v'"),
        ("bytes-key", [*base, (b"v", 1)], "map key that is not text"),
        ("too-deep", [("v", [[[1]]]), *base[1:]], "nests deeper than 2 levels"),
    ]
    out = []
    for case, pairs, error in cases:
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
                "error": error,
            }
        )
    return out


def link_vectors() -> dict[str, Any]:
    root = cid_of(b"sealbox link vector root")
    master = key("link")
    valid = []
    for name, size, peers in (
        (None, None, ()),
        ("Holiday photos \u00e9t\u00e9 & more", 123_456_789, ()),
        (None, 0, ("/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWEyoppNCUx8Yx66oV9fJnriXwCcXwDDUA2kj6vnc6iDEp",)),
    ):
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
    invalid = [
        {"link": good.replace("sealbox:", "magnet:", 1), "error": "not a sealbox link"},
        {"link": body, "error": "incomplete"},
        {"link": good[:-1] + ("0" if good[-1] != "0" else "1"), "error": "checksum"},
        {"link": good.split("#")[0], "error": "incomplete"},
        {"link": _with_checksum(body.replace("v=1", "v=2", 1)), "error": "not supported"},
        {"link": _with_checksum(body + "&zz=1"), "error": "unexpected parameter"},
        {"link": _with_checksum(body.replace("k=", "k=A", 1)), "error": "key is malformed"},
        {
            "link": _with_checksum(body.replace(cid_to_text(root), cid_to_text(root)[:20], 1)),
            "error": "root is invalid",
        },
        {
            "link": _with_checksum(body.replace("xt=urn:sealbox:b", "xt=urn:sealbox:B", 1)),
            "error": "canonical form",
        },
        {"link": _with_checksum(body + "&xl=01"), "error": "not a number"},
        {"link": "sealbox:?" + "a" * 5000, "error": "longer than"},
        {"link": _with_checksum(body.replace("v=1", "v=1&v=1", 1)), "error": "repeats the parameter 'v'"},
        {"link": _with_checksum(_repeat(body, "xt=")), "error": "repeats the parameter 'xt'"},
        {"link": _with_checksum(_repeat(body, "k=")), "error": "repeats the parameter 'k'"},
        {
            "link": _with_checksum(body.replace(cid_to_text(root), "u=", 1)),
            "error": "root is invalid",
        },
    ]
    return {"valid": valid, "invalid": invalid}


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
        {"frame": "00", "error": "empty frame"},
        {"frame": "8000", "error": "not minimally encoded"},
        {"frame": "8080808001", "error": "prefix is too long"},
        {"frame": uvarint(MAX_FRAME + 1).hex(), "error": "over the"},
        {"frame": "039209" + "01", "error": "unknown message type"},
        {"frame": "029101", "error": "wrong number of fields"},
        {"frame": _frame([1, 1, b"x" * 36]).hex(), "error": "malformed block id"},
        {"frame": _frame([3, 2**32]).hex(), "error": "bad request id"},
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
