"""The daemon, its control API and the CLI commands that use it.

End to end: the real ``sealbox daemon`` as a subprocess on 127.0.0.1 port 0 (readiness = its control
socket answers, within a deadline), driven by the real ``sealbox`` command. In process: the API server's
caps and deadlines against raw HTTP bytes, the config file, the identity file.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from node.daemon import api
from node.daemon.api_client import ApiClient
from node.daemon.config import TEMPLATE, Config, load_config, parse_config
from node.daemon.errors import ApiError, ConfigError
from node.net.identity import load_or_create_identity
from node.store.errors import RepoError
from protocol.link import parse_link
from tests.helpers import SEALBOX, LoggedProcess, RunCli, ok, one_error, peer_id_of, run_on_pty

READY_TIMEOUT = 30.0
STOP_TIMEOUT = 60.0  # a bound on waiting for the exit, not a budget


class Daemon(LoggedProcess):
    """A ``sealbox daemon`` subprocess on ``repo``; the test waits on what its log says."""

    log_timeout = READY_TIMEOUT

    def __init__(self, repo: Path, home: Path, *flags: str) -> None:
        self.repo = repo
        env = {k: v for k, v in os.environ.items() if k != "SEALBOX_REPO"} | {"HOME": str(home)}
        super().__init__([SEALBOX, "--repo", str(repo), "daemon", *flags], env)

    def wait_ready(self) -> dict[str, Any]:
        self.wait_for(r"ready: peer ")
        status: dict[str, Any] = ApiClient(self.repo).call("GET", "/v1/status", timeout=5)
        return status

    def stop(self) -> int:
        """SIGTERM; returns the exit status once the daemon has exited."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=STOP_TIMEOUT)


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """Start daemons; any still running at the end of the test is killed."""
    started: list[Daemon] = []
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)

    def start(repo: Path, *flags: str) -> Daemon:
        daemon = Daemon(repo, home, *flags)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait()


ADDR_RE = re.compile(r"/ip4/127\.0\.0\.1/tcp/(\d+)/p2p/(\w+)")


# -- end to end: a real daemon ------------------------------------------------------------------------


def test_daemon_serves_the_cli_stops_on_sigterm_and_keeps_its_identity(
    tmp_path: Path, run_cli: RunCli, daemons: Callable[..., Daemon]
) -> None:
    repo = tmp_path / "repo"
    sample = tmp_path / "sample.bin"
    sample.write_bytes(os.urandom(200_000))
    daemon = daemons(repo)
    daemon.wait_ready()

    status = json.loads(ok(run_cli("--repo", repo, "status", "--json")))
    peer_id = status["peer_id"]
    match = ADDR_RE.fullmatch(status["addrs"][0])
    assert match is not None, status
    assert int(match[1]) > 0 and match[2] == peer_id
    assert status["peers"] == 0 and status["roots"] == 0 and status["seed"] is True
    text = ok(run_cli("--repo", repo, "status"))
    assert peer_id in text and status["addrs"][0] in text

    # add through the daemon (its log says so), then ls shows the root
    added = json.loads(ok(run_cli("--repo", repo, "add", sample, "--name", "Secret name", "--json")))
    assert set(added) == {
        "root",
        "name",
        "kind",
        "size",
        "blocks",
        "stored_bytes",
        "added",
        "link",
        "new_blocks",
        "already_added",
    }
    link = parse_link(added["link"])
    assert link.peers == ()
    assert f"added root {added['root']}" in daemon.output()
    listed = json.loads(ok(run_cli("--repo", repo, "ls", "--json")))
    assert [p["root"] for p in listed] == [added["root"]]
    assert added["root"] in ok(run_cli("--repo", repo, "ls"))

    # peer hints: this node's real addresses in the link
    hinted = parse_link(ok(run_cli("--repo", repo, "add", sample, "--peer-hints")).strip())
    assert hinted.root == link.root and hinted.peers == tuple(status["addrs"])

    # the API wants the token
    transport = httpx.HTTPTransport(uds=str(repo / "api.sock"))
    with httpx.Client(transport=transport, base_url="http://sealbox") as client:
        assert client.get("/v1/status").status_code == 401
        assert client.get("/v1/status", headers={"authorization": "Bearer nope"}).status_code == 401
    with pytest.raises(ApiError) as refused:
        ApiClient(repo).call("GET", "/v1/status", token="x" * 43)
    assert refused.value.status == 401

    # one daemon per repo
    second = daemons(repo)
    assert second.proc.wait(timeout=30) == 1
    assert "another daemon" in second.output() and "already runs" in second.output()
    assert "Traceback" not in second.output()
    ApiClient(repo).call("GET", "/v1/status")  # the first one still answers

    assert daemon.stop() == 0, daemon.output()
    assert not (repo / "api.sock").exists() and not (repo / "api.token").exists()
    # no key, link or name reached the log
    log = daemon.output()
    assert added["link"] not in log and "Secret name" not in log and link.root.hex() not in log
    assert added["link"].split("#k=")[1][:43] not in log

    identity = repo / "identity"
    assert stat.S_IMODE(identity.stat().st_mode) == 0o600
    assert peer_id_of(identity.read_bytes()) == peer_id

    # without a daemon the same commands work on the repo directly
    assert "no daemon runs" in one_error(run_cli("--repo", repo, "status"))
    assert [p["root"] for p in json.loads(ok(run_cli("--repo", repo, "ls", "--json")))] == [added["root"]]

    restarted = daemons(repo)
    again = restarted.wait_ready()
    assert again["peer_id"] == peer_id and again["roots"] == 1
    assert [p["root"] for p in json.loads(ok(run_cli("--repo", repo, "ls", "--json")))] == [added["root"]]
    # it announces what it held again and serves it: another repo gets the file with only its address
    # alone (no bootstrap peer), no DHT peer can take the record: the log says so, and when it tries again
    restarted.wait_for(
        r"reprovide: announced 0 of 1 root\(s\); no DHT peer took the other 1; next round in 60 s", timeout=15
    )
    other = tmp_path / "other"
    copy = tmp_path / "from-restarted.bin"
    ok(run_cli("--repo", other, "get", added["link"], "--bootstrap", again["addrs"][0], "-o", copy))
    assert copy.read_bytes() == sample.read_bytes()
    removed = json.loads(ok(run_cli("--repo", repo, "rm", added["link"], "--json")))
    assert removed == {"unpinned": [added["root"]]}
    assert json.loads(ok(run_cli("--repo", repo, "ls", "--json"))) == []
    # SIGUSR1 dumps where every task waits, and the daemon goes on
    restarted.proc.send_signal(signal.SIGUSR1)
    restarted.wait_for(r"task dump \(SIGUSR1\)")
    restarted.wait_for(r"  at .*node/daemon/main\.py:\d+ in main")
    assert json.loads(ok(run_cli("--repo", repo, "status", "--json")))["peer_id"] == peer_id
    assert restarted.stop() == 0


def test_two_daemons_connect_through_bootstrap_and_one_fetches_from_the_other(
    tmp_path: Path, run_cli: RunCli, daemons: Callable[..., Daemon]
) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    sample = tmp_path / "sample.bin"
    sample.write_bytes(os.urandom(600_000))
    a = daemons(first)
    a_status = a.wait_ready()
    b = daemons(second, "--bootstrap", a_status["addrs"][0], "--log-level", "debug")
    b_status = b.wait_ready()

    b.wait_for(r"bootstrap: reached 1 of 1 peer", timeout=15)
    peers = json.loads(ok(run_cli("--repo", second, "peers", "--json")))
    assert [p["peer_id"] for p in peers] == [a_status["peer_id"]]
    assert a_status["addrs"][0] in peers[0]["addrs"]
    a_peers = json.loads(ok(run_cli("--repo", first, "peers", "--json")))
    assert [p["peer_id"] for p in a_peers] == [b_status["peer_id"]]
    assert b_status["peer_id"] in ok(run_cli("--repo", first, "peers"))

    # b's CLI asks b's daemon, which finds a on the DHT and fetches; then b seeds it too
    link = ok(run_cli("--repo", first, "add", sample)).strip()
    a.wait_for(r"announced root .* to the DHT", timeout=10)  # the add's announcement runs in the background
    out = tmp_path / "copy.bin"
    assert ok(run_cli("--repo", second, "get", link, "-o", out)).strip() == str(out)
    assert out.read_bytes() == sample.read_bytes()
    assert json.loads(ok(run_cli("--repo", second, "status", "--json")))["roots"] == 1
    # on a terminal, the fetch through the daemon draws a progress bar (the daemon lists its fetches)
    other = tmp_path / "other.bin"
    other.write_bytes(os.urandom(700_000))
    sized = ok(run_cli("--repo", first, "add", other, "--with-size")).strip()
    a.wait_for(r"announced root .* to the DHT", timeout=10)
    env = {k: v for k, v in os.environ.items() if k != "SEALBOX_REPO"} | {"HOME": str(tmp_path / "home")}
    code, printed, drawn = run_on_pty(
        [SEALBOX, "--repo", str(second), "get", sized, "-o", str(tmp_path / "other.out")], env
    )
    assert code == 0 and printed.strip() == str(tmp_path / "other.out")
    assert re.search(rb"fetching:\s+\d+%", drawn), drawn[-500:]
    assert (tmp_path / "other.out").read_bytes() == other.read_bytes()
    assert ApiClient(second).call("GET", "/v1/fetching") == {"fetches": []}
    served = json.loads(ok(run_cli("--repo", first, "status", "--json")))
    assert served["served_blocks"] >= 3 and served["served_bytes"] >= len(sample.read_bytes())
    assert "served     " in ok(run_cli("--repo", first, "status"))
    assert link not in b.output() and link.split("#")[0] not in b.output()

    # no daemon on c: get asks the peers the link names, with a node of its own for the while
    hinted = ok(run_cli("--repo", first, "add", sample, "--name", "hinted", "--peer-hints")).strip()
    third = tmp_path / "c"
    assert "nowhere to look" in one_error(run_cli("--repo", third, "get", link, "-o", tmp_path / "x"))
    ok(run_cli("--repo", third, "get", hinted, "-o", tmp_path / "c.bin"))
    assert (tmp_path / "c.bin").read_bytes() == sample.read_bytes()
    # no daemon, no hint: a bootstrap address on the command line; --no-seed leaves nothing pinned
    fourth = tmp_path / "d"
    ok(
        run_cli(
            "--repo",
            fourth,
            "get",
            link,
            "--bootstrap",
            a_status["addrs"][0],
            "--no-seed",
            "-o",
            tmp_path / "d.bin",
        )
    )
    assert (tmp_path / "d.bin").read_bytes() == sample.read_bytes()
    assert json.loads(ok(run_cli("--repo", fourth, "ls", "--json"))) == []
    assert a.stop() == 0 and b.stop() == 0


def test_without_a_daemon_status_peers_and_peer_hints_say_so(tmp_path: Path, run_cli: RunCli) -> None:
    repo = tmp_path / "repo"
    sample = tmp_path / "f.txt"
    sample.write_text("hello")
    for command in ("status", "peers"):
        assert "no daemon runs on" in one_error(run_cli("--repo", repo, command))
    assert "needs a running daemon" in one_error(run_cli("--repo", repo, "add", sample, "--peer-hints"))
    # a dead daemon's socket left behind: the CLI works on the repo directly
    ok(run_cli("--repo", repo, "add", sample))
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(repo / "api.sock"))
    dead.close()
    assert len(json.loads(ok(run_cli("--repo", repo, "ls", "--json")))) == 1
    assert "no daemon runs on" in one_error(run_cli("--repo", repo, "status"))


def test_a_get_whose_bootstrap_peers_are_all_down_fails_at_once_with_one_line(
    tmp_path: Path, run_cli: RunCli
) -> None:
    """No daemon, no peer hint, and nothing answers at the bootstrap address: the temporary node says so
    at once (it waited a whole 30 s lookup before), and py-libp2p's own complaints stay off the terminal."""
    sample = tmp_path / "f.bin"
    sample.write_bytes(os.urandom(1000))
    link = ok(run_cli("--repo", tmp_path / "a", "add", sample)).strip()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now: a dial is refused
    dead = f"/ip4/127.0.0.1/tcp/{port}/p2p/{peer_id_of(load_or_create_identity(tmp_path / 'a'))}"
    result = run_cli("--repo", tmp_path / "b", "get", link, "--bootstrap", dead, "-o", tmp_path / "out")
    # said before any lookup starts (a lookup would run out its 30 s deadline and say something else)
    assert "none of the 1 bootstrap peer(s) answered" in one_error(result)
    assert not (tmp_path / "out").exists()


def test_a_bad_config_file_stops_the_daemon_with_one_line(tmp_path: Path, run_cli: RunCli) -> None:
    repo = tmp_path / "repo"
    ok(run_cli("--repo", repo, "ls"))
    (repo / "config.toml").write_text('listen = ["/ip4/127.0.0.1/tcp/0"]\nseed = "yes"\n')
    line = one_error(run_cli("--repo", repo, "daemon"))
    assert "config.toml" in line and "seed must be true or false" in line
    assert not (repo / "api.sock").exists()


# -- the config file ----------------------------------------------------------------------------------


def test_the_config_template_is_written_once_and_gives_the_safe_defaults(tmp_path: Path) -> None:
    assert parse_config(TEMPLATE.encode()) == Config()
    # a fixed port on loopback: the address a peer on this machine bootstraps from survives a restart
    assert Config().listen == ("/ip4/127.0.0.1/tcp/4710",) and Config().bootstrap == ()
    assert load_config(tmp_path) == Config()
    assert (tmp_path / "config.toml").read_text() == TEMPLATE
    assert 'listen = ["/ip4/127.0.0.1/tcp/4710"]' in TEMPLATE
    (tmp_path / "config.toml").write_text("storage_limit = 1000\nseed = false\nreprovide_interval = 3600\n")
    assert load_config(tmp_path) == Config(storage_limit=1000, seed=False, reprovide_interval=3600.0)


PEER = "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWE9jFFFh4K2fmCFpaGhGsqtbfL3BvRq6evgmmhJUbLWz2"


def test_a_bad_listen_flag_is_refused_with_an_example(tmp_path: Path, run_cli: RunCli) -> None:
    error = one_error(run_cli("--repo", tmp_path / "r", "daemon", "--listen", "/ip4/192.168.1.20"))
    assert (
        error.startswith("sealbox: error: --listen: ")
        and "expected a multiaddr like /ip4/0.0.0.0/tcp/4710" in error
    )


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("listen = [", "not valid TOML"),
        ("colour = 1", "unknown setting 'colour'"),
        ("listen = []", "listen needs at least one address"),
        ('listen = "/ip4/127.0.0.1/tcp/0"', "listen must be a list"),
        ('listen = ["ip4/1.2.3.4"]', "not a multiaddr"),
        ('listen = ["ip4/1.2.3.4"]', "(expected one like /ip4/0.0.0.0/tcp/4710)"),
        ('listen = ["/ip4/1.2.3.4/udp/5"]', "(expected a multiaddr like /ip4/0.0.0.0/tcp/4710)"),
        ('bootstrap = ["/ip4/127.0.0.1/tcp/4001"]', "must end with /p2p/"),
        ("storage_limit = -1", "storage_limit must be a positive number"),
        ("storage_limit = true", "storage_limit must be a positive number"),
        ("reprovide_interval = 1", "reprovide_interval must be between"),
        ("reprovide_interval = 1e9", "reprovide_interval must be between"),
        ("seed = 1", "seed must be true or false"),
    ],
)
def test_a_bad_config_is_refused_with_one_line(text: str, error: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config(text.encode(), "R/config.toml")
    assert error in str(refused.value) and str(refused.value).startswith("R/config.toml")
    assert "\n" not in str(refused.value)


def test_flags_override_the_config() -> None:
    config = parse_config(f'bootstrap = ["{PEER}"]'.encode())
    assert config.override() == config
    changed = config.override(listen=["/ip4/127.0.0.1/tcp/4002"], bootstrap=[PEER, PEER])
    assert changed.listen == ("/ip4/127.0.0.1/tcp/4002",) and changed.bootstrap == (PEER, PEER)
    with pytest.raises(ConfigError, match="--bootstrap"):
        config.override(bootstrap=["/ip4/127.0.0.1/tcp/1"])


# -- the identity file --------------------------------------------------------------------------------


def test_the_identity_is_made_once_0600_and_reused(tmp_path: Path) -> None:
    secret = load_or_create_identity(tmp_path)
    path = tmp_path / "identity"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_bytes() == secret
    assert load_or_create_identity(tmp_path) == secret
    path.chmod(0o644)
    with pytest.raises(RepoError, match="readable by others"):
        load_or_create_identity(tmp_path)
    path.chmod(0o600)
    path.write_bytes(secret[:31])
    with pytest.raises(RepoError, match="damaged"):
        load_or_create_identity(tmp_path)


# -- the API server, in process, against raw HTTP -----------------------------------------------------

TOKEN = "test-token"


async def _echo(args: dict[str, Any]) -> Any:
    return {"got": args}


async def _bad(_args: dict[str, Any]) -> Any:
    raise ApiError("no such thing here", 404)


async def _exchange(path: Path, request: bytes, *, close_after: bool = True) -> bytes:
    """Send raw bytes on the socket and read the answer until the server closes."""
    with trio.fail_after(10):
        stream = await trio.open_unix_socket(str(path))
        async with stream:
            await stream.send_all(request)
            if close_after:
                await stream.send_eof()
            answer = b""
            while chunk := await stream.receive_some(65536):
                answer += chunk
            return answer


def _request(method: str, target: str, body: bytes = b"", token: str | None = TOKEN) -> bytes:
    head = f"{method} {target} HTTP/1.1\r\nHost: sealbox\r\nContent-Length: {len(body)}\r\n"
    if token is not None:
        head += f"Authorization: Bearer {token}\r\n"
    return head.encode() + b"\r\n" + body


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


async def _with_server(
    tmp_path: Path,
    body: Callable[[Path], Awaitable[None]],
    *,
    read_timeout: float = 5.0,
    **options: Any,
) -> None:
    """Serve test routes on ``tmp_path/api.sock`` while ``body`` runs; ``read_timeout`` is the deadline
    for the head and for the body; ``options`` go to :func:`node.daemon.api.serve`."""
    path = tmp_path / "api.sock"
    routes: api.Routes = {("POST", "/v1/echo"): _echo, ("GET", "/v1/bad"): _bad}
    async with trio.open_nursery() as nursery:
        await nursery.start(
            partial(
                api.serve,
                path,
                TOKEN,
                routes,
                head_timeout=read_timeout,
                read_timeout=read_timeout,
                max_body=1024,
                **options,
            )
        )
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        await body(path)
        nursery.cancel_scope.cancel()
    assert not path.exists()


async def test_the_api_answers_json_and_refuses_what_it_must(tmp_path: Path) -> None:
    async def check(path: Path) -> None:
        answer = await _exchange(path, _request("POST", "/v1/echo", b'{"a": [1]}'))
        assert _status(answer) == 200 and answer.endswith(b'{"got": {"a": [1]}}')
        assert b"connection: close" in answer.lower()
        assert _status(await _exchange(path, _request("POST", "/v1/echo", b"{}", token=None))) == 401
        assert _status(await _exchange(path, _request("POST", "/v1/echo", b"{}", token="wrong"))) == 401
        assert _status(await _exchange(path, _request("POST", "/v1/nothing"))) == 404
        assert _status(await _exchange(path, _request("GET", "/v1/echo"))) == 405
        assert _status(await _exchange(path, _request("POST", "/v1/echo", b"[1]"))) == 400
        assert _status(await _exchange(path, _request("POST", "/v1/echo", b"not json"))) == 400
        refused = await _exchange(path, _request("GET", "/v1/bad"))
        assert _status(refused) == 404 and refused.endswith(b'{"error": "no such thing here"}')
        assert _status(await _exchange(path, b"NONSENSE\r\n\r\n")) == 400
        # too big: refused from the Content-Length, before the body is read
        big = _request("POST", "/v1/echo", b"x" * 2000)
        assert _status(await _exchange(path, big[: big.index(b"\r\n\r\n") + 4], close_after=False)) == 413
        chunked = (
            (
                f"POST /v1/echo HTTP/1.1\r\nHost: s\r\nAuthorization: Bearer {TOKEN}\r\n"
                "Transfer-Encoding: chunked\r\n\r\n"
            ).encode()
            + b"".join(b"100\r\n" + b"x" * 256 + b"\r\n" for _ in range(5))
            + b"0\r\n\r\n"
        )
        assert _status(await _exchange(path, chunked)) == 413
        headers = b"GET /v1/echo HTTP/1.1\r\nX: " + b"y" * 20_000 + b"\r\n\r\n"
        assert _status(await _exchange(path, headers)) in (400, 431)

    await _with_server(tmp_path, check)


async def test_the_api_drops_a_client_that_is_too_slow(tmp_path: Path) -> None:
    async def check(path: Path) -> None:
        # the client never finishes its head: only the server's read timeout can answer it
        with trio.fail_after(60):
            answer = await _exchange(path, b"POST /v1/echo HTTP/1.1\r\nHost: s\r\n", close_after=False)
        assert _status(answer) == 408

    await _with_server(tmp_path, check, read_timeout=0.3)
