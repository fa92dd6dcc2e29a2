#!/usr/bin/env python3
"""Mutation fuzzer for every Sealbox decoder of untrusted bytes (one process, one core).

Each target starts from valid encodings (seeds) and feeds its decoder N mutated copies: bit flips,
byte sets (with msgpack markers and link punctuation among the values), truncations, insertions,
deletions, duplicated slices (which repeat map keys and frames) and splices of two seeds. A decoder may
refuse an input only with its layer's own error classes (``protocol/errors.py``'s ProtocolError, and
for pin files ``node/errors.py``'s NodeError); anything else is a crash: it is counted by exception
type and place, and the first input of each kind is written to ``--crashes DIR`` as a reproducer
(``TARGET-TYPE-SHA.bin``; replay it with ``--replay FILE``). Every seed is made from fixed, public
values (no real key, link, name or path), so a reproducer holds nothing secret.

    scripts/fuzz.py --crashes /tmp/crashes                 # 10^6 inputs per target
    scripts/fuzz.py -n 100000 --targets node,pins --crashes /tmp/crashes
    scripts/fuzz.py --replay /tmp/crashes/node-TypeError-0123abcd.bin

Exits 1 if any crash was found. ``tests/protocol/test_fuzz.py`` runs the same targets and mutations, a few
hundred inputs each, under hypothesis.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import random
import sys
import tempfile
import time
import traceback
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgpack

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from node.errors import NodeError  # noqa: E402
from node.store.repo import Pin, Repo  # noqa: E402
from protocol.cid import CID_PREFIX, cid_from_text, cid_of, cid_to_text  # noqa: E402
from protocol.errors import ProtocolError  # noqa: E402
from protocol.link import ShareLink, format_link, parse_link  # noqa: E402
from protocol.manifest import (  # noqa: E402
    Entry,
    EntryDecoder,
    Node,
    chunk_count,
    decode_node,
    encode_entry,
    encode_node,
    level_counts,
)
from protocol.messages import (  # noqa: E402
    BlockMessage,
    Cancel,
    FrameDecoder,
    Have,
    NotFound,
    Want,
    decode_body,
    encode_message,
)
from protocol.padding import padded_size  # noqa: E402

# values a byte is set to besides random ones: msgpack type markers, small ints, link punctuation
INTERESTING = [0x00, 0x01, 0x7F, 0x80, 0xFF, 0x90, 0x93, 0xA0, 0xC0, 0xC2, 0xC3, 0xC4, 0xCC, 0xCF]
INTERESTING += [0xD0, 0xD9, 0xDC, 0xDD, 0xDE, 0xDF, 0xC1, 0xC7, 0xCB, 0x92, 0x81, 0x8F]
INTERESTING += [*b"=&#%?:/.-_+ Qbzuk0", 0x0A, 0xE9]
Op = tuple[int, int, int, int]  # (kind, position, value, length)
N_OPS = 7


def mutate(seed: bytes, ops: Sequence[Op], others: Sequence[bytes]) -> bytes:
    """Apply ``ops`` to ``seed``; deterministic, so hypothesis and the script share it."""
    data = bytearray(seed)
    for kind, position, value, length in ops:
        at = position % (len(data) + 1)
        if kind == 0 and data:  # flip one bit
            data[at % len(data)] ^= 1 << (value % 8)
        elif kind == 1 and data:  # set a byte
            data[at % len(data)] = INTERESTING[value % len(INTERESTING)] if value & 256 else value % 256
        elif kind == 2:  # truncate
            del data[at:]
        elif kind == 3:  # insert bytes
            data[at:at] = bytes((value + i * 37) % 256 for i in range(length % 9 or 1))
        elif kind == 4:  # delete a range
            del data[at : at + length]
        elif kind == 5:  # duplicate a slice somewhere else (repeats keys, entries, frames)
            piece = data[at : at + length]
            where = value % (len(data) + 1)
            data[where:where] = piece
        elif kind == 6 and others:  # splice: our head, another seed's tail
            other = others[value % len(others)]
            data = data[:at] + other[length % (len(other) + 1) :]
    return bytes(data)


def random_ops(rng: random.Random) -> list[Op]:
    return [
        (rng.randrange(N_OPS), rng.getrandbits(16), rng.getrandbits(9), rng.choice((1, 2, 3, 4, 8, 16, 40)))
        for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4)))
    ]


# values a structured mutation puts in a map or array: edge ints, odd floats, wrong types, nesting
ODD_VALUES: list[object] = [
    0,
    1,
    -1,
    2**63 - 1,
    2**64 - 1,
    -(2**63),
    1e300,
    float("nan"),
    float("inf"),
    -0.0,
    True,
    False,
    None,
    "",
    "v",
    "file",
    "dir",
    "x" * 300,
    "..",
    "a/b",
    b"",
    CID_PREFIX + bytes(32),
    bytes(36),
    [],
    [b"x"],
    {},
    {"v": 1},
    {b"v": 1},
    [[[[[[[[[[1]]]]]]]]]],
    "CON",
]


class Raw(bytes):
    """Bytes put in a structured input as they are, not packed: what msgpack's packer refuses to write
    (1,000 nested arrays; a str that is not UTF-8)."""


ODD_VALUES += [Raw(b"\x91" * 1000 + b"\x01"), Raw(b"\xa2\xed\xa0"), Raw(b"\xc1"), Raw(b"\xd4\x01\x00")]


def _pack(value: object) -> bytes:
    if isinstance(value, Raw):
        return bytes(value)
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


def pack_pairs(pairs: Sequence[tuple[object, object]]) -> bytes:
    """A msgpack map written pair by pair: it may repeat a key, which ``msgpack.packb`` cannot."""
    n = len(pairs)
    head = bytes([0x80 | n]) if n < 16 else b"\xde" + n.to_bytes(2, "big")
    return head + b"".join(_pack(k) + _pack(v) for k, v in pairs)


def pack_items(items: Sequence[object]) -> bytes:
    n = len(items)
    head = bytes([0x90 | n]) if n < 16 else b"\xdc" + n.to_bytes(2, "big")
    return head + b"".join(_pack(v) for v in items)


def restructure(obj: object, ops: Sequence[Op]) -> bytes | None:
    """Edit a decoded seed (a map or an array) at the msgpack level and encode it again: a key made
    bytes or repeated with another value, a value replaced by an odd one, an element dropped or added.
    None if ``obj`` is neither."""
    if isinstance(obj, dict):
        pairs: list[tuple[object, object]] = list(obj.items())
        for kind, position, value, _length in ops:
            at = position % (len(pairs) or 1)
            odd = ODD_VALUES[value % len(ODD_VALUES)]
            if not pairs:
                pairs.append(("v", odd))
            elif kind % 5 == 0:  # a key as bytes
                k, v = pairs[at]
                pairs[at] = (k.encode() if isinstance(k, str) else k, v)
            elif kind % 5 == 1:  # the same key again, another value
                pairs.insert(value % (len(pairs) + 1), (pairs[at][0], odd))
            elif kind % 5 == 2:
                pairs[at] = (pairs[at][0], odd)
            elif kind % 5 == 3:
                del pairs[at]
            else:
                pairs.insert(at, (odd if isinstance(odd, str | bytes | int) else "k", odd))
        return pack_pairs(pairs)
    if isinstance(obj, list):
        items = list(obj)
        for kind, position, value, _length in ops:
            at = position % (len(items) or 1)
            odd = ODD_VALUES[value % len(ODD_VALUES)]
            if kind % 3 == 0 and items:
                items[at] = odd
            elif kind % 3 == 1 and items:
                del items[at]
            else:
                items.insert(at, odd)
        return pack_items(items)
    return None


def structured(seed: bytes, ops: Sequence[Op]) -> bytes:
    """Apply :func:`restructure` to every msgpack object of ``seed`` (a listing holds several; a node
    block's zero padding is dropped)."""
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
    unpacker.feed(seed)
    out = []
    for i, obj in enumerate(unpacker):
        if obj == 0 and i:  # the padding of a node block, read as zeros
            break
        mine = [op for j, op in enumerate(ops) if j % (i + 1) == 0] or list(ops)
        out.append(restructure(obj, mine) or msgpack.packb(obj, use_bin_type=True))
    return b"".join(out)


def chunks(data: bytes) -> list[bytes]:
    """Cut ``data`` in pieces whose sizes come from the data itself (so a reproducer file alone
    replays the same feeds)."""
    rng = random.Random(zlib.crc32(data))
    out, at = [], 0
    while at < len(data):
        step = rng.choice((1, 2, 3, 7, 64, 1000, len(data)))
        out.append(data[at : at + step])
        at += step
    return out


@dataclass
class Target:
    name: str
    seeds: list[bytes]
    decode: Callable[[bytes], object]
    allowed: tuple[type[Exception], ...] = (ProtocolError,)
    # a structured mutation for inputs that hold msgpack (1 input in 4 is made by it)
    edit: Callable[[bytes, Sequence[Op]], bytes] | None = None

    def input(self, i: int, rng: random.Random) -> bytes:
        """The ``i``-th input of a run: the seeds first, then mutations of them."""
        source = self.seeds[i % len(self.seeds)]
        if i < len(self.seeds):
            return source
        ops = random_ops(rng)
        if self.edit is not None and rng.random() < 0.25:
            return self.edit(source, ops)
        return mutate(source, ops, self.seeds)


# -- seeds: valid encodings, from fixed values ---------------------------------------------------------

FIXED_KEY = hashlib.sha256(b"sealbox fuzz seed key").digest()


def fake_cids(n: int, tag: str) -> tuple[bytes, ...]:
    return tuple(cid_of(f"{tag} {i}".encode()) for i in range(n))


def valid_node(kind: str, size: int, cs: int, name: str | None, executable: bool = False) -> Node:
    counts = level_counts(chunk_count(size, cs), cs)
    top = fake_cids(counts[-1], f"{kind} {size}")
    return Node(kind, size, cs, len(counts) - 1, top, executable, name)  # type: ignore[arg-type]


def node_seeds() -> list[bytes]:
    return [
        unpadded(valid_node("file", 16, 256 * 1024, "hello.txt")),
        unpadded(valid_node("file", 40_000, 16 * 1024, None, executable=True)),
        unpadded(valid_node("dir", 300, 16 * 1024, "photos")),
        unpadded(valid_node("dir", 0, 16 * 1024, None)),
        unpadded(valid_node("file", 300 * 16 * 1024, 16 * 1024, "big.bin")),
    ]


def unpadded(node: Node) -> bytes:
    """A node's msgpack map without its padding (the node target pads what it is given)."""
    plain = encode_node(node)
    unpacker = msgpack.Unpacker()
    unpacker.feed(plain)
    unpacker.unpack()
    return plain[: unpacker.tell()]


def listing_seeds() -> list[bytes]:
    names = ["a.txt", "b", "empty-dir", "nested", "z" * 40, "\u00e9t\u00e9.md"]  # in UTF-8 order
    cids = fake_cids(len(names), "entry")
    one = [encode_entry(Entry(n, i + 1, c)) for i, (n, c) in enumerate(zip(names, cids, strict=True))]
    return [b"".join(one), one[0], b"".join(one[:3])]


def message_frames() -> list[bytes]:
    cid = cid_of(b"fuzz want")
    return [
        encode_message(m)
        for m in (
            Want(1, cid),
            BlockMessage(2, bytes(range(48))),
            NotFound(3),
            Cancel(4),
            Have(5),
            Want(2**32 - 1, cid),
        )
    ]


def body_seeds() -> list[bytes]:
    out = []
    for frame in message_frames():
        prefix = next(i for i, byte in enumerate(frame) if not byte & 0x80) + 1
        out.append(frame[prefix:])
    return out


def frame_seeds() -> list[bytes]:
    frames = message_frames()
    return [b"".join(frames), frames[0] * 3, frames[1] + frames[2]]


def link_seeds() -> list[bytes]:
    root = cid_of(b"sealbox fuzz link root")
    peer = "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWEyoppNCUx8Yx66oV9fJnriXwCcXwDDUA2kj6vnc6iDEp"
    links = [
        ShareLink(root, FIXED_KEY),
        ShareLink(root, FIXED_KEY, "Holiday photos \u00e9t\u00e9 & more", 123_456_789),
        ShareLink(root, FIXED_KEY, None, 0, (peer, peer.replace("4001", "4002"))),
    ]
    return [format_link(link).encode("ascii") for link in links]


def cid_seeds() -> list[bytes]:
    from multiformats import CID  # only for seeds: the spellings other tools print

    cid = CID("base32", 1, "raw", ("sha2-256", hashlib.sha256(b"fuzz cid").digest()))
    bases = ["base32", "base32upper", "base58btc", "base36", "base16", "base64", "base64url"]
    return [cid.encode(base).encode("ascii") for base in bases] + [b"Qm" + b"a" * 44]


def as_text(data: bytes) -> str:
    return data.decode("latin-1")  # every byte is one character: control, non-ASCII, all of them


# -- decoders --------------------------------------------------------------------------------------


def decode_node_both(data: bytes) -> None:
    """``data`` as a node's plaintext, as it is and padded (so a mutation gets past the padding check
    to the map's checks), as a root and as a child."""
    for plain in (data, data + bytes(padded_size(len(data)) - len(data))):
        for root in (True, False):
            with contextlib.suppress(ProtocolError):
                decode_node(plain, root=root)


def decode_link(data: bytes) -> None:
    """``data`` as a link, as it is and with its checksum made right again (so a mutation gets past the
    checksum to the parameters)."""
    text = as_text(data)
    with contextlib.suppress(ProtocolError):
        parse_link(text)
    body = text.rpartition("&c=")[0] or text
    parse_link(body + "&c=" + hashlib.sha256(body.encode("latin-1")).hexdigest()[:8])


def decode_listing(data: bytes) -> None:
    decoder = EntryDecoder()
    for piece in chunks(data):
        for _entry in decoder.feed(piece):
            pass
    decoder.finish()


def decode_frames(data: bytes) -> None:
    decoder = FrameDecoder()
    for piece in chunks(data):
        for _message in decoder.feed(piece):
            pass
    decoder.at_boundary()


class PinTarget:
    """Writes each input over a real pin file of a real repo and reads it back as ``get``, ``ls`` and
    ``gc`` do (``read_pin``, ``pin_blocks``, ``pins``)."""

    def __init__(self, directory: Path) -> None:
        self.repo = Repo.open(directory / "repo")
        self.root = cid_of(b"fuzz pinned root")
        blocks = fake_cids(3, "pin")
        pin = Pin(self.root, "file", 40_000, len(blocks), 41_000, 1_700_000_000.5, "seed.bin", FIXED_KEY)
        block_list = self.repo.new_block_list()
        block_list.write_bytes(b"".join(blocks))
        self.repo.write_pin(pin, block_list)
        self.path = self.repo.pins_dir / (cid_to_text(self.root) + ".pin")
        self.seeds = [self.path.read_bytes()]

    def decode(self, data: bytes) -> None:
        self.path.unlink()  # not a truncation: ext4 flushes a file truncated to 0 (auto_da_alloc), 1 ms
        self.path.write_bytes(data)
        with contextlib.suppress(NodeError, ProtocolError):
            self.repo.read_pin(self.root)
        with contextlib.suppress(NodeError, ProtocolError):
            for _cid in self.repo.pin_blocks(self.root):  # what gc reads: the block list
                pass
        self.repo.pins()  # what ls and gc read: damaged pin files are skipped


def pin_structured(data: bytes, ops: Sequence[Op]) -> bytes:
    """A pin file with its msgpack header edited by :func:`restructure` and its trailer (header
    length, magic) made right again, so the edit reaches the header's checks."""
    trailer = 8
    if len(data) < trailer:
        return data
    length = int.from_bytes(data[-trailer:-4], "big")
    start = len(data) - trailer - length
    if start < 0:
        return data
    header = data[start:-trailer]
    try:
        edited = restructure(msgpack.unpackb(header, raw=False, strict_map_key=False), ops)
    except (ValueError, msgpack.UnpackException):
        return data
    if edited is None:
        return data
    return data[:start] + edited + len(edited).to_bytes(4, "big") + data[-4:]


def make_targets(directory: Path) -> dict[str, Target]:
    """Every target; ``directory`` holds the pin target's repo."""
    pins = PinTarget(directory)
    return {
        t.name: t
        for t in (
            Target("links", link_seeds(), decode_link),
            Target("cid", cid_seeds(), lambda d: cid_from_text(as_text(d))),
            Target("node", node_seeds(), decode_node_both, edit=structured),
            Target("listing", listing_seeds(), decode_listing, edit=structured),
            Target("message", body_seeds(), decode_body, edit=structured),
            Target("frames", frame_seeds(), decode_frames),
            Target("pins", pins.seeds, pins.decode, (NodeError, ProtocolError), edit=pin_structured),
        )
    }


def run_one(target: Target, data: bytes) -> Exception | None:
    """None if the decoder accepted ``data`` or refused it with an allowed error; else the crash."""
    try:
        target.decode(data)
    except target.allowed:
        return None
    except Exception as exc:  # noqa: BLE001 - the fuzzer's job: record any other exception as a crash
        return exc
    return None


def signature(exc: Exception) -> str:
    frame = traceback.extract_tb(exc.__traceback__)[-1]
    return f"{type(exc).__name__} at {Path(frame.filename).name}:{frame.lineno}"


def fuzz(target: Target, count: int, seed: int, crashes: Path, report: Callable[[str], None]) -> int:
    """Feed ``count`` mutated inputs to ``target``; returns how many crashed."""
    rng = random.Random(f"{seed} {target.name}")
    found: dict[str, int] = {}
    start = time.perf_counter()
    for i in range(count):
        data = target.input(i, rng)
        exc = run_one(target, data)
        if exc is None:
            continue
        sig = signature(exc)
        if sig not in found:
            crashes.mkdir(parents=True, exist_ok=True)
            path = crashes / f"{target.name}-{type(exc).__name__}-{hashlib.sha256(data).hexdigest()[:8]}.bin"
            path.write_bytes(data)
            report(f"  crash {sig}: {str(exc)[:100]!r}, reproducer {path}")
        found[sig] = found.get(sig, 0) + 1
    elapsed = time.perf_counter() - start
    total = sum(found.values())
    report(f"{target.name}: {count} inputs in {elapsed:.1f} s ({count / elapsed:,.0f}/s), {total} crashes")
    return total


TARGETS = ("links", "cid", "node", "listing", "message", "frames", "pins")


def _print(line: str) -> None:
    print(line, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", "--inputs", type=int, default=10**6, help="inputs per target (default 10^6)")
    parser.add_argument(
        "--targets", default="all", help="comma-separated, of: links,cid,node,listing,message,frames,pins"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (runs are reproducible)")
    parser.add_argument("--crashes", type=Path, help="directory for reproducer files (required to fuzz)")
    parser.add_argument(
        "--replay", type=Path, help="run one reproducer file (TARGET-... .bin) and show the error"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sealbox-fuzz-") as work:
        targets = make_targets(Path(work))
        if args.replay:
            target = targets[args.replay.name.split("-", 1)[0]]
            exc = run_one(target, args.replay.read_bytes())
            if exc is None:
                print(f"{target.name}: no crash")
                return 0
            traceback.print_exception(exc)
            return 1
        if args.crashes is None:
            parser.error("--crashes DIR is required (where reproducers go)")
        names = list(targets) if args.targets == "all" else args.targets.split(",")
        unknown = set(names) - set(targets)
        if unknown:
            parser.error(f"unknown targets: {', '.join(sorted(unknown))}")
        total = 0
        for name in names:
            total += fuzz(
                targets[name], args.inputs, args.seed, args.crashes, lambda line: print(line, flush=True)
            )
    print(f"total crashes: {total}")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
