"""Names in manifests come from whoever made the link: unsafe ones are refused and nothing escapes."""

from __future__ import annotations

import os
from pathlib import Path

import msgpack
import pytest

from node.files.add import add_path
from node.files.errors import InputError
from node.files.get import get_link
from node.store.repo import Repo
from protocol.cid import cid_of
from protocol.errors import ManifestError, UnsafeNameError
from protocol.link import ShareLink
from protocol.manifest import Entry, EntryDecoder, Node, decode_node, encode_entry, encode_node
from protocol.names import check_name
from protocol.seal import new_key
from tests.helpers import listing, seal_dir, seal_file

UNSAFE = [
    "",
    ".",
    "..",
    "a/b",
    "/",
    "/etc",
    "../x",
    "a\\b",
    "..\\..\\x",
    "a\x00b",
    "line\nbreak",
    "tab\there",
    "bell\x07",
    "del\x7f",
    "\x1b[31mred",
    "x" * 256,
    "\u00e9" * 128,  # 256 UTF-8 bytes
    "CON",
    "con",
    "con.txt",
    "Con.tar.gz",
    "CON .txt",
    "LPT1",
    "lpt9.log",
    "COM1",
    "nul",
    "NUL.txt",
    "aux",
    "PRN",
    "conin$",
    "\ud800",  # a lone surrogate: not UTF-8
]

SAFE = [
    "a",
    "a..b",
    ".hidden",
    "file.txt",
    "x" * 255,
    "\u00e9" * 127,
    "\u65e5\u672c\u8a9e.txt",
    "\U0001f600",
    "with space",
    "CONSOLE",
    "com10",
    "LPT0",
    "nul_",
    "-rf",
]


@pytest.mark.parametrize("name", UNSAFE)
def test_check_name_refuses(name: str) -> None:
    with pytest.raises(UnsafeNameError):
        check_name(name)


@pytest.mark.parametrize("name", SAFE)
def test_check_name_accepts(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("value", [None, b"bytes", 1, ["a"]])
def test_check_name_refuses_non_text(value: object) -> None:
    with pytest.raises(UnsafeNameError):
        check_name(value)


def test_unsafe_name_error_is_a_manifest_error() -> None:
    assert issubclass(UnsafeNameError, ManifestError)


def test_entry_decoder_refuses_unsafe_names() -> None:
    cid = cid_of(b"child")
    for name in ("..", "a/b", "nul.txt"):
        raw = msgpack.packb([name, 1, cid], use_bin_type=True)
        with pytest.raises(UnsafeNameError):
            list(EntryDecoder().feed(raw))


def test_root_node_with_unsafe_name_is_refused() -> None:
    node = Node("file", 0, 16 * 1024, 0, (cid_of(b"x"),), False, "../escape")
    with pytest.raises(UnsafeNameError):
        decode_node(encode_node(node), root=True)


# -- end to end: a malicious tree sealed by hand ----------------------------------------------------------


def _raw_entry(name: str, number: int, cid: bytes) -> bytes:
    packed: bytes = msgpack.packb([name, number, cid], use_bin_type=True)
    return packed


def _malicious_listing(
    repo: Repo, master: bytes, names: list[str], numbers: list[int] | None = None
) -> bytes:
    """An entry stream with ``names`` in the given order, each a small file; numbers 1, 2, ... by default."""
    numbers = numbers or list(range(1, len(names) + 1))
    return b"".join(
        _raw_entry(name, number, seal_file(repo, master, number, f"payload {i}".encode()))
        for i, (name, number) in enumerate(zip(names, numbers, strict=True))
    )


MALICIOUS = {
    "dot-dot": (["a", ".."], None, UnsafeNameError),
    "slash": (["a", "a/b"], None, UnsafeNameError),
    "absolute": (["/tmp/x"], None, UnsafeNameError),
    "backslash": (["..\\x"], None, UnsafeNameError),
    "device": (["a", "nul.txt"], None, UnsafeNameError),
    "duplicate": (["a", "b", "b"], None, ManifestError),
    "unsorted": (["b", "a"], None, ManifestError),
    "same-number": (["a", "b"], [1, 1], ManifestError),
    "root-number": (["a"], [0], ManifestError),
}


@pytest.mark.parametrize("case", sorted(MALICIOUS))
def test_malicious_tree_is_refused_and_nothing_is_written(repo: Repo, tmp_path: Path, case: str) -> None:
    names, numbers, error = MALICIOUS[case]
    master = new_key()
    # the bad entry comes after a good one where it can, so a file is written before the refusal
    stream = _malicious_listing(repo, master, names, numbers)
    root = seal_dir(repo, master, 0, stream, name="innocent")
    work = tmp_path / "work"
    dest = work / "inbox" / "out"
    dest.parent.mkdir(parents=True)
    (work / "x").write_text("outside")
    before = listing(work)
    with pytest.raises(error):
        get_link(repo, ShareLink(root, master), dest)
    assert not os.path.lexists(dest)
    assert os.listdir(dest.parent) == []
    assert listing(work) == before
    assert (work / "x").read_text() == "outside"


def test_malicious_nested_tree_is_refused(repo: Repo, tmp_path: Path) -> None:
    master = new_key()
    inner = seal_dir(repo, master, 2, _raw_entry("..", 3, seal_file(repo, master, 3, b"escaped")))
    outer = _raw_entry("a.txt", 1, seal_file(repo, master, 1, b"fine")) + _raw_entry("sub", 2, inner)
    root = seal_dir(repo, master, 0, outer, name="tree")
    work = tmp_path / "work"
    (work / "inbox").mkdir(parents=True)
    before = listing(work)
    with pytest.raises(UnsafeNameError):
        get_link(repo, ShareLink(root, master), work / "inbox")
    assert listing(work) == before


def test_root_named_unsafely_is_refused(repo: Repo, tmp_path: Path) -> None:
    master = new_key()
    work = tmp_path / "work"
    (work / "inbox").mkdir(parents=True)
    for name in ("..", "a/b", "nul"):
        root = seal_file(repo, master, 0, b"data", name=name)
        with pytest.raises(UnsafeNameError):
            get_link(repo, ShareLink(root, master), work / "inbox")
        assert listing(work) == {"inbox"}


def test_hand_built_tree_round_trips(repo: Repo, tmp_path: Path) -> None:
    # the same construction with good names works, so the refusals above are about the names
    master = new_key()
    names = ["..a", ".b", "c d", "\u00e9"]
    stream = b"".join(
        encode_entry(Entry(n, i, seal_file(repo, master, i, n.encode()))) for i, n in enumerate(names, 1)
    )
    root = seal_dir(repo, master, 0, stream, name="tree")
    got = get_link(repo, ShareLink(root, master), tmp_path)
    assert got.path == tmp_path / "tree"
    assert sorted(os.listdir(got.path)) == sorted(names)
    for n in names:
        assert (got.path / n).read_bytes() == n.encode()


# -- names that one folder cannot hold on macOS and Windows ----------------------------------------------


@pytest.mark.parametrize("name", ["a\x80b", "a\x85b", "csi\x9b", "\x9f"])
def test_c1_controls_are_refused_like_c0(name: str) -> None:
    with pytest.raises(UnsafeNameError):
        check_name(name)


@pytest.mark.parametrize(
    "name", ["COM\u00b9", "com\u00b2.txt", "LPT\u00b3", "lpt\u00b9.tar.gz", "CON\u0131N$"]
)
def test_superscript_ports_and_dotless_i_are_device_names(name: str) -> None:
    with pytest.raises(UnsafeNameError):
        check_name(name)


@pytest.mark.parametrize("pair", [("a.txt", "A.txt"), ("\u00e9", "e\u0301"), ("Stra\u00dfe", "STRASSE")])
def test_adder_refuses_a_folder_whose_names_fold_alike(
    repo: Repo, tmp_path: Path, pair: tuple[str, str]
) -> None:
    """Both files exist side by side here (ext4 keeps them apart); on macOS or Windows they would be one."""
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    for name in pair:
        (folder / "sub" / name).write_text(name)
    with pytest.raises(InputError) as refused:
        add_path(repo, folder)
    message = str(refused.value)
    assert "\n" not in message and repr(pair[0]) in message and repr(pair[1]) in message
    assert "case or Unicode normalization" in message
    assert repo.pins() == []


def test_adder_ignores_a_skipped_symlink_when_it_checks_names(repo: Repo, tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "a.txt").write_text("a")
    (folder / "A.txt").symlink_to("a.txt")  # skipped with a warning: no collision in the tree
    warnings: list[str] = []
    result = add_path(repo, folder, warn=warnings.append)
    assert len(warnings) == 1 and result.pin.kind == "dir"


def test_names_are_kept_as_given(repo: Repo, tmp_path: Path) -> None:
    """Neither the adder nor get rewrites a name: an NFD name comes back NFD, upper case stays upper."""
    folder = tmp_path / "folder"
    folder.mkdir()
    names = ["e\u0301t\u00e9", "README", "x\u00c5"]
    for name in names:
        (folder / name).write_text(name)
    result = add_path(repo, folder)
    got = get_link(repo, result.link, tmp_path / "out")
    assert sorted(os.listdir(got.path)) == sorted(names)
