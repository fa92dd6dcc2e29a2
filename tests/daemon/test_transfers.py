"""Transfers the daemon runs: seen (``sealbox transfers``), stopped (Ctrl-C, ``transfers cancel``),
handed over (``get --detach``), and the streaming API that binds a transfer to its connection.

End to end: real daemons on 127.0.0.1 port 0 and the real ``sealbox`` command; Ctrl-C is a SIGINT to a
CLI whose stderr is a pseudo-terminal. The tests wait on what the daemon's API says (a transfer listed,
then none), bounded by deadlines, never on a length of time.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from node.daemon import api
from node.daemon.api_client import ApiClient
from node.daemon.api_stream import Channel, Streaming
from node.daemon.errors import ApiError
from node.daemon.transfer_state import Registry, check_id
from node.net.exchange import BlockServer
from node.store.repo import Repo
from tests.daemon.test_daemon import TOKEN, Daemon
from tests.helpers import SEALBOX, RunCli, drain_pty, ok, one_error, start_on_pty

WAIT = 60.0  # seconds: a bound on waiting for what the API should soon say, not a budget
MB = 1_000_000


def _env(tmp_path: Path) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "SEALBOX_REPO"} | {"HOME": str(tmp_path / "home")}


def _transfers(repo: Path) -> dict[str, Any]:
    listing: dict[str, Any] = ApiClient(repo).call("GET", "/v1/transfers", timeout=10)
    return listing


def _wait_for_transfer(repo: Path, kind: str, *, moving: bool) -> dict[str, Any]:
    """The first listed transfer of ``kind`` (with ``moving``: once it has stored bytes), polling the
    API until it shows, within ``WAIT`` seconds."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        listed: list[dict[str, Any]] = _transfers(repo)["transfers"]
        for transfer in listed:
            if transfer["kind"] == kind and (not moving or transfer["done"] > 0):
                return transfer
    pytest.fail(f"no {kind} transfer listed within {WAIT} s")


def _wait_none_running(repo: Path) -> None:
    deadline = time.monotonic() + WAIT
    while _transfers(repo)["transfers"]:
        if time.monotonic() > deadline:
            pytest.fail(f"transfers still listed after {WAIT} s: {_transfers(repo)}")


def _drawn_until(leader: int, pattern: str) -> bytes:
    """What the CLI draws on its terminal until it has drawn ``pattern`` (within ``WAIT`` seconds)."""
    drawn = b""
    deadline = time.monotonic() + WAIT
    while not re.search(pattern.encode(), drawn):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([leader], [], [], left)[0]:
            pytest.fail(f"the CLI drew no {pattern!r} within {WAIT} s: {drawn[-400:]!r}")
        try:
            drawn += os.read(leader, 4096)
        except OSError:  # EIO: the CLI closed its terminal (it ended)
            pytest.fail(f"the CLI ended before drawing {pattern!r}: {drawn[-400:]!r}")
    return drawn


def _interrupt(proc: Any, leader: int, drawn: bytes = b"") -> tuple[int, str, str]:
    """Ctrl-C (SIGINT, as the terminal sends it) to a CLI started on a pty; its code, stdout, drawing."""
    proc.send_signal(signal.SIGINT)
    try:
        drawn += drain_pty(leader)
        out, _ = proc.communicate(timeout=WAIT)
    finally:
        os.close(leader)
    return proc.returncode, out.decode(), drawn.decode(errors="replace")


def _stored(repo: Path) -> int:
    stored: int = ApiClient(repo).call("GET", "/v1/status", timeout=10)["stored_bytes"]
    return stored


def test_ctrl_c_during_a_get_through_the_daemon_stops_the_fetch_and_says_what_stays(
    tmp_path: Path, run_cli: RunCli, daemons: Callable[..., Daemon]
) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    big = tmp_path / "big.bin"
    with big.open("wb") as f:
        for _ in range(300):  # 300 MB of random bytes: a fetch long enough to interrupt
            f.write(os.urandom(MB))
    a = daemons(first)
    a_status = a.wait_ready()
    daemons(second, "--bootstrap", a_status["addrs"][0]).wait_ready()
    link = ok(run_cli("--repo", first, "add", big, "--peer-hints")).strip()

    out = tmp_path / "copy.bin"
    proc, leader = start_on_pty([SEALBOX, "--repo", str(second), "get", link, "-o", str(out)], _env(tmp_path))
    shown = _drawn_until(leader, r"fetching: +\d+% [\d.]+ MB / 30\d\.\d MB")  # a total once the root is open
    running = _wait_for_transfer(second, "fetch", moving=True)
    assert running["total"] and running["total"] >= big.stat().st_size
    code, printed, drawn = _interrupt(proc, leader, shown)
    assert code == 130 and printed == ""
    line = re.search(r"sealbox: error: (interrupted: .*)", drawn)
    assert line, drawn[-400:]
    assert "the daemon stopped the fetch" in line[1]
    assert re.search(r"[\d.]+ [kMG]?B already fetched stay in the repo and a later get resumes", line[1]), (
        line[1]
    )

    # the daemon stopped: nothing runs, nothing is pinned, and what it stored stops growing
    _wait_none_running(second)
    before = _stored(second)
    assert 0 < before < big.stat().st_size
    assert _transfers(second)["transfers"] == []  # an event between the two looks at the store
    assert _stored(second) == before
    assert json.loads(ok(run_cli("--repo", second, "ls", "--json"))) == []
    assert not out.exists()
    # a later get resumes from what stayed, and says so
    code, printed, drawn_again = _run_pty(
        [SEALBOX, "--repo", str(second), "get", link, "-o", str(out)], tmp_path
    )
    assert code == 0 and printed.strip() == str(out), drawn_again[-400:]
    assert "already here" in drawn_again
    assert out.stat().st_size == big.stat().st_size


def test_ctrl_c_during_a_get_without_a_daemon_says_what_stays(
    tmp_path: Path, run_cli: RunCli, daemons: Callable[..., Daemon]
) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    big = tmp_path / "big.bin"
    with big.open("wb") as f:
        for _ in range(300):
            f.write(os.urandom(MB))
    daemons(first).wait_ready()
    link = ok(run_cli("--repo", first, "add", big, "--peer-hints")).strip()
    proc, leader = start_on_pty(
        [SEALBOX, "--repo", str(second), "get", link, "-o", str(tmp_path / "x")], _env(tmp_path)
    )
    shown = _drawn_until(leader, r"fetching: +\d+% [\d.]+ MB / 30\d\.\d MB")
    code, printed, drawn = _interrupt(proc, leader, shown)
    assert code == 130 and printed == ""
    assert re.search(r"interrupted: [\d.]+ [kMG]?B already fetched stay in the repo \(not pinned\)", drawn), (
        drawn[-300:]
    )
    assert json.loads(ok(run_cli("--repo", second, "ls", "--json"))) == []


def _run_pty(args: list[str], tmp_path: Path) -> tuple[int, str, str]:
    proc, leader = start_on_pty(args, _env(tmp_path))
    try:
        drawn = drain_pty(leader)
        out, _ = proc.communicate(timeout=WAIT * 2)
    finally:
        os.close(leader)
    return proc.returncode, out.decode(), drawn.decode(errors="replace")


def test_ctrl_c_during_an_add_through_the_daemon_pins_nothing_and_prints_no_link(
    tmp_path: Path, run_cli: RunCli, daemons: Callable[..., Daemon]
) -> None:
    repo = tmp_path / "repo"
    daemons(repo).wait_ready()
    big = tmp_path / "sparse.bin"
    with big.open("wb") as f:
        f.truncate(4000 * MB)  # zeros the add reads and seals for long enough to interrupt
    proc, leader = start_on_pty([SEALBOX, "--repo", str(repo), "add", str(big)], _env(tmp_path))
    shown = _drawn_until(leader, r"sealing: +\d+%")  # the daemon's add draws a bar
    running = _wait_for_transfer(repo, "add", moving=True)
    assert running["total"] == big.stat().st_size and running["name"] == "sparse.bin"
    code, printed, drawn = _interrupt(proc, leader, shown)
    assert code == 130 and printed == ""  # no link
    assert "interrupted: the daemon stopped the add; nothing was pinned and no link was made" in drawn
    _wait_none_running(repo)
    assert json.loads(ok(run_cli("--repo", repo, "ls", "--json"))) == []
    before = _stored(repo)
    assert _transfers(repo)["transfers"] == []
    assert _stored(repo) == before


def test_transfers_are_listed_cancelled_and_detached(
    tmp_path: Path, run_cli: RunCli, daemons: Callable[..., Daemon]
) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    a = daemons(first)
    a_status = a.wait_ready()
    daemons(second, "--bootstrap", a_status["addrs"][0]).wait_ready()
    assert ok(run_cli("--repo", second, "transfers")).strip() == "no transfers running"
    assert json.loads(ok(run_cli("--repo", second, "transfers", "--json")))["transfers"] == []

    # the provider stopped (SIGSTOP): the detached fetch waits on it (for its request deadlines)
    sample = tmp_path / "sample.bin"
    sample.write_bytes(os.urandom(700_000))
    link = ok(run_cli("--repo", first, "add", sample, "--peer-hints", "--name", "sample")).strip()
    a.proc.send_signal(signal.SIGSTOP)
    try:
        said = ok(run_cli("--repo", second, "get", link, "--detach"))
        tid = re.search(r"transfer ([0-9a-f]{8})", said)
        assert tid and "sealbox transfers" in said, said
        table = ok(run_cli("--repo", second, "transfers"))
        assert re.search(r"^ID +KIND +NAME/ROOT +DONE/TOTAL +% +SPEED +PEERS +ETA$", table, re.M), table
        assert re.search(rf"^{tid[1]} +fetch +sample ", table, re.M), table
        listed = json.loads(ok(run_cli("--repo", second, "transfers", "--json")))["transfers"]
        assert [t["id"] for t in listed] == [tid[1]] and listed[0]["state"] == "running"
        assert link.split("#")[-1] not in table + json.dumps(listed)  # no key
        cancelled = json.loads(ok(run_cli("--repo", second, "transfers", "cancel", tid[1], "--json")))
        assert cancelled["id"] == tid[1] and cancelled["state"] == "cancelled" and not cancelled["pinned"]
        # a get that waits says so with a running clock (not a frozen bar); Ctrl-C: nothing was fetched
        args = [SEALBOX, "--repo", str(second), "get", link, "-o", str(tmp_path / "never.bin")]
        proc, leader = start_on_pty(args, _env(tmp_path))
        shown = _drawn_until(leader, r"looking for providers… 0:0[1-9]")
        code, printed, drawn = _interrupt(proc, leader, shown)
        assert code == 130 and printed == "", printed
        assert "the daemon stopped the fetch; nothing was fetched yet" in drawn, drawn[-300:]
    finally:
        a.proc.send_signal(signal.SIGCONT)
    assert ok(run_cli("--repo", second, "transfers")).strip() == "no transfers running"
    # cancelling again says how it ended; a bad id and an unknown one get one clear line each
    assert "already" not in ok(run_cli("--repo", second, "transfers", "cancel", tid[1]))
    assert "id must be a transfer id" in one_error(run_cli("--repo", second, "transfers", "cancel", "nope"))
    assert "no transfer 00000000" in one_error(run_cli("--repo", second, "transfers", "cancel", "00000000"))
    with pytest.raises(ApiError) as refused:
        ApiClient(second).call("POST", "/v1/transfers/cancel", {"id": "../../x"})
    assert refused.value.status == 400

    # a detached fetch finishes without its client and is pinned
    detached = json.loads(ok(run_cli("--repo", second, "get", link, "--detach", "--json")))
    assert detached["detached"] is True and re.fullmatch(r"[0-9a-f]{8}", detached["id"])
    _wait_none_running(second)
    pins = json.loads(ok(run_cli("--repo", second, "ls", "--json")))
    assert [p["root"] for p in pins] == [detached["root"]]
    out = tmp_path / "copy.bin"
    ok(run_cli("--repo", second, "get", link, "-o", out))
    assert out.read_bytes() == sample.read_bytes()
    # without a daemon, --detach says it needs one; transfers says none runs
    other = tmp_path / "other"
    assert "no daemon runs" in one_error(run_cli("--repo", other, "transfers"))
    assert "none runs" in one_error(run_cli("--repo", other, "get", link, "--detach"))


# -- in process: the streaming API --------------------------------------------------------------------


async def test_a_client_that_goes_away_cancels_its_transfer(tmp_path: Path) -> None:
    """The daemon's streaming answer: a ``started`` line, progress lines; closing the connection cancels
    the transfer bound to it at once (its state: cancelled). A plain request gets plain JSON."""
    repo = Repo.open(tmp_path / "repo")
    try:
        registry = Registry(BlockServer(repo.blocks))
        ran: list[str] = []

        async def forever(_args: dict[str, Any], channel: Channel) -> Any:
            transfer = registry.new("fetch", name="x")
            ran.append(transfer.id)
            channel.bind(transfer.cancel)
            await channel.emit({"event": "started", "id": transfer.id})
            return await registry.run(transfer, trio.sleep_forever)

        async def quick(_args: dict[str, Any], channel: Channel) -> Any:
            await channel.emit({"event": "progress", "done": 1})
            return {"answer": 42}

        path = tmp_path / "api.sock"
        routes: api.Routes = {
            ("POST", "/v1/forever"): Streaming(forever),
            ("POST", "/v1/quick"): Streaming(quick),
        }
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(api.serve, path, TOKEN, routes))
            with trio.fail_after(20):
                stream = await trio.open_unix_socket(str(path))
                await stream.send_all(_streaming_request("/v1/forever"))
                seen = b""
                while b'"started"' not in seen:
                    seen += await stream.receive_some(4096)
                assert b"200" in seen.split(b"\r\n")[0] and b"application/x-ndjson" in seen.lower()
                assert registry.running  # listed while it runs
                await stream.aclose()  # the client goes away
                transfer = registry.find(ran[0])
                await transfer.finished.wait()
                assert transfer.state == "cancelled" and not registry.running

                answer = await _whole_answer(path, _streaming_request("/v1/quick"))
                events = [json.loads(line) for line in _chunks(answer).splitlines() if line.strip()]
                assert events == [{"event": "progress", "done": 1}, {"event": "done", "answer": 42}]
                plain = await _whole_answer(path, _streaming_request("/v1/quick", accept=""))
                assert plain.endswith(b'{"answer": 42}') and b"content-length" in plain.lower()
            nursery.cancel_scope.cancel()
    finally:
        repo.close()


def test_a_transfer_id_is_checked() -> None:
    assert check_id("0123abcd") == "0123abcd"
    for bad in ("", "0123ABCD", "0123abc", "0123abcde", "../etc/x", 12345678, None):
        with pytest.raises(ApiError, match="id must be a transfer id") as refused:
            check_id(bad)
        assert refused.value.status == 400


def _streaming_request(target: str, accept: str = "application/x-ndjson") -> bytes:
    head = (
        f"POST {target} HTTP/1.1\r\nHost: sealbox\r\nContent-Length: 2\r\nAuthorization: Bearer {TOKEN}\r\n"
    )
    if accept:
        head += f"Accept: {accept}\r\n"
    return head.encode() + b"\r\n{}"


async def _whole_answer(path: Path, request: bytes) -> bytes:
    """The answer to ``request``, read until the server closes (the client keeps its side open)."""
    stream = await trio.open_unix_socket(str(path))
    async with stream:
        await stream.send_all(request)
        answer = b""
        while chunk := await stream.receive_some(65536):
            answer += chunk
        return answer


def _chunks(answer: bytes) -> str:
    """The body of a chunked answer, its chunk sizes left out."""
    body = answer.split(b"\r\n\r\n", 1)[1]
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return out.decode()
