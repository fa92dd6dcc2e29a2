"""Untrusted bytes that crashed a decoder or read two ways (issue 12, items 6, 7 and 9).

Item 6: a node map with a bytes key and a str key raised TypeError (the error message sorted the keys).
Item 7: ``cid_from_text("u=")`` raised IndexError from multiformats: a traceback for ``sealbox rm u=``
and for a link whose root is ``u=``; ``/v1/rm`` answered 500.
Item 9: a map that repeats a key was read last-value-wins; every map of every format now refuses it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from node.daemon.api_client import ApiClient
from node.daemon.errors import ApiError
from node.store.repo import Repo
from protocol.cid import CID_PREFIX, cid_from_text, cid_of, cid_to_text
from protocol.errors import CidError, LinkError, ManifestError
from protocol.link import ShareLink, parse_link
from protocol.manifest import Entry, EntryDecoder, decode_node, encode_entry
from protocol.messages import MessageError, decode_body
from protocol.padding import padded_size
from protocol.seal import NodeKeys
from protocol.strict_msgpack import Limits, StrictError, check_depth, unpack_exact
from tests.daemon.test_daemon import Daemon
from tests.helpers import RunCli, one_error

MASTER = hashlib.sha256(b"strict decoding test key").digest()
TOP = [cid_of(b"strict decoding top")]
VALID: list[tuple[Any, Any]] = [
    ("v", 1),
    ("kind", "file"),
    ("size", 16),
    ("cs", 256 * 1024),
    ("lvl", 0),
    ("top", TOP),
    ("x", False),
    ("name", "f"),
]


def pack_pairs(pairs: list[tuple[Any, Any]]) -> bytes:
    """A msgpack map written pair by pair (``msgpack.packb`` cannot repeat a key)."""
    out = bytes([0x80 | len(pairs)])
    for k, v in pairs:
        out += msgpack.packb(k, use_bin_type=True) + msgpack.packb(v, use_bin_type=True)
    return out


def padded(packed: bytes) -> bytes:
    return packed + bytes(padded_size(len(packed)) - len(packed))


def seal_root(repo: Repo, plain: bytes) -> ShareLink:
    """Store a root node block with plaintext ``plain`` in ``repo``; the link that opens it."""
    block = NodeKeys(MASTER, 0).node.seal(0, plain)
    cid = cid_of(block)
    repo.blocks.put(cid, block)
    return ShareLink(cid, MASTER)


def with_checksum(body: str) -> str:
    return body + "&c=" + hashlib.sha256(body.encode("ascii")).hexdigest()[:8]


U_EQ_LINK = with_checksum("sealbox:?v=1&xt=urn:sealbox:u=#k=" + "A" * 43)


# -- item 6: bytes and str keys in one map ---------------------------------------------------------


@pytest.mark.parametrize(
    "pairs",
    [
        [*VALID, (b"v", 1)],
        [(b"kind", "file"), *VALID[:1]],
        [*VALID[:-1], (b"name", b"f")],
        [(b"\x00", 0), ("kind", "dir")],
    ],
    ids=["extra-bytes-v", "bytes-kind", "bytes-name", "two-keys"],
)
def test_a_node_map_with_bytes_and_str_keys_is_a_manifest_error(pairs: list[tuple[Any, Any]]) -> None:
    for root in (True, False):
        with pytest.raises(ManifestError, match="map key that is not text"):
            decode_node(padded(pack_pairs(pairs)), root=root)


def test_a_deeply_nested_manifest_value_is_a_manifest_error() -> None:
    """It raised RecursionError (the error message held its repr) before nesting was capped."""
    deep = b"\x91" * 1000 + b"\x01"
    packed = bytes([0x82]) + msgpack.packb("v") + deep + msgpack.packb("kind") + msgpack.packb("file")
    with pytest.raises(ManifestError, match="nests deeper"):
        decode_node(padded(packed), root=True)


def test_manifest_errors_show_short_values() -> None:
    with pytest.raises(ManifestError) as refused:
        decode_node(padded(pack_pairs([("v", "x" * 1000), *VALID[1:]])), root=True)
    assert len(str(refused.value)) < 200


def test_get_of_a_root_with_a_bytes_key_says_one_line(run_cli: RunCli, tmp_path: Path) -> None:
    """Through the real CLI without a daemon: it was a traceback."""
    repo = Repo.open(tmp_path / "repo")
    link = seal_root(repo, padded(pack_pairs([*VALID, (b"v", 1)])))
    repo.close()
    line = one_error(run_cli("--repo", tmp_path / "repo", "get", str(link), "-o", tmp_path / "out"))
    assert "not text" in line and MASTER.hex() not in line


# -- item 7: CID text ------------------------------------------------------------------------------


@given(st.text(max_size=120))
@example("u=")
@example("z")
@example("k0")
@example("f" + "0" * 71 + "\u00e9")
@example("b" * 59)
@example("m" + "/" * 47)
@settings(max_examples=500, deadline=None, derandomize=True)
def test_cid_from_text_raises_only_cid_errors(text: str) -> None:
    try:
        cid = cid_from_text(text)
    except CidError:
        return
    assert cid.startswith(CID_PREFIX) and len(cid) == 36


_PREFIXES = "bBfFkKzmuU0QcpZ"
_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/-_="


@given(st.sampled_from(_PREFIXES), st.text(alphabet=_ALPHABET, max_size=80))
@settings(max_examples=500, deadline=None, derandomize=True)
def test_cid_from_text_in_any_multibase_alphabet_raises_only_cid_errors(prefix: str, body: str) -> None:
    try:
        cid = cid_from_text(prefix + body)
    except CidError:
        return
    assert cid.startswith(CID_PREFIX) and len(cid) == 36
    assert cid_from_text(cid_to_text(cid)) == cid


def test_cid_text_with_non_ascii_case_twins_is_refused() -> None:
    """Case folding happens only on ASCII: the long s upper-cases to "S", the Kelvin sign lower-cases
    to "k", so without the check a non-ASCII spelling would read as a CID."""
    upper = "B" + cid_to_text(cid_of(b"twin"))[1:].upper()
    assert cid_from_text(upper) == cid_of(b"twin")
    twin = upper.replace("S", "\u017f", 1) if "S" in upper else upper.replace("K", "\u212a", 1)
    assert twin != upper
    with pytest.raises(CidError):
        cid_from_text(twin)


def test_rm_and_get_of_u_eq_say_one_line(run_cli: RunCli, tmp_path: Path) -> None:
    """Without a daemon: both were tracebacks."""
    repo = tmp_path / "repo"
    Repo.open(repo).close()
    assert "not a valid block id" in one_error(run_cli("--repo", repo, "rm", "u="))
    line = one_error(run_cli("--repo", repo, "get", U_EQ_LINK, "-o", tmp_path / "out"))
    assert "root is invalid" in line and "A" * 43 not in line


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Callable[[Path], Daemon]]:
    started: list[Daemon] = []
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)

    def start(repo: Path) -> Daemon:
        started.append(Daemon(repo, home))
        return started[-1]

    yield start
    for running in started:
        if running.proc.poll() is None:
            running.proc.kill()
            running.proc.wait()


def test_through_a_daemon_rm_u_eq_is_a_400_and_a_bad_root_one_line(
    run_cli: RunCli, tmp_path: Path, daemon: Callable[[Path], Daemon]
) -> None:
    """``/v1/rm`` answered 500 to ``u=``; a root with a bytes key gave "internal error"."""
    repo_path = tmp_path / "repo"
    repo = Repo.open(repo_path)
    link = seal_root(repo, padded(pack_pairs([*VALID, (b"v", 1)])))
    repo.close()
    running = daemon(repo_path)
    running.wait_ready()
    with pytest.raises(ApiError) as refused:
        ApiClient(repo_path).call("POST", "/v1/rm", {"roots": ["u="]}, timeout=30)
    assert refused.value.status == 400
    assert "not a valid block id" in one_error(run_cli("--repo", repo_path, "rm", "u="))
    line = one_error(run_cli("--repo", repo_path, "get", U_EQ_LINK, "-o", tmp_path / "out"))
    assert "root is invalid" in line
    line = one_error(run_cli("--repo", repo_path, "get", str(link), "-o", tmp_path / "out"))
    assert "not text" in line and "internal error" not in line
    assert running.proc.poll() is None
    assert "Traceback" not in running.output()


# -- item 9: repeated keys -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pairs", "key"),
    [
        ([*VALID, ("x", True)], "x"),
        ([*VALID, ("name", "g")], "name"),
        ([VALID[0], *VALID], "v"),
        ([*VALID[:5], ("top", TOP), *VALID[5:]], "top"),
    ],
    ids=["x-false-then-true", "name-f-then-g", "v-twice-same-value", "top-twice"],
)
def test_a_node_map_that_repeats_a_key_is_refused(pairs: list[tuple[Any, Any]], key: str) -> None:
    """The last value won before: ``x`` false then true read as an executable file named "g"."""
    assert decode_node(padded(pack_pairs(VALID)), root=True).name == "f"
    with pytest.raises(ManifestError, match=f"repeats the map key '{key}'"):
        decode_node(padded(pack_pairs(pairs)), root=True)


def test_get_of_a_root_that_repeats_a_key_says_one_line(run_cli: RunCli, tmp_path: Path) -> None:
    repo = Repo.open(tmp_path / "repo")
    link = seal_root(repo, padded(pack_pairs([*VALID, ("name", "g")])))
    repo.close()
    line = one_error(run_cli("--repo", tmp_path / "repo", "get", str(link), "-o", tmp_path / "out"))
    assert "repeats the map key 'name'" in line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@given(st.data())
@settings(max_examples=200, deadline=None, derandomize=True)
def test_any_repeated_key_in_a_node_map_is_refused(data: st.DataObject) -> None:
    pairs = list(VALID)
    key = data.draw(st.sampled_from([k for k, _ in VALID]))
    value = data.draw(st.one_of(st.none(), st.booleans(), st.integers(-1, 1 << 40), st.text(max_size=8)))
    pairs.insert(data.draw(st.integers(0, len(pairs))), (key, value))
    with pytest.raises(ManifestError, match="repeats the map key"):
        decode_node(padded(pack_pairs(pairs)), root=data.draw(st.booleans()))


def test_a_listing_entry_holding_a_map_with_a_repeated_key_is_refused() -> None:
    cid = cid_of(b"entry")
    stream = encode_entry(Entry("a", 1, cid)) + bytes([0x93]) + pack_pairs([("n", 1), ("n", 2)])
    stream += msgpack.packb(2) + msgpack.packb(cid)
    decoder = EntryDecoder()
    with pytest.raises(ManifestError, match="repeats the map key 'n'"):
        list(decoder.feed(stream))


def test_messages_hold_no_map_at_all() -> None:
    for body in (pack_pairs([("a", 1), ("a", 2)]), bytes([0x93, 0x01, 0x01]) + pack_pairs([("a", 1)])):
        with pytest.raises(MessageError):
            decode_body(body)


@pytest.mark.parametrize("name", ["v", "xt", "k", "dn", "xl"])
def test_a_link_that_repeats_a_parameter_is_refused(name: str) -> None:
    root = cid_to_text(cid_of(b"repeat"))
    parts = {
        "v": "v=1",
        "xt": f"xt=urn:sealbox:{root}",
        "k": "k=" + "A" * 43,
        "dn": "dn=a",
        "xl": "xl=1",
    }
    query = [parts["v"], parts["xt"]]
    fragment = [parts["k"], parts["dn"], parts["xl"]]
    target = query if name in ("v", "xt") else fragment
    target.insert(target.index(parts[name]) + 1, parts[name])
    with pytest.raises(LinkError, match=f"repeats the parameter '{name}'"):
        parse_link(with_checksum("sealbox:?" + "&".join(query) + "#" + "&".join(fragment)))


def test_peer_hints_may_repeat() -> None:
    link = ShareLink(cid_of(b"peers"), MASTER, peers=("/ip4/127.0.0.1/tcp/1", "/ip4/127.0.0.1/tcp/2"))
    assert parse_link(str(link)).peers == link.peers


# -- the shared helper -----------------------------------------------------------------------------


def test_the_strict_decoder_refuses_non_text_keys_repeats_and_depth() -> None:
    limits = Limits(max_str_len=16, max_bin_len=16, max_array_len=16, max_map_len=16, max_depth=2)
    assert unpack_exact(msgpack.packb({"a": [1, 2], "b": {"c": 2}}), limits, ManifestError, "x") == {
        "a": [1, 2],
        "b": {"c": 2},
    }
    for data, error in (
        (pack_pairs([("a", 1), ("a", 1)]), "repeats the map key 'a'"),
        (pack_pairs([(b"a", 1)]), "not text"),
        (pack_pairs([(1, 1)]), "not valid msgpack"),
        (msgpack.packb([[[1]]]), "nests deeper than 2"),
        (msgpack.packb({"a": {"b": {"c": 1}}}), "nests deeper than 2"),
        (msgpack.packb("x" * 17), "not valid msgpack"),
        (msgpack.packb(1) + b"\x01", "not valid msgpack"),
        (b"\xd4\x01\x00", "not valid msgpack"),
    ):
        with pytest.raises(ManifestError, match=error):
            unpack_exact(data, limits, ManifestError, "x")
    with pytest.raises(StrictError):
        check_depth([[]], 1)
    check_depth([1, 2], 1)
    check_depth(1, 0)


def test_every_protocol_error_class_has_the_category_the_spec_names() -> None:
    """specs/format.md, *Error categories*: the table and protocol/errors.py agree, class by class."""
    import protocol.errors as errors
    import protocol.messages as messages

    spec = (Path(__file__).parents[2] / "specs" / "format.md").read_text()
    table = spec.split("## Error categories", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1:3] for line in table.splitlines() if line.startswith("| `")]
    named = {cls.strip(" `"): cat.strip(" `") for cat, classes in rows for cls in classes.split(",")}
    classes = {
        name: cls
        for name, cls in (*vars(errors).items(), *vars(messages).items())
        if isinstance(cls, type) and issubclass(cls, errors.ProtocolError)
    }
    assert named == {name: cls.category for name, cls in classes.items()}
