"""Bounded fuzzing of every decoder of untrusted bytes: only the layer's own errors may escape.

The targets, seeds and mutations are those of ``scripts/fuzz.py`` (which runs them for millions of
inputs); here hypothesis drives them, a few hundred inputs per decoder, derandomized so a run is
repeatable. Mutations start from valid encodings (bit flips, byte sets, truncations, insertions,
deletions, duplicated slices, splices, msgpack-level edits); structured inputs come from hypothesis.
Allowed: ``protocol.errors.ProtocolError`` and, for pin files, ``node.errors.NodeError``.
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from protocol.cid import cid_from_text
from protocol.errors import ProtocolError
from protocol.link import parse_link
from protocol.manifest import EntryDecoder, decode_node
from protocol.messages import FrameDecoder, decode_body
from protocol.padding import padded_size
from tests.helpers import load_script

FUZZ = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def load_fuzz() -> ModuleType:
    return load_script("fuzz")


fuzz = load_fuzz()


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    made: dict[str, Any] = fuzz.make_targets(tmp_path_factory.mktemp("fuzz"))
    return made


ops = st.lists(
    st.tuples(
        st.integers(0, fuzz.N_OPS - 1),
        st.integers(0, 65535),
        st.integers(0, 511),
        st.sampled_from([1, 2, 3, 4, 8, 16, 40]),
    ),
    min_size=1,
    max_size=4,
)


def mutated_input(target: Any, data: st.DataObject) -> bytes:
    seed: bytes = data.draw(st.sampled_from(target.seeds), label="seed")
    chosen = data.draw(ops, label="ops")
    if target.edit is not None and data.draw(st.booleans(), label="structured"):
        out: bytes = target.edit(seed, chosen)
    else:
        out = fuzz.mutate(seed, chosen, target.seeds)
    return out


def check(target: Any, raw: bytes) -> None:
    """Run the decoder; an error outside ``target.allowed`` fails the test (and hypothesis shrinks it)."""
    with contextlib.suppress(*target.allowed):
        target.decode(raw)


@pytest.mark.parametrize("name", ["links", "cid", "node", "listing", "message", "frames"])
@FUZZ
@given(data=st.data())
def test_mutated_inputs_raise_only_protocol_errors(name: str, targets: dict[str, Any], data: Any) -> None:
    target = targets[name]
    check(target, mutated_input(target, data))


@FUZZ
@given(data=st.data())
def test_mutated_pin_files_raise_only_node_errors(targets: dict[str, Any], data: Any) -> None:
    """Repo.read_pin and Repo.pins on mutated pin files. NOTE: issue 12 item 8 (a pin header of the
    wrong shape raises AttributeError/TypeError in node/store/repo.py) is fixed on another branch; before it
    is merged, ``scripts/fuzz.py --targets pins`` finds those crashes in a few thousand inputs, while
    these 300 derandomized inputs happen not to reach them."""
    target = targets["pins"]
    check(target, mutated_input(target, data))


def test_seeds_are_valid_encodings(targets: dict[str, Any]) -> None:
    """Each seed decodes without any error: the fuzzer starts from what the format accepts."""
    for name in ("links", "cid", "node", "listing", "message", "frames"):
        target = targets[name]
        for seed in target.seeds:
            if name == "cid" and seed.startswith(b"Qm"):
                continue  # a CIDv0, there to be refused
            if name == "node":
                decode_node(seed + bytes(padded_size(len(seed)) - len(seed)), root=seed.find(b"name") != -1)
            elif name == "links":
                parse_link(seed.decode())
            else:
                target.decode(seed)


# -- structured inputs -----------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.binary(max_size=40),
    st.sampled_from(["v", "kind", "size", "cs", "lvl", "top", "x", "name", "file", "dir"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(st.one_of(st.text(max_size=6), st.binary(max_size=6)), inner, max_size=5),
    ),
    max_leaves=20,
)
node_keys = st.one_of(
    st.sampled_from(["v", "kind", "size", "cs", "lvl", "top", "x", "name"]),
    st.text(max_size=4),
    st.binary(max_size=4),
)


BASE_NODE: list[tuple[Any, Any]] = [
    ("v", 1),
    ("kind", "file"),
    ("size", 16),
    ("cs", 256 * 1024),
    ("lvl", 0),
    ("top", [bytes.fromhex("01551220") + bytes(32)]),
    ("x", False),
    ("name", "f"),
]


@FUZZ
@given(
    st.lists(st.tuples(node_keys, values), max_size=10),
    st.lists(st.tuples(st.integers(0, 20), st.tuples(node_keys, values)), max_size=3),
    st.sets(st.integers(0, 7), max_size=2),
    st.booleans(),
)
def test_structured_node_maps_raise_only_protocol_errors(
    pairs: list[tuple[Any, Any]], inserts: list[tuple[int, tuple[Any, Any]]], drops: set[int], root: bool
) -> None:
    """Maps of node keys and any values, with bytes keys and repeated keys among them: random maps,
    and a valid node's map with pairs dropped and pairs (new, odd or repeated) inserted."""
    edited = [pair for i, pair in enumerate(BASE_NODE) if i not in drops]
    for at, pair in inserts:
        edited.insert(at % (len(edited) + 1), pair)
    for candidate in (pairs, edited):
        packed = fuzz.pack_pairs(candidate)
        with contextlib.suppress(ProtocolError):
            decode_node(packed + bytes(padded_size(len(packed)) - len(packed)), root=root)


@FUZZ
@given(st.lists(values, max_size=5))
def test_structured_messages_raise_only_protocol_errors(items: list[Any]) -> None:
    with contextlib.suppress(ProtocolError):
        decode_body(fuzz.pack_items(items))


@FUZZ
@given(st.lists(st.lists(values, max_size=4), max_size=4), st.lists(st.integers(1, 64), max_size=8))
def test_structured_listings_raise_only_protocol_errors(entries: list[list[Any]], cuts: list[int]) -> None:
    stream = b"".join(fuzz.pack_items(e) for e in entries)
    decoder = EntryDecoder()
    with contextlib.suppress(ProtocolError):
        at = 0
        for cut in [*cuts, len(stream)]:
            for _entry in decoder.feed(stream[at : at + cut]):
                pass
            at += cut
        decoder.finish()


@FUZZ
@given(st.data())
def test_frames_fed_in_random_chunks_raise_only_protocol_errors(data: Any) -> None:
    """Valid frames, mutated frames and random bytes, concatenated and fed at random boundaries."""
    frames = fuzz.message_frames()
    parts = data.draw(
        st.lists(
            st.one_of(
                st.sampled_from(frames),
                st.binary(max_size=12),
                ops.map(lambda o: fuzz.mutate(frames[0], o, frames)),
            ),
            max_size=6,
        )
    )
    stream = b"".join(parts)
    cuts = data.draw(st.lists(st.integers(1, 40), max_size=10))
    decoder = FrameDecoder()
    with contextlib.suppress(ProtocolError):
        at = 0
        for cut in [*cuts, len(stream)]:
            for _message in decoder.feed(stream[at : at + cut]):
                pass
            at += cut
        decoder.at_boundary()


@FUZZ
@given(st.text(max_size=200))
def test_any_text_as_a_link_raises_only_protocol_errors(text: str) -> None:
    with contextlib.suppress(ProtocolError):
        parse_link("sealbox:?" + text)
    body = "sealbox:?" + text
    with contextlib.suppress(ProtocolError):
        parse_link(body + "&c=" + hashlib.sha256(body.encode("utf-8", "replace")).hexdigest()[:8])


@FUZZ
@given(st.text(max_size=100))
@example("u=")
def test_any_text_as_a_cid_raises_only_protocol_errors(text: str) -> None:
    with contextlib.suppress(ProtocolError):
        cid_from_text(text)


def test_the_fuzzer_reports_a_crash_and_writes_a_reproducer(tmp_path: Path) -> None:
    """scripts/fuzz.py counts an exception outside the layer's errors as a crash, writes the input,
    and exits 1; a run without crashes exits 0."""

    def broken(data: bytes) -> None:
        if len(data) % 3 == 0:
            raise IndexError("boom")
        raise ProtocolError("refused")

    target = fuzz.Target("links", [b"abc", b"abcd"], broken)
    lines: list[str] = []
    crashes = fuzz.fuzz(target, 200, 0, tmp_path / "crashes", lines.append)
    assert crashes > 0
    written = list((tmp_path / "crashes").iterdir())
    assert len(written) == 1 and written[0].name.startswith("links-IndexError-")
    assert len(written[0].read_bytes()) % 3 == 0
    assert "inputs/s" not in lines[-1] and "/s)" in lines[-1]
    clean = fuzz.Target("cid", [b"x"], lambda d: None)
    assert fuzz.fuzz(clean, 50, 0, tmp_path / "none", lines.append) == 0
    assert not (tmp_path / "none").exists()
