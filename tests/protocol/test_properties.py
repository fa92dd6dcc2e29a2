"""Property tests: every encode/decode pair of the protocol layer round-trips, and its invariants hold."""

from __future__ import annotations

import hashlib
import itertools
import unicodedata

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from multiformats import CID

from protocol.cid import CID_LEN, CID_PREFIX, TEXT_LEN, check_cid, cid_from_text, cid_of, cid_to_text
from protocol.errors import CidError, LinkError, ManifestError, UnsafeNameError
from protocol.link import MAX_LINK_LEN, MAX_PEERS, ShareLink, format_link, parse_link
from protocol.manifest import (
    MAX_SIZE,
    Entry,
    EntryDecoder,
    Kind,
    Node,
    chunk_count,
    decode_node,
    encode_entry,
    encode_node,
    fanout,
    level_counts,
    top_max,
)
from protocol.names import check_name, fold_name
from protocol.padding import MIN_PADDED, padded_size
from protocol.seal import KEY_LEN, NodeKeys
from protocol.stream import Chunker, IndexBuilder
from protocol.walk import iter_leaves
from tests.helpers import SMALL_CHUNK

CHUNK_SIZES = [1 << b for b in range(14, 21)]  # 16 KiB .. 1 MiB
KINDS: list[Kind] = ["file", "dir"]

digests = st.binary(min_size=32, max_size=32)
cids = digests.map(lambda d: CID_PREFIX + d)
keys = st.binary(min_size=KEY_LEN, max_size=KEY_LEN)
lengths = st.integers(min_value=0, max_value=MAX_SIZE)


def _valid_name(name: str) -> bool:
    try:
        check_name(name)
    except ManifestError:
        return False
    return True


names = st.text(st.characters(codec="utf-8"), min_size=1, max_size=40).filter(_valid_name)


# -- padding ---------------------------------------------------------------------------------------


@settings(max_examples=300)
@given(lengths)
@example(0)
@example(MIN_PADDED)
@example(MIN_PADDED + 1)
@example(MAX_SIZE)
def test_padded_size_covers_and_is_idempotent(n: int) -> None:
    p = padded_size(n)
    assert p >= n
    assert p >= MIN_PADDED
    assert padded_size(p) == p
    if n <= MIN_PADDED:
        assert p == MIN_PADDED


@settings(max_examples=300)
@given(st.integers(min_value=MIN_PADDED, max_value=MAX_SIZE))
@example(MIN_PADDED)
@example(1025)
@example((1 << 40) + 1)
def test_padding_overhead_is_below_12_percent(n: int) -> None:
    assert padded_size(n) - n <= 0.12 * n


@settings(max_examples=300)
@given(lengths, lengths)
def test_padded_size_is_monotonic(a: int, b: int) -> None:
    lo, hi = sorted((a, b))
    assert padded_size(lo) <= padded_size(hi)


@given(st.integers(min_value=0, max_value=1 << 20))
def test_padded_size_is_monotonic_step_by_one(n: int) -> None:
    assert padded_size(n) <= padded_size(n + 1)


def test_padded_size_refuses_negative() -> None:
    with pytest.raises(ValueError):
        padded_size(-1)


# -- CIDs --------------------------------------------------------------------------------------------


@given(st.binary(max_size=2048))
@example(b"")
def test_cid_of_matches_multiformats(block: bytes) -> None:
    cid = cid_of(block)
    reference = CID("base32", 1, "raw", ("sha2-256", hashlib.sha256(block).digest()))
    assert cid == bytes(reference)
    assert len(cid) == CID_LEN
    assert cid_to_text(cid) == str(reference)


@given(digests)
def test_cid_text_round_trip(digest: bytes) -> None:
    cid = CID_PREFIX + digest
    text = cid_to_text(cid)
    assert len(text) == TEXT_LEN
    assert text.startswith("b")
    assert text == text.lower()
    assert text == str(CID("base32", 1, "raw", ("sha2-256", digest)))
    assert cid_from_text(text) == cid
    assert check_cid(cid) == cid


@given(digests, st.sampled_from(["base58btc", "base32upper", "base36", "base16"]))
def test_cid_from_other_multibases(digest: bytes, base: str) -> None:
    reference = CID("base32", 1, "raw", ("sha2-256", digest))
    assert cid_from_text(reference.encode(base)) == CID_PREFIX + digest


@given(digests, st.integers(min_value=1, max_value=TEXT_LEN - 1), st.sampled_from("abcz27="))
def test_cid_from_text_refuses_altered_text(digest: bytes, index: int, char: str) -> None:
    text = cid_to_text(CID_PREFIX + digest)
    altered = text[:index] + char + text[index + 1 :]
    assume(altered != text)
    try:
        parsed = cid_from_text(altered)
    except CidError:
        return
    # a different valid CID text (another letter in the same alphabet) parses to a different CID
    assert parsed != CID_PREFIX + digest
    assert cid_to_text(parsed) == altered


def test_cid_from_text_refuses_other_kinds() -> None:
    digest = hashlib.sha256(b"x").digest()
    for other in (
        CID("base32", 1, "dag-pb", ("sha2-256", digest)),
        CID("base32", 1, "raw", ("sha2-512", hashlib.sha512(b"x").digest())),
        CID("base58btc", 0, "dag-pb", ("sha2-256", digest)),
    ):
        with pytest.raises(CidError):
            cid_from_text(str(other))
    for junk in ("", "b", "not a cid", "b" + "a" * 58, "B" + "A" * 58, "x" * 300):
        with pytest.raises(CidError):
            cid_from_text(junk)
    with pytest.raises(CidError):
        check_cid(b"\x01\x70\x12\x20" + digest)
    with pytest.raises(CidError):
        check_cid(CID_PREFIX + digest[:31])


# -- share links -------------------------------------------------------------------------------------


def _valid_display_name(name: str) -> bool:
    try:
        ShareLink(CID_PREFIX + bytes(32), bytes(KEY_LEN), name)
    except LinkError:
        return False
    return True


display_names = st.text(st.characters(codec="utf-8", min_codepoint=0x20), min_size=1, max_size=100).filter(
    _valid_display_name
)
peer_ids = st.text("123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz", min_size=46, max_size=52)
multiaddrs = st.builds(
    "/ip4/127.0.0.1/tcp/{}/p2p/{}".format, st.integers(min_value=1, max_value=65535), peer_ids
) | st.builds(
    "/dns4/{}/udp/{}/quic-v1/p2p/{}".format,
    st.from_regex(r"[a-z0-9-]{1,20}\.example", fullmatch=True),
    st.integers(min_value=1, max_value=65535),
    peer_ids,
)
# any peer the format allows: '/' then printable ASCII, quoted in the link
any_peers = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=255).map(
    lambda s: "/" + s
)


@settings(max_examples=200)
@given(
    cids,
    keys,
    st.none() | display_names,
    st.none() | lengths,
    st.lists(multiaddrs, max_size=MAX_PEERS).map(tuple),
)
@example(CID_PREFIX + bytes(32), bytes(32), "a b&c#d%e=f/g?h+i", 0, ())
@example(CID_PREFIX + bytes(32), bytes(32), "\u00e9t\u00e9 \U0001f600 \u2028", MAX_SIZE, ())
def test_link_round_trip(
    root: bytes, key: bytes, name: str | None, size: int | None, peers: tuple[str, ...]
) -> None:
    link = ShareLink(root, key, name, size, peers)
    text = format_link(link)
    assert text.startswith("sealbox:?v=1&xt=urn:sealbox:" + cid_to_text(root))
    assert text.isascii() and text.isprintable()
    assert len(text) <= MAX_LINK_LEN
    assert str(link) == text
    parsed = parse_link(text)
    assert parsed == link
    assert parsed.key == key
    assert parse_link("  " + text + "\n") == link
    # the key and the other private hints sit after '#', which HTTP clients never send
    query, _, fragment = text.partition("#")
    assert "k=" not in query
    if name is not None:
        assert "dn=" in fragment


@settings(max_examples=100)
@given(cids, keys, st.none() | display_names, st.lists(any_peers, max_size=MAX_PEERS).map(tuple))
@example(CID_PREFIX + bytes(32), bytes(32), "\u00e9" * 127, ("/" + "%" * 255,) * MAX_PEERS)
def test_every_constructible_link_parses(
    root: bytes, key: bytes, name: str | None, peers: tuple[str, ...]
) -> None:
    # a ShareLink either refuses its values or formats to a link that parse_link gives back
    try:
        link = ShareLink(root, key, name, MAX_SIZE, peers)
    except LinkError:
        return
    assert parse_link(format_link(link)) == link


def test_link_that_would_be_too_long_is_refused() -> None:
    # regression: ShareLink accepted peers whose link came out longer than parse_link reads
    peers = ("/" + "%" * 255,) * MAX_PEERS
    with pytest.raises(LinkError):
        ShareLink(CID_PREFIX + bytes(32), bytes(KEY_LEN), "\u00e9" * 127, MAX_SIZE, peers)
    fits = ShareLink(CID_PREFIX + bytes(32), bytes(KEY_LEN), None, None, peers[:4])
    assert parse_link(str(fits)) == fits


@given(cids, keys)
def test_link_key_must_be_32_bytes(root: bytes, key: bytes) -> None:
    for bad in (key[:31], key + b"\x00", b""):
        with pytest.raises(LinkError):
            ShareLink(root, bad)


# -- manifests -----------------------------------------------------------------------------------------


@st.composite
def nodes(draw: st.DrawFn, *, root: bool) -> Node:
    cs = draw(st.sampled_from(CHUNK_SIZES))
    # sizes spread over many orders of magnitude, so every level count occurs
    size = draw(
        st.integers(min_value=0, max_value=62).flatmap(lambda b: st.integers(0, min(1 << b, MAX_SIZE)))
    )
    counts = level_counts(chunk_count(size, cs), cs)
    seed = draw(st.binary(min_size=1, max_size=8))
    top = tuple(cid_of(seed + i.to_bytes(4, "big")) for i in range(counts[-1]))
    kind = draw(st.sampled_from(KINDS))
    executable = draw(st.booleans()) if kind == "file" else False
    name = draw(names) if root else None
    return Node(kind, size, cs, len(counts) - 1, top, executable, name)


@settings(max_examples=150, deadline=None)
@given(nodes(root=True))
@example(Node("file", 0, SMALL_CHUNK, 0, (CID_PREFIX + bytes(32),), True, "a"))
@example(Node("file", 1 << 34, 1 << 20, 0, (CID_PREFIX + bytes(32),) * 16384, True, "n" * 255))
@example(
    Node("file", 256 * SMALL_CHUNK, SMALL_CHUNK, 0, (CID_PREFIX + bytes(32),) * 256, True, "\u00e9" * 127)
)
@example(Node("dir", MAX_SIZE, 1 << 20, 2, (CID_PREFIX + bytes(32),) * 1297, False, "d"))
@example(Node("file", MAX_SIZE, SMALL_CHUNK, 5, (CID_PREFIX + bytes(32),) * 4, False, "f" * 255))
def test_root_node_round_trip(node: Node) -> None:
    plain = encode_node(node)
    assert len(plain) == padded_size(len(plain))
    assert len(plain) <= node.chunk_size  # a node block stays under a chunk
    assert decode_node(plain, root=True) == node
    with pytest.raises(ManifestError):
        decode_node(plain, root=False)  # a root's name is not allowed below the root


@settings(max_examples=100, deadline=None)
@given(nodes(root=False))
def test_inner_node_round_trip(node: Node) -> None:
    plain = encode_node(node)
    assert decode_node(plain, root=False) == node
    with pytest.raises(ManifestError):
        decode_node(plain, root=True)  # a root must carry a name


@settings(max_examples=50, deadline=None)
@given(nodes(root=True), st.data())
def test_node_with_wrong_top_is_refused(node: Node, data: st.DataObject) -> None:
    top = list(node.top)
    shorter = data.draw(st.booleans())
    if top and shorter:
        top.pop()
    else:
        top.append(CID_PREFIX + bytes(32))
    bad = Node(node.kind, node.size, node.chunk_size, node.level, tuple(top), node.executable, node.name)
    with pytest.raises(ManifestError):
        decode_node(encode_node(bad), root=True)


@st.composite
def entry_lists(draw: st.DrawFn) -> list[Entry]:
    chosen = draw(st.lists(names, max_size=30, unique_by=fold_name))  # a folder holds no two alike
    return [
        Entry(name, draw(st.integers(min_value=1, max_value=(1 << 64) - 1)), draw(cids))
        for name in sorted(chosen, key=lambda n: n.encode())
    ]


@settings(max_examples=150)
@given(entry_lists(), st.data())
@example([Entry("a", 1, CID_PREFIX + bytes(32)), Entry("a..b", (1 << 64) - 1, CID_PREFIX + bytes(32))], None)
def test_entry_stream_round_trip(entries: list[Entry], data: st.DataObject | None) -> None:
    stream = b"".join(encode_entry(e) for e in entries)
    cuts: list[int] = []
    if data is not None:
        cuts = sorted(data.draw(st.lists(st.integers(min_value=0, max_value=len(stream)), max_size=10)))
    decoder = EntryDecoder()
    decoded: list[Entry] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        decoded.extend(decoder.feed(stream[start:cut]))
        start = cut
    decoder.finish()
    assert decoded == entries
    assert decoder.count == len(entries)


@settings(max_examples=50)
@given(entry_lists().filter(lambda es: len(es) >= 2), st.data())
def test_entry_stream_refuses_disorder_and_truncation(entries: list[Entry], data: st.DataObject) -> None:
    i = data.draw(st.integers(min_value=0, max_value=len(entries) - 2))
    swapped = [*entries[:i], entries[i + 1], entries[i], *entries[i + 2 :]]
    duplicated = [*entries[: i + 1], entries[i], *entries[i + 1 :]]
    for bad in (swapped, duplicated):
        with pytest.raises(ManifestError):
            list(EntryDecoder().feed(b"".join(encode_entry(e) for e in bad)))
    stream = b"".join(encode_entry(e) for e in entries)
    decoder = EntryDecoder()
    list(decoder.feed(stream[:-1]))
    with pytest.raises(ManifestError):
        decoder.finish()


@settings(max_examples=200)
@given(names, st.data())
def test_a_folder_refuses_two_names_iff_they_fold_alike(a: str, data: st.DataObject) -> None:
    """Two different names in one folder, the second often a case or normalization variant of the
    first: refused exactly when they fold alike (case and Unicode normalization ignored)."""
    variants = [
        a.upper(),
        a.lower(),
        a.swapcase(),
        unicodedata.normalize("NFD", a),
        unicodedata.normalize("NFC", a),
    ]
    b = data.draw(names | st.sampled_from(variants))
    assume(b != a and _valid_name(b))
    first, second = sorted([a, b], key=lambda n: n.encode())
    stream = encode_entry(Entry(first, 1, cid_of(b"1"))) + encode_entry(Entry(second, 2, cid_of(b"2")))
    if fold_name(a) == fold_name(b):
        with pytest.raises(UnsafeNameError):
            list(EntryDecoder().feed(stream))
    else:
        assert [e.name for e in EntryDecoder().feed(stream)] == [first, second]


# -- sealed streams --------------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from([SMALL_CHUNK, 32 * 1024]),
    st.integers(min_value=0, max_value=200_000),
    st.data(),
)
@example(SMALL_CHUNK, 0, None)
@example(SMALL_CHUNK, SMALL_CHUNK, None)
@example(SMALL_CHUNK, SMALL_CHUNK + 1, None)
def test_chunker_pieces_equal_whole(cs: int, size: int, data: st.DataObject | None) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    cuts: list[int] = []
    if data is not None:
        cuts = sorted(data.draw(st.lists(st.integers(min_value=0, max_value=size), max_size=12)))

    def chunks(pieces: list[bytes]) -> list[tuple[int, bytes]]:
        chunker = Chunker(cs)
        out: list[tuple[int, bytes]] = []
        for piece in pieces:
            out.extend(chunker.feed(piece))
        out.extend(chunker.finish())
        assert chunker.size == size
        return out

    bounds = [0, *cuts, size]
    whole = chunks([payload])
    assert chunks([payload[a:b] for a, b in itertools.pairwise(bounds)]) == whole
    assert [position for position, _ in whole] == list(range(len(whole)))
    assert len(whole) == chunk_count(size, cs)
    assert all(len(chunk) == cs for _, chunk in whole[:-1])
    joined = b"".join(chunk for _, chunk in whole)
    assert len(joined) == padded_size(size)
    assert joined[:size] == payload
    assert not any(joined[size:])


def _fake_leaf(i: int) -> bytes:
    return cid_of(i.to_bytes(8, "big"))


def _index_round_trip(size: int, cs: int = SMALL_CHUNK) -> Node:
    """Build the index over fake leaves for a stream of ``size`` bytes and walk it back."""
    leaves = chunk_count(size, cs)
    node_keys = NodeKeys(bytes(range(KEY_LEN)), 7)
    builder = IndexBuilder(node_keys, cs)
    store: dict[bytes, bytes] = {}
    for i in range(leaves):
        store.update(builder.add(_fake_leaf(i)))
    level, top, rest = builder.finish()
    store.update(rest)
    counts = level_counts(leaves, cs)
    assert level == len(counts) - 1
    assert len(top) == counts[-1] <= top_max(cs)
    assert len(store) == sum(counts[1:-1]) + (counts[-1] if level else 0)
    node = Node("file", size, cs, level, top)
    fetched: list[bytes] = []

    def fetch(cid: bytes) -> bytes:
        fetched.append(cid)
        return store[cid]

    walked = list(iter_leaves(node, node_keys, fetch))
    assert walked == [(i, _fake_leaf(i)) for i in range(leaves)]
    assert sorted(fetched) == sorted(store)  # every index block is read, once
    return node


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=10 * 1024 * 1024))
@example(256 * SMALL_CHUNK)  # exactly top_max leaves: no index
@example(256 * SMALL_CHUNK + 1)  # just over top_max: one level
@example(455 * SMALL_CHUNK)  # one full index block
@example(456 * SMALL_CHUNK)  # just over fanout: two index blocks
def test_index_round_trip(size: int) -> None:
    _index_round_trip(size)


def _size_for_leaves(leaves: int, cs: int = SMALL_CHUNK) -> int:
    """The least stream size whose padded length needs at least ``leaves`` chunks."""
    lo, hi = 0, leaves * cs
    while lo < hi:
        mid = (lo + hi) // 2
        if chunk_count(mid, cs) >= leaves:
            hi = mid
        else:
            lo = mid + 1
    return lo


@pytest.mark.parametrize(
    ("leaves", "counts"),
    [
        (1, [1]),
        (top_max(SMALL_CHUNK), [256]),  # the most leaves a node's top holds
        (top_max(SMALL_CHUNK) + 1, [264, 1]),  # one index block
        (fanout(SMALL_CHUNK), [456, 2]),  # a full index block and one more
        (2 * fanout(SMALL_CHUNK), [912, 3]),
        (114_688, [114_688, 253]),  # near the most one index level holds
        (top_max(SMALL_CHUNK) * fanout(SMALL_CHUNK) + 1, [116_736, 257, 1]),  # two index levels
    ],
)
def test_index_levels_at_boundaries(leaves: int, counts: list[int]) -> None:
    # Padme rounds large sizes coarsely: take the least size that needs at least ``leaves`` chunks
    size = _size_for_leaves(leaves)
    assert level_counts(chunk_count(size, SMALL_CHUNK), SMALL_CHUNK) == counts
    node = _index_round_trip(size)
    assert node.level == len(counts) - 1
