"""Pin files: both versions read, every header field checked, damaged pins skipped and named, fuzzed."""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.files.add import add_path
from node.store.errors import RepoError
from node.store.repo import Pin, Repo
from protocol.cid import CID_LEN, cid_to_text
from tests.daemon.test_daemon import Daemon, daemons  # noqa: F401  (the fixture)
from tests.helpers import RunCli, decode_pin_file, ok


def _file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _pin_path(repo: Repo, root: bytes) -> Path:
    return repo.pins_dir / (cid_to_text(root) + ".pin")


def _v1_pin(block_list: bytes, header: Any, *, packed: bytes | None = None) -> bytes:
    """A pin file as the code before version 2 wrote it (no checksums)."""
    raw = packed if packed is not None else msgpack.packb(header, use_bin_type=True)
    return block_list + raw + struct.pack(">I4s", len(raw), b"SBP1")


def _v1_header(pin: Pin) -> dict[str, Any]:
    return {"v": 1, **pin.header()}


def _repeat_key(header: dict[str, Any], key: str, value: Any) -> bytes:
    """A msgpack map holding ``key`` twice: first its true value, then ``value``."""
    items = [*list(header.items()), (key, value)]
    out = bytearray(b"\xde" + struct.pack(">H", len(items)))
    for k, v in items:
        out += msgpack.packb(k, use_bin_type=True) + msgpack.packb(v, use_bin_type=True)
    return bytes(out)


def test_a_version_1_pin_is_still_read(repo: Repo, tmp_path: Path) -> None:
    result = add_path(repo, _file(tmp_path / "f", os.urandom(50_000)), display_name="old")
    path = _pin_path(repo, result.pin.root)
    listed = b"".join(repo.pin_blocks(result.pin.root))
    path.write_bytes(_v1_pin(listed, _v1_header(result.pin)))
    assert repo.read_pin(result.pin.root) == result.pin
    assert b"".join(repo.pin_blocks(result.pin.root)) == listed
    assert repo.pins() == [result.pin]


def test_a_version_2_pin_checks_its_list_and_header(repo: Repo, tmp_path: Path) -> None:
    result = add_path(repo, _file(tmp_path / "f", os.urandom(50_000)))
    path = _pin_path(repo, result.pin.root)
    data = path.read_bytes()
    assert data.endswith(b"SBP2")
    assert decode_pin_file(data, result.pin.root)[0] == result.pin
    # a flipped bit past the CID prefix of a listed block: the list's checksum refuses it
    flipped = bytearray(data)
    flipped[CID_LEN + 10] ^= 0x01
    path.write_bytes(bytes(flipped))
    with pytest.raises(RepoError, match="fails its checksum"):
        list(repo.pin_blocks(result.pin.root))
    # a flipped bit in the header (here: in the size) is refused by the trailer's digest
    header_start = result.pin.blocks * CID_LEN
    flipped = bytearray(data)
    flipped[header_start + 20] ^= 0x04
    path.write_bytes(bytes(flipped))
    with pytest.raises(RepoError, match="damaged"):
        repo.read_pin(result.pin.root)


BAD_HEADERS: list[tuple[str, Any]] = [
    ("added 1e300", {"added": 1e300}),
    ("added NaN", {"added": math.nan}),
    ("added a string", {"added": "yesterday"}),
    ("size negative", {"size": -1}),
    ("size a float", {"size": 1.5}),
    ("blocks a string", {"blocks": "2"}),
    ("kind unknown", {"kind": "link"}),
    ("name not a string", {"name": 7}),
    ("name with a control character", {"name": "a\x00b"}),
    ("key of 3 bytes", {"key": b"abc"}),
    ("root not bytes", {"root": "bafk"}),
    ("unknown field", {"extra": 1}),
    ("version 9", {"v": 9}),
]


@pytest.mark.parametrize(("why", "change"), BAD_HEADERS, ids=[b[0] for b in BAD_HEADERS])
def test_a_header_of_the_wrong_type_or_range_is_a_damaged_pin(
    repo: Repo, tmp_path: Path, why: str, change: dict[str, Any]
) -> None:
    result = add_path(repo, _file(tmp_path / "f", os.urandom(20_000)))
    listed = b"".join(repo.pin_blocks(result.pin.root))
    _pin_path(repo, result.pin.root).write_bytes(_v1_pin(listed, _v1_header(result.pin) | change))
    with pytest.raises(RepoError, match="damaged"):
        repo.read_pin(result.pin.root)
    named: list[str] = []
    assert repo.pins(on_damaged=named.append) == []
    assert len(named) == 1 and cid_to_text(result.pin.root) in named[0]


@pytest.mark.parametrize(
    ("shape", "packed"),
    [
        ("a list", msgpack.packb([1, 2, 3])),
        ("an integer", msgpack.packb(5)),
        ("a map with a bytes key", msgpack.packb({b"v": 1})),
        ("a map with a map key", b"\x81\x81\x01\x02\x03"),
    ],
)
def test_a_header_that_is_not_a_map_of_strings_is_a_damaged_pin(
    repo: Repo, tmp_path: Path, shape: str, packed: bytes
) -> None:
    result = add_path(repo, _file(tmp_path / "f", os.urandom(20_000)))
    listed = b"".join(repo.pin_blocks(result.pin.root))
    _pin_path(repo, result.pin.root).write_bytes(_v1_pin(listed, None, packed=packed))
    with pytest.raises(RepoError, match="damaged"):
        repo.read_pin(result.pin.root)


@pytest.mark.parametrize(("key", "value"), [("added", 1.0), ("name", "other"), ("kind", "dir")])
def test_a_header_that_repeats_a_key_is_a_damaged_pin(
    repo: Repo, tmp_path: Path, key: str, value: Any
) -> None:
    result = add_path(repo, _file(tmp_path / "f", os.urandom(20_000)), display_name="first")
    listed = b"".join(repo.pin_blocks(result.pin.root))
    packed = _repeat_key(_v1_header(result.pin), key, value)
    _pin_path(repo, result.pin.root).write_bytes(_v1_pin(listed, None, packed=packed))
    with pytest.raises(RepoError, match="repeats a key"):
        repo.read_pin(result.pin.root)


def test_ls_skips_and_names_each_damaged_pin(run_cli: RunCli, tmp_path: Path) -> None:
    """The issue's cases: `added` 1e300, NaN, a string, a non-map header. ls lists the good pins on
    stdout and names each damaged one on stderr, one line each, exit 0."""
    repo_dir = tmp_path / "repo"
    env = {"SEALBOX_REPO": str(repo_dir)}
    for i in range(5):
        ok(run_cli("add", _file(tmp_path / f"f{i}", os.urandom(3000 + i)), "--name", f"file{i}", env=env))
    repo = Repo.open(repo_dir, create=False)
    pins = repo.pins()
    assert len(pins) == 5
    damaged = pins[:4]
    changes: list[dict[str, Any]] = [{"added": 1e300}, {"added": math.nan}, {"added": "now"}]
    for pin, change in zip(damaged, changes, strict=False):
        listed = b"".join(repo.pin_blocks(pin.root))
        _pin_path(repo, pin.root).write_bytes(_v1_pin(listed, _v1_header(pin) | change))
    listed = b"".join(repo.pin_blocks(damaged[3].root))
    _pin_path(repo, damaged[3].root).write_bytes(
        _v1_pin(listed, None, packed=msgpack.packb(["not", "a map"]))
    )
    repo.close()
    result = run_cli("ls", env=env)
    out = ok(result)
    assert "file4" in out and not any(f"file{i}" in out for i in range(4))
    warnings = result.stderr.splitlines()
    assert len(warnings) == 4
    for pin in damaged:
        assert sum(cid_to_text(pin.root) in line for line in warnings) == 1
    assert all(line.startswith("sealbox: warning: pin of ") for line in warnings)


# -- fuzzing the decoder: whatever the bytes, RepoError and nothing else ----------------------------------


def _sample_pin_files() -> list[bytes]:
    from node.store.pinfile import encode_header

    root = bytes.fromhex("01551220") + hashlib.sha256(b"root").digest()
    listed = b"".join(bytes.fromhex("01551220") + hashlib.sha256(bytes([i])).digest() for i in range(3))
    pin = Pin(root, "file", 12345, 3, 13000, 1700000000.5, "name", os.urandom(32), os.urandom(32))
    v2 = listed + encode_header(pin, hashlib.sha256(listed).digest())
    v1 = _v1_pin(listed, _v1_header(pin))
    empty = encode_header(Pin(root, "dir", 0, 0, 0, 0.0), hashlib.sha256(b"").digest())
    return [v2, v1, empty]


@st.composite
def mutated_pin_files(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(_sample_pin_files())))
    for _ in range(draw(st.integers(1, 6))):
        what = draw(st.sampled_from(["flip", "set", "cut", "insert", "drop"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if what == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif what == "set" and data:
            data[at] = draw(st.integers(0, 255))
        elif what == "cut":
            data = data[: draw(st.integers(0, len(data)))]
        elif what == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif what == "drop" and data:
            del data[at : at + draw(st.integers(1, 16))]
    return bytes(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_pin_files())
def test_fuzz_the_pin_decoder_gives_repo_errors_only(data: bytes) -> None:
    try:
        pin, cids = decode_pin_file(data)
    except RepoError:
        return
    # what decodes is well-formed: a list of CIDs as long as the header says, a time datetime can show
    assert len(cids) == pin.blocks
    assert 0 <= pin.added <= 253402300799.0


def test_ls_through_the_daemon_names_damaged_pins_too(
    run_cli: RunCli,
    tmp_path: Path,
    daemons: Callable[..., Daemon],  # noqa: F811
) -> None:
    repo_dir = tmp_path / "repo"
    daemon = daemons(repo_dir)
    daemon.wait_ready()
    for i in range(2):
        ok(run_cli("--repo", repo_dir, "add", _file(tmp_path / f"f{i}", os.urandom(2000 + i))))
    pin = sorted((repo_dir / "pins").glob("*.pin"))[0]
    pin.write_bytes(pin.read_bytes()[:-3])  # its trailer cut short
    result = run_cli("--repo", repo_dir, "ls", "--json")
    assert len(json.loads(ok(result))) == 1
    assert result.stderr.splitlines() == [
        f"sealbox: warning: pin of {pin.stem} is damaged (its trailer is not a pin trailer): skipped"
        " ('sealbox repo check' says more)"
    ]
