"""Finding things again across two nodes, with real daemons and the real ``sealbox`` command: fetched
roots keep their key (``ls`` shows the name, ``link`` prints a link another repo gets the same bytes
from), ``--no-keep-key`` keeps none, ``get LINK PATH`` fetches one entry's blocks only and ``ls LINK``
the metadata only, through a daemon and through the temporary node of a get without one."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from node.daemon.api_client import ApiClient
from node.daemon.errors import ApiError
from node.store.repo import Repo
from protocol.cid import cid_to_text
from protocol.link import parse_link
from tests.daemon.test_daemon import Daemon, daemons  # noqa: F401 - the fixture
from tests.helpers import RunCli, ok, one_error

BIG = 3 << 20


def stored(repo: Path) -> int:
    """Bytes of blocks a repo holds (read while no daemon writes it, or through the index's WAL)."""
    opened = Repo.open(repo, create=False)
    try:
        return opened.blocks.stats()[1]
    finally:
        opened.close()


def shared_folder(tmp_path: Path) -> Path:
    path = tmp_path / "photos"
    (path / "sub").mkdir(parents=True)
    (path / "big.bin").write_bytes(os.urandom(BIG))
    (path / "sub" / "small.txt").write_text("small and alone")
    return path


def test_fetched_roots_keep_their_key_and_a_path_or_a_listing_fetches_only_its_part(
    tmp_path: Path,
    run_cli: RunCli,
    daemons: Callable[..., Daemon],  # noqa: F811 - the fixture imported above
) -> None:
    folder = shared_folder(tmp_path)
    first, second = tmp_path / "a", tmp_path / "b"
    a = daemons(first)
    bootstrap = a.wait_ready()["addrs"][0]
    b = daemons(second, "--bootstrap", bootstrap)
    b.wait_ready()
    b.wait_for(r"bootstrap: reached 1 of 1 peer", timeout=15)
    link = ok(run_cli("--repo", first, "add", folder)).strip()
    root = cid_to_text(parse_link(link).root)
    a.wait_for(r"announced root .* to the DHT", timeout=10)

    # ls LINK through b's daemon: the metadata only
    lines = ok(run_cli("--repo", second, "ls", link)).splitlines()
    assert lines[0] == "photos/: 2 file(s), 3.1 MB" and lines[-1].endswith("sub/small.txt")
    assert stored(second) < BIG // 20
    # one file of the folder through b's daemon: its blocks, not the big file's; nothing pinned
    out = tmp_path / "small.txt"
    ok(run_cli("--repo", second, "get", link, "sub/small.txt", "-o", out))
    assert out.read_text() == "small and alone"
    assert stored(second) < BIG // 20
    assert json.loads(ok(run_cli("--repo", second, "ls", "--json"))) == []
    assert "no entry 'sub/none'" in one_error(run_cli("--repo", second, "get", link, "sub/none"))
    # the whole folder: pinned with its key, so ls shows its name and link prints it again
    ok(run_cli("--repo", second, "get", link, "-o", tmp_path / "whole"))
    assert (tmp_path / "whole" / "big.bin").read_bytes() == (folder / "big.bin").read_bytes()
    (pin,) = json.loads(ok(run_cli("--repo", second, "ls", "--json")))
    assert (pin["root"], pin["name"], pin["root_name"], pin["key_kept"]) == (root, None, "photos", True)
    assert "photos" in ok(run_cli("--repo", second, "ls")).splitlines()[1]
    again = ok(run_cli("--repo", second, "link", root)).strip()
    assert parse_link(again).root == parse_link(link).root and parse_link(again).key == parse_link(link).key
    assert again not in b.output() and root in b.output()  # the daemon logs roots, never links

    # a repo without a daemon: the link b printed, a partial get and a listing by a temporary node
    third = tmp_path / "c"
    ok(run_cli("--repo", third, "ls", again, "--bootstrap", bootstrap))
    assert stored(third) < BIG // 20
    ok(
        run_cli(
            "--repo", third, "get", again, "sub/small.txt", "--bootstrap", bootstrap, "-o", tmp_path / "c.txt"
        )
    )
    assert (tmp_path / "c.txt").read_text() == "small and alone"
    assert stored(third) < BIG // 20 and json.loads(ok(run_cli("--repo", third, "ls", "--json"))) == []
    ok(run_cli("--repo", third, "get", again, "--bootstrap", bootstrap, "-o", tmp_path / "c-whole"))
    assert (tmp_path / "c-whole" / "big.bin").read_bytes() == (folder / "big.bin").read_bytes()
    assert json.loads(ok(run_cli("--repo", third, "ls", "--json")))[0]["key_kept"] is True

    # --no-keep-key, through a daemon and without: the pin keeps no key, link says so
    fourth = tmp_path / "d"
    ok(
        run_cli(
            "--repo", fourth, "get", link, "--no-keep-key", "--bootstrap", bootstrap, "-o", tmp_path / "d"
        )
    )
    (bare,) = json.loads(ok(run_cli("--repo", fourth, "ls", "--json")))
    assert (bare["root_name"], bare["key_kept"]) == (None, False)
    assert ok(run_cli("--repo", fourth, "ls")).splitlines()[1].split()[1] == "-"
    assert "--no-keep-key" in one_error(run_cli("--repo", fourth, "link", root))
    # fetched again keeping keys: the pin gains the key
    ok(run_cli("--repo", fourth, "get", link, "--bootstrap", bootstrap, "-o", tmp_path / "d2"))
    assert json.loads(ok(run_cli("--repo", fourth, "ls", "--json")))[0]["key_kept"] is True

    fifth = tmp_path / "e"
    e = daemons(fifth, "--bootstrap", bootstrap)
    e.wait_ready()
    e.wait_for(r"bootstrap: reached 1 of 1 peer", timeout=15)
    ok(run_cli("--repo", fifth, "get", link, "--no-keep-key", "-o", tmp_path / "e"))
    (bare,) = ApiClient(fifth).call("GET", "/v1/ls")["pins"]
    assert (bare["root_name"], bare["key_kept"]) == (None, False)
    assert "key_kept" in ApiClient(second).call("GET", "/v1/ls")["pins"][0]
    # the API's fields, checked: a bad path or keep_key is refused with one line
    api = ApiClient(fifth)
    listed = api.call("POST", "/v1/tree", {"link": link})
    assert listed == json.loads(ok(run_cli("--repo", second, "ls", link, "--json")))
    for body, error in (
        ({"path": "sub"}, "path must be a list"),
        ({"path": [1]}, "path must be a list"),
        ({"path": [".."]}, "unsafe name"),
        ({"keep_key": "no"}, "keep_key must be true or false"),
    ):
        with pytest.raises(ApiError, match=error):
            api.call("POST", "/v1/fetch", {"link": link, **body})
    assert a.stop() == 0 and b.stop() == 0 and e.stop() == 0
