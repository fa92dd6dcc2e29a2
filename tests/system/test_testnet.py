"""``scripts/testnet``: a local network of real daemons, driven as a user would (the real script as a
subprocess on a tmp dir): up, status, a file added on one node and fetched on another through the DHT,
stop and start of one node, down (no process and no listening port left), its refusals, and the
``--netns`` mode with ``partition`` and ``heal``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.testnet_driver import (
    ADDR_RE,
    TESTNET,
    Testnet,
    namespaces,
    ok,
    one_error,
    rows,
    run,
    runs,
    wait_for_log,
)


def netns_unavailable() -> str | None:
    """Why this machine cannot run ``up --netns`` (None when it can)."""
    if os.geteuid() != 0:
        return "needs root"
    if shutil.which("ip") is None:
        return "needs iproute2's ip"
    probe = f"sbx-test-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, check=False)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.decode(errors='replace').strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    return None


NETNS_UNAVAILABLE = netns_unavailable()
needs_netns = pytest.mark.skipif(NETNS_UNAVAILABLE is not None, reason=f"--netns: {NETNS_UNAVAILABLE}")


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Testnet]:
    testnet = Testnet(tmp_path / "net", tmp_path / "home")
    try:
        yield testnet
    finally:
        testnet.cleanup()


def test_testnet_up_share_stop_start_down(tmp_path: Path, net: Testnet) -> None:
    up = ok(net.testnet("up", "--nodes", "3"))
    table = rows(up)
    assert sorted(table) == [0, 1, 2]
    assert all(ADDR_RE.search(row) and "127.0.0.1" in row for row in table.values()), table
    assert "scripts/sealbox --repo" in up and "net/node-" in up, up
    ids = {node["index"]: node["peer_id"] for node in net.state()}

    table = rows(ok(net.testnet("status")))
    assert all("running" in table[i] and ids[i] in table[i] for i in range(3)), table

    # the same dir again: refused while it runs
    assert "already runs" in one_error(net.testnet("up", "--nodes", "3"))
    # partition needs --netns
    assert "--netns" in one_error(net.testnet("partition", "1"), code=2)

    # a file added on node 0 is fetched by node 2's daemon, found through the DHT
    sample = tmp_path / "sample.bin"
    sample.write_bytes(os.urandom(300_000))
    link = net.add(0, sample)
    copy = tmp_path / "copy.bin"
    ok(net.cli(2, "get", link, "-o", copy))
    assert copy.read_bytes() == sample.read_bytes()
    wait_for_log(net.log(2), r"fetched root \S+ from 1 provider")

    # stop node 1: it shows stopped, the others run on
    old_pid = net.state()[1]["pid"]
    ok(net.testnet("stop", "1"))
    table = rows(ok(net.testnet("status")))
    assert "stopped" in table[1] and "running" not in table[1], table
    assert "running" in table[0] and "running" in table[2], table
    assert not runs(old_pid), f"node 1's daemon (pid {old_pid}) still runs"
    assert "not running" in one_error(net.testnet("stop", "1"))

    # start it again: same identity, running, joined
    assert "joined through node 0" in ok(net.testnet("start", "1"))
    assert net.state()[1]["peer_id"] == ids[1]
    table = rows(ok(net.testnet("status")))
    assert "running" in table[1] and ids[1] in table[1], table
    assert "already runs" in one_error(net.testnet("start", "1"))

    # down: no process, no listening port left; the repos stay
    ok(net.testnet("down"))
    assert net.leftovers() == []
    assert all((net.repo(i) / "identity").exists() for i in range(3))
    table = rows(ok(net.testnet("status")))
    assert all("stopped" in row for row in table.values()), table
    ok(net.testnet("down", "--purge"))
    assert not net.root.exists()


def test_testnet_refusals_are_one_line(tmp_path: Path) -> None:
    home, where = tmp_path / "home", tmp_path / "net"
    assert "no testnet" in one_error(run(home, TESTNET, "--dir", where, "status"))
    assert "no testnet" in one_error(run(home, TESTNET, "--dir", where, "down"))
    assert "no testnet" in one_error(run(home, TESTNET, "--dir", where, "partition", "0"))
    one_error(run(home, TESTNET, "up"), code=2)  # --nodes is required
    one_error(run(home, TESTNET, "up", "--nodes", "0"), code=2)
    one_error(run(home, TESTNET, "frobnicate"), code=2)
    helps = ok(run(home, TESTNET, "--help"))
    for command in ("up", "status", "stop", "start", "partition", "heal", "down"):
        assert command in helps
    assert "network namespace" in ok(run(home, TESTNET, "up", "--help"))


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_netns_mode_is_refused_clearly_without_root() -> None:
    with tempfile.TemporaryDirectory() as tmp:  # not under pytest's tmp dirs, which only root may enter
        where = Path(tmp)
        where.chmod(0o777)
        nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        result = subprocess.run(
            # the script itself, with the venv's python (the wrapper might want to set up the venv)
            [
                *nobody,
                sys.executable,
                f"{TESTNET}.py",
                "--dir",
                str(where / "net"),
                "up",
                "--nodes",
                "2",
                "--netns",
            ],
            env={"PATH": os.environ["PATH"], "HOME": str(where)},
            cwd=where,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert "needs root" in one_error(result, code=2)
        assert not (where / "net").exists()


@needs_netns
def test_netns_partition_and_heal(tmp_path: Path, net: Testnet) -> None:
    before = namespaces()
    up = ok(net.testnet("up", "--nodes", "3", "--netns"))
    assert "own network namespace" in up
    state = net.state()
    assert [n["addr"].split("/")[2] for n in state] == ["10.47.0.1", "10.47.0.2", "10.47.0.3"]
    made = namespaces() - before
    assert len(made) == 4, made  # one per node and the hub holding the bridge

    # node 1 holds a file; cut off, nobody can fetch it: a clear error within the get's deadlines
    sample = tmp_path / "sample.bin"
    sample.write_bytes(os.urandom(2_000_000))
    link = net.add(1, sample)
    assert "partitioned" in ok(net.testnet("partition", "1"))
    assert "partitioned" in rows(ok(net.testnet("status")))[1]
    copy = tmp_path / "copy.bin"
    get = net.cli(2, "get", link, "-o", copy)
    assert "cannot reach the 1 peer(s) that hold it" in one_error(get, prefix="sealbox")
    assert not copy.exists()

    # healed: the same get succeeds
    assert "healed" in ok(net.testnet("heal", "1"))
    ok(net.cli(2, "get", link, "-o", copy))
    assert copy.read_bytes() == sample.read_bytes()

    # down removes the namespaces with the daemons
    ok(net.testnet("down"))
    assert net.leftovers() == []
    assert namespaces() & made == set()
