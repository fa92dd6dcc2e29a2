"""Two people on two machines, played on one: the daemon's fixed port, its fallback, bootstrap redial,
and ``sealbox address``. Real daemons (subprocesses), real CLI; each waits on what a log says."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
import trio

from node.daemon import main as daemon_main
from node.net.addresses import expand, interface_ips, lan_example
from node.net.host import DEFAULT_PORT
from protocol.link import MAX_PEERS, parse_link
from tests.daemon.test_daemon import Daemon, daemons
from tests.helpers import RunCli, ok, one_error

__all__ = ["daemons"]  # the fixture, imported for the tests below


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_two_daemons_on_one_machine_the_second_takes_another_port_and_warns(
    tmp_path: Path, daemons: Callable[..., Daemon]
) -> None:
    """Both on the config's default, 127.0.0.1:4710 (another test's daemon may hold it already: then the
    first moves too, and the second still does)."""
    first = daemons(tmp_path / "first")
    first_addrs = first.wait_ready()["addrs"]
    second = daemons(tmp_path / "second")
    addrs = second.wait_ready()["addrs"]
    second.wait_for(rf"WARNING node.daemon.main: listen: port {DEFAULT_PORT} is taken .* random port")
    assert len(addrs) == 1 and f"/tcp/{DEFAULT_PORT}/" not in addrs[0] and addrs != first_addrs
    assert addrs[0].startswith("/ip4/127.0.0.1/tcp/")
    assert first.stop() == 0 and second.stop() == 0


async def test_the_default_port_is_kept_when_free_and_moved_with_a_warning_when_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """In this process, on a port of the test's own standing in for 4710."""
    port = free_port()
    monkeypatch.setattr(daemon_main, "DEFAULT_PORT", port)
    default = f"/ip4/127.0.0.1/tcp/{port}"
    assert daemon_main._fixed_or_any([default, "/ip4/127.0.0.1/tcp/0"]) == [default, "/ip4/127.0.0.1/tcp/0"]
    assert not caplog.records
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                running = await nursery.start(partial(daemon_main.serve, tmp_path / "r", listen=[default]))
                nursery.cancel_scope.cancel()
    assert len(running.addrs) == 1 and f"/tcp/{port}/" not in running.addrs[0]
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        f"listen: port {port} is taken (another node on this machine?); listening on a random port instead:"
        " peers that know this node's usual address will not reach it ('sealbox address' prints the new one)"
    ]


def test_a_restarted_bootstrap_peer_on_its_fixed_port_is_found_again(
    tmp_path: Path, run_cli: RunCli, daemons: Callable[..., Daemon]
) -> None:
    """B joined through A. A stops and starts again on the same port (same repo, same peer id): B dials
    it again by itself, says so, and a get through B of what A holds works again."""
    port = free_port()
    listen = f"/ip4/127.0.0.1/tcp/{port}"
    a_repo, b_repo = tmp_path / "a", tmp_path / "b"
    a = daemons(a_repo, "--listen", listen)
    a_status = a.wait_ready()
    assert a_status["addrs"] == [f"{listen}/p2p/{a_status['peer_id']}"]
    b = daemons(b_repo, "--listen", "/ip4/127.0.0.1/tcp/0", "--bootstrap", a_status["addrs"][0])
    b.wait_ready()
    b.wait_for(r"bootstrap: reached 1 of 1 peer")
    sample = tmp_path / "kept.bin"
    sample.write_bytes(os.urandom(300_000))
    link = ok(run_cli("--repo", a_repo, "add", sample)).strip()
    a.wait_for(r"announced root .* to the DHT")  # to b, its only DHT peer: b holds the record
    assert a.stop() == 0
    b.wait_for(r"bootstrap: 1 peer\(s\) unreachable; next try in about")
    # the one provider b knows is gone: said at once, with how long it looked (not a 30 s lookup)
    error = one_error(run_cli("--repo", b_repo, "get", link, "-o", tmp_path / "nothing"))
    assert re.search(r"1 provider\(s\) known, none reachable \(looked for \d+\.\d s\)", error), error
    again = daemons(a_repo, "--listen", listen)
    assert again.wait_ready()["addrs"] == a_status["addrs"]
    b.wait_for(r"INFO node.net.bootstrap: bootstrap: reconnected to 1 of 1 peer\(s\)", timeout=60)
    copy = tmp_path / "copy.bin"
    assert ok(run_cli("--repo", b_repo, "get", link, "-o", copy)).strip() == str(copy)
    assert copy.read_bytes() == sample.read_bytes()
    peers = json.loads(ok(run_cli("--repo", b_repo, "peers", "--json")))
    assert [p["peer_id"] for p in peers] == [a_status["peer_id"]]
    assert again.stop() == 0 and b.stop() == 0


def test_address_prints_what_a_peer_pastes_and_warns_when_it_is_loopback_only(
    tmp_path: Path, run_cli: RunCli, daemons: Callable[..., Daemon]
) -> None:
    repo = tmp_path / "r"
    assert "no daemon runs on" in one_error(run_cli("--repo", repo, "address"))
    node = daemons(repo, "--listen", "/ip4/127.0.0.1/tcp/0")
    status = node.wait_ready()
    shown = run_cli("--repo", repo, "address")
    assert shown.returncode == 0 and shown.stdout.splitlines() == status["addrs"]
    example = lan_example(int(status["addrs"][0].split("/")[4]), interface_ips())
    assert shown.stderr.strip() == (
        "sealbox: warning: only loopback addresses: a peer on another machine cannot reach this node;"
        f" listen on a LAN address, e.g. --listen {example}"
    )
    answer = json.loads(ok(run_cli("--repo", repo, "address", "--json")))
    assert answer["addrs"] == status["addrs"] and answer["loopback_only"] is True
    assert answer["peer_id"] == status["peer_id"]
    # connected to no one: peers says so (on stderr; stdout stays a list, empty)
    alone = run_cli("--repo", repo, "peers")
    assert alone.returncode == 0 and alone.stdout == ""
    assert "not connected to any peer" in alone.stderr
    assert json.loads(ok(run_cli("--repo", repo, "peers", "--json"))) == []
    assert node.stop() == 0


def test_address_expands_a_node_listening_on_every_interface(
    tmp_path: Path, run_cli: RunCli, daemons: Callable[..., Daemon]
) -> None:
    """Listening sends nothing; the test only reads what the daemon says it can be reached at."""
    repo = tmp_path / "r"
    node = daemons(repo, "--listen", "/ip4/0.0.0.0/tcp/0")
    status = node.wait_ready()
    port, peer = status["addrs"][0].split("/")[4], status["peer_id"]
    shown = run_cli("--repo", repo, "address")
    ipv4 = [ip for ip in interface_ips() if ":" not in ip]
    expected = {f"/ip4/{ip}/tcp/{port}/p2p/{peer}" for ip in ipv4}
    assert set(shown.stdout.splitlines()) == expected and "0.0.0.0" not in shown.stdout
    assert shown.stdout.splitlines()[-1] == f"/ip4/127.0.0.1/tcp/{port}/p2p/{peer}"  # loopback last
    if any(ip != "127.0.0.1" for ip in ipv4):
        assert shown.stderr == ""
    # the node advertises those addresses too: add --peer-hints puts them in the link, in that order
    (tmp_path / "hello.txt").write_text("hello\n")
    hinted = parse_link(ok(run_cli("--repo", repo, "add", tmp_path / "hello.txt", "--peer-hints")).strip())
    assert hinted.peers == tuple(shown.stdout.splitlines()[:MAX_PEERS])
    assert node.stop() == 0


def test_unspecified_addresses_become_each_interface_address_loopback_last() -> None:
    peer = "/p2p/12D3KooWE9jFFFh4K2fmCFpaGhGsqtbfL3BvRq6evgmmhJUbLWz2"
    ips = ["127.0.0.1", "192.168.1.20", "::1", "fd00::2"]
    assert expand([f"/ip4/0.0.0.0/tcp/4710{peer}", f"/ip6/::/tcp/4710{peer}"], ips) == [
        f"/ip4/192.168.1.20/tcp/4710{peer}",
        f"/ip6/fd00::2/tcp/4710{peer}",
        f"/ip4/127.0.0.1/tcp/4710{peer}",
        f"/ip6/::1/tcp/4710{peer}",
    ]
    assert expand([f"/ip4/10.0.0.5/tcp/1{peer}"], ips) == [f"/ip4/10.0.0.5/tcp/1{peer}"]
    assert lan_example(4710, ips) == "/ip4/192.168.1.20/tcp/4710"
    assert lan_example(4710, ["127.0.0.1"]) == "/ip4/0.0.0.0/tcp/4710"
