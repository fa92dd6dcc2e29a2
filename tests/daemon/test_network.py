"""Two people on two machines, played on one: the daemon's fixed port, its fallback, bootstrap redial,
and ``sealbox address``. Real daemons (subprocesses), real CLI; each waits on what a log says."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from node.net.host import DEFAULT_PORT
from tests.daemon.test_daemon import Daemon, daemons
from tests.helpers import RunCli, ok

__all__ = ["daemons"]  # the fixture, imported for the tests below


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def default_port_taken() -> Iterator[None]:
    """Something other than a daemon holds the default port on 127.0.0.1 (if something else already
    holds it, as another test's daemon may, it stays taken all the same)."""
    holder = socket.socket()
    try:
        holder.bind(("127.0.0.1", DEFAULT_PORT))
        holder.listen()
    except OSError:
        pass
    try:
        yield
    finally:
        holder.close()


def test_a_daemon_whose_default_port_is_taken_listens_on_another_and_warns(
    tmp_path: Path, run_cli: RunCli, daemons: Callable[..., Daemon], default_port_taken: None
) -> None:
    node = daemons(tmp_path / "second")  # no --listen: the config's default, 127.0.0.1:4710
    status = node.wait_ready()
    node.wait_for(rf"WARNING node.daemon.main: listen: port {DEFAULT_PORT} is taken .* random port")
    assert len(status["addrs"]) == 1 and f"/tcp/{DEFAULT_PORT}/" not in status["addrs"][0]
    assert status["addrs"][0].startswith("/ip4/127.0.0.1/tcp/")
    assert node.stop() == 0


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
    assert a.stop() == 0
    b.wait_for(r"bootstrap: 1 peer\(s\) unreachable; next try in about")
    again = daemons(a_repo, "--listen", listen)
    assert again.wait_ready()["addrs"] == a_status["addrs"]
    b.wait_for(r"INFO node.net.bootstrap: bootstrap: reconnected to 1 of 1 peer\(s\)", timeout=60)
    copy = tmp_path / "copy.bin"
    assert ok(run_cli("--repo", b_repo, "get", link, "-o", copy)).strip() == str(copy)
    assert copy.read_bytes() == sample.read_bytes()
    peers = json.loads(ok(run_cli("--repo", b_repo, "peers", "--json")))
    assert [p["peer_id"] for p in peers] == [a_status["peer_id"]]
    assert again.stop() == 0 and b.stop() == 0
