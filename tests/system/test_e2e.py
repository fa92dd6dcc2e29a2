"""End to end, the way users run Sealbox: a 5-node testnet of real daemon processes (``scripts/testnet``)
and the real CLI as subprocesses, on real files. Every wait is on an event (a log line, a file written,
a process exit) within a deadline.

The tests share one testnet (starting it is most of their cost) and run in file order; each leaves every
node running. The ``--netns`` partition test is in ``test_testnet.py``.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.store.fsutil import FileWatch
from tests.helpers import file_sha256, snapshot
from tests.testnet_driver import Testnet, ok, wait_for_log

NODES = 5
MIB = 1024 * 1024
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: ")


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Testnet]:
    where = tmp_path_factory.mktemp("e2e")
    testnet = Testnet(where / "net", where / "home")
    try:
        ok(testnet.testnet("up", "--nodes", str(NODES)))
        yield testnet
    finally:
        testnet.cleanup()


def random_file(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


def wait_exit(pid: int, timeout: float) -> None:
    """Wait for a process that is not our child to exit (its pidfd turns readable)."""
    with contextlib.suppress(ProcessLookupError):
        fd = os.pidfd_open(pid)
        try:
            readable, _, _ = select.select([fd], [], [], timeout)
            assert readable, f"pid {pid} still runs after {timeout} s"
        finally:
            os.close(fd)


def test_add_on_node_0_get_on_node_4_by_link_only(net: Testnet, tmp_path: Path) -> None:
    sample = random_file(tmp_path / "sample.bin", 3 * MIB + 12345)
    link = net.add(0, sample)
    copy = tmp_path / "copy.bin"
    assert ok(net.cli(4, "get", link, "-o", copy)).strip() == str(copy)
    assert file_sha256(copy) == file_sha256(sample)
    # node 4 found node 0 through the DHT and now seeds the file too
    wait_for_log(net.log(4), r"announced root \S+ to the DHT")


def test_a_file_outlives_its_uploader_through_a_seed(net: Testnet, tmp_path: Path) -> None:
    sample = random_file(tmp_path / "seeded.bin", 2 * MIB)
    link = net.add(1, sample)
    ok(net.cli(2, "get", link, "-o", tmp_path / "first.bin"))
    served_before = net.status(2)["served_bytes"]
    ok(net.testnet("stop", "1"))  # the uploader is gone; node 2 holds the only other copy
    try:
        copy = tmp_path / "second.bin"
        ok(net.cli(3, "get", link, "-o", copy))
        assert file_sha256(copy) == file_sha256(sample)
        assert net.status(2)["served_bytes"] >= served_before + 2 * MIB  # node 2 served all of it
    finally:
        ok(net.testnet("start", "1"))


def test_eight_concurrent_gets_of_different_files(net: Testnet, tmp_path: Path) -> None:
    files = [random_file(tmp_path / f"f{i}.bin", 200_000 + i * 331_017) for i in range(8)]
    links = [net.add(i % NODES, f) for i, f in enumerate(files)]
    outs = [tmp_path / f"out{i}.bin" for i in range(8)]
    gets = [
        net.cli_process((i + 2) % NODES, "get", link, "-o", out)
        for i, (link, out) in enumerate(zip(links, outs, strict=True))
    ]
    for get in gets:
        _, err = get.communicate(timeout=120)
        assert get.returncode == 0, err
    for sample, out in zip(files, outs, strict=True):
        assert file_sha256(out) == file_sha256(sample)


def test_a_provider_stopped_mid_transfer_leaves_the_get_to_the_others(net: Testnet, tmp_path: Path) -> None:
    size = 48 * MIB
    sample = random_file(tmp_path / "big.bin", size)
    link = net.add(0, sample)
    offset = net.log_size(1)
    ok(net.cli(1, "get", link, "-o", tmp_path / "on-1.bin"))  # node 1 holds it too, and announces it
    wait_for_log(net.log(1), r"announced root \S+ to the DHT", after=offset)

    packs = net.repo(2) / "blocks" / "packs"
    held = sum(p.stat().st_size for p in packs.iterdir())
    pid0 = net.state()[0]["pid"]
    copy = tmp_path / "copy.bin"
    with FileWatch([packs]) as writes:
        get = net.cli_process(2, "get", link, "-o", copy)
        deadline = time.monotonic() + 60
        while sum(p.stat().st_size for p in packs.iterdir()) - held < size // 10:
            assert get.poll() is None, get.communicate()
            assert time.monotonic() < deadline, "the get wrote nothing in 60 s"
            writes.wait(deadline - time.monotonic())
    # a tenth is in: stop node 0 as 'testnet stop' does (SIGTERM), while the get runs
    assert get.poll() is None
    os.kill(pid0, signal.SIGTERM)
    fetched = sum(p.stat().st_size for p in packs.iterdir()) - held
    wait_exit(pid0, 20)
    try:
        _, err = get.communicate(timeout=120)
        assert get.returncode == 0, err
        assert fetched < size  # node 0 was stopped before the transfer was over
        assert file_sha256(copy) == file_sha256(sample)
        assert net.status(1)["served_bytes"] > 0
    finally:
        ok(net.testnet("start", "0"))


def test_a_restarted_node_keeps_its_identity_serves_and_reannounces(net: Testnet, tmp_path: Path) -> None:
    sample = random_file(tmp_path / "kept.bin", 1 * MIB)
    link = net.add(3, sample)  # only node 3 holds it
    peer_id = net.status(3)["peer_id"]
    ok(net.testnet("stop", "3"))
    offset = net.log_size(3)
    ok(net.testnet("start", "3"))
    status = net.status(3)
    assert status["peer_id"] == peer_id and status["served_bytes"] == 0
    line = wait_for_log(net.log(3), r"reprovide: announced \d+ root", after=offset)
    assert "announced 0 root" not in line, line
    copy = tmp_path / "copy.bin"
    ok(net.cli(4, "get", link, "-o", copy))
    assert file_sha256(copy) == file_sha256(sample)
    assert net.status(3)["served_bytes"] >= 1 * MIB


def test_a_folder_with_nesting_and_empty_files_round_trips(net: Testnet, tmp_path: Path) -> None:
    tree = tmp_path / "album"
    (tree / "2026" / "summer" / "beach").mkdir(parents=True)
    (tree / "empty-dir").mkdir()
    (tree / "empty.txt").write_bytes(b"")
    (tree / "2026" / "summer" / "beach" / "empty.jpg").write_bytes(b"")
    random_file(tree / "2026" / "summer" / "beach" / "wave.jpg", 700_000)
    random_file(tree / "2026" / "notes.txt", 1234)
    run = tree / "2026" / "show.sh"
    run.write_text("#!/bin/sh\necho slides\n")
    run.chmod(0o755)
    link = net.add(4, tree)
    dest = tmp_path / "copy"
    ok(net.cli(1, "get", link, "-o", dest))
    assert snapshot(dest) == snapshot(tree)


def test_every_daemon_log_line_is_one_structured_record(net: Testnet) -> None:
    """After everything above (gets, a provider killed mid-transfer, a restart), each daemon's log holds
    only ``time LEVEL logger: message`` lines: py-libp2p's records too, one line each, no traceback, and
    none of its records below WARNING (the daemon runs at the info level)."""
    for node in range(NODES):
        lines = net.log(node).read_text(errors="replace").splitlines()
        assert lines, f"node {node} logged nothing"
        bad = [line for line in lines if not LOG_LINE.match(line)]
        assert bad == [], f"node {node}: {bad[:5]}"
        chatter = [
            line for line in lines if re.match(r"^\S+ (DEBUG|INFO) (libp2p|multiaddr|async_service)", line)
        ]
        assert chatter == [], f"node {node}: library records below WARNING at the info level: {chatter[:3]}"


def test_down_leaves_no_process_and_no_listening_port(net: Testnet) -> None:
    assert all(node["running"] for node in net.state())
    ok(net.testnet("down"))
    assert net.leftovers() == []
