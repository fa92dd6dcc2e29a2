"""The control API under hostile local clients: bodies built to crash the decoder, requests h11 refuses
to answer naively, and floods of idle connections. Against the real daemon and the real CLI where a user
would meet them; the server's phases (waiting for a head, serving a request) in process.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from node.daemon import api
from node.daemon.api_client import ApiClient
from node.daemon.api_json import MAX_DEPTH, nesting_depth, parse_object
from node.daemon.errors import ApiError
from tests.daemon.test_daemon import TOKEN, Daemon, _exchange, _request, _status, _with_server, daemons
from tests.helpers import RunCli, ok, one_error

__all__ = ["daemons"]  # the fixture, shared with test_daemon.py

DEEP = 60_000

# Each of these once stopped the daemon (the first three) or could make two decoders disagree; all fit
# in the API's 64 KiB body cap.
MALICIOUS_BODIES: list[tuple[str, bytes]] = [
    ("60,000 [", b"[" * DEEP),
    ("12,000 nested objects", b'{"a":' * 12_000),
    ("a link nested 30,000 deep", b'{"link": ' + b"[" * 30_000 + b'"x"' + b"]" * 30_000 + b"}"),
    ("a repeated key", b'{"link": "sealbox:?xt=urn:sealbox:u=", "link": "x"}'),
    ("NaN", b'{"seed": NaN}'),
    ("an integer of 5,000 digits", b'{"seed": ' + b"9" * 5000 + b"}"),
    ("not UTF-8", b'{"link": "\xff\xfe"}'),
    ("an array", b"[1, 2]"),
    ("33 levels", b'{"a":' * 33 + b"1" + b"}" * 33),
]


def _malicious_requests(token: str) -> list[tuple[str, str, str, bytes]]:
    """(what, method, path, body) of every hostile request the daemon must answer and survive."""
    out = [(what, "POST", "/v1/fetch", body) for what, body in MALICIOUS_BODIES]
    out += [(what, "POST", "/v1/rm", body) for what, body in MALICIOUS_BODIES[:3]]
    # the error message quotes the path, which holds a lone surrogate: not encodable as UTF-8
    out.append(("a path that is not UTF-8", "POST", "/v1/add", b'{"path": "/nonexistent/bad\\udcffname"}'))
    out.append(("HEAD on an endpoint", "HEAD", "/v1/status", b""))
    out.append(("HEAD on no endpoint", "HEAD", "/v1/nothing", b""))
    return out


def test_malicious_bodies_are_refused_and_the_daemon_keeps_answering(
    tmp_path: Path, run_cli: RunCli, daemons: Callable[..., Daemon]
) -> None:
    repo = tmp_path / "repo"
    daemon = daemons(repo)
    daemon.wait_ready()
    token = (repo / "api.token").read_text().strip()
    auth = {"authorization": f"Bearer {token}"}
    transport = httpx.HTTPTransport(uds=str(repo / "api.sock"))
    requests = _malicious_requests(token)
    with httpx.Client(transport=transport, base_url="http://sealbox", timeout=30) as client:
        for what, method, path, body in requests:
            answer = client.request(method, path, content=body, headers=auth)
            assert answer.status_code in (400, 404, 405), (what, answer.status_code, answer.text)
            if method != "HEAD":
                assert "error" in answer.json(), what
            # the daemon is still up after each one
            assert ApiClient(repo).call("GET", "/v1/status", timeout=30)["seed"] is True, what
    # the CLI cannot send a file name that is not UTF-8 to the daemon: one line, not a traceback
    odd = tmp_path / os.fsdecode(b"odd\xffname.txt")
    odd.write_bytes(b"x")
    assert "not valid UTF-8" in one_error(run_cli("--repo", repo, "add", odd))
    assert daemon.proc.poll() is None
    assert "Traceback" not in daemon.output()
    assert daemon.stop() == 0


async def _idle_flood(sock: Path, connections: int, opened: trio.Event) -> None:
    """Keep ``connections`` connections open that never send a byte: each one the server closes is opened
    again at once. ``opened`` is set once all of them have been connected at least once."""
    count = 0

    async def one() -> None:
        nonlocal count
        first = True
        while True:
            try:
                stream = await trio.open_unix_socket(str(sock))
            except OSError:
                await trio.lowlevel.checkpoint()
                continue
            if first:
                first = False
                count += 1
                if count == connections:
                    opened.set()
            async with stream:
                try:
                    while await stream.receive_some(4096):
                        pass
                except trio.BrokenResourceError:
                    pass

    async with trio.open_nursery() as nursery:
        for _ in range(connections):
            nursery.start_soon(one)


@pytest.mark.parametrize("connections", [40, api.MAX_WAITING + 16])
async def test_idle_connections_flooding_the_socket_do_not_starve_the_owners_cli(
    tmp_path: Path, run_cli: RunCli, daemons: Callable[..., Daemon], connections: int
) -> None:
    """40 idle connections (the issue's attack: more than the old 32 slots), then more than the
    connections that may wait for a head at once (eviction); ``sealbox status`` works throughout."""
    repo = tmp_path / "repo"
    daemon = daemons(repo)
    peer_id = daemon.wait_ready()["peer_id"]
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            opened = trio.Event()
            nursery.start_soon(_idle_flood, repo / "api.sock", connections, opened)
            await opened.wait()
            # one request behind the flood in the accept queue: once it is answered, the server has
            # taken every connection of the flood
            await trio.to_thread.run_sync(lambda: ApiClient(repo).call("GET", "/v1/peers", timeout=30))
            for _ in range(5):
                result = await trio.to_thread.run_sync(lambda: run_cli("--repo", repo, "status", "--json"))
                assert json.loads(ok(result))["peer_id"] == peer_id
            nursery.cancel_scope.cancel()
    assert daemon.proc.poll() is None
    assert daemon.stop() == 0


def test_the_daemon_log_holds_no_path_of_the_repo(
    tmp_path: Path, run_cli: RunCli, daemons: Callable[..., Daemon]
) -> None:
    marker = "Marker-Path-7f3a"
    repo = tmp_path / marker / "repo"
    sample = tmp_path / f"{marker}-file.bin"
    sample.write_bytes(b"x" * 1000)
    daemon = daemons(repo)
    daemon.wait_ready()
    link = ok(run_cli("--repo", repo, "add", sample)).strip()
    # through the daemon, with the link on stdin and in a file (tests/cli/test_cli_secrets.py has the rest)
    ok(run_cli("--repo", repo, "get", "-", "-o", tmp_path / f"{marker}-copy.bin", input=link))
    assert (tmp_path / f"{marker}-copy.bin").read_bytes() == sample.read_bytes()
    link_file = tmp_path / f"{marker}-link.txt"
    link_file.write_text(link)
    ok(run_cli("--repo", repo, "rm", "--link-file", link_file))
    ok(run_cli("--repo", repo, "status"))
    assert daemon.stop() == 0
    log = daemon.output()
    assert "ready: peer " in log and "stopped" in log
    assert marker not in log and str(tmp_path) not in log


# -- in process -------------------------------------------------------------------------------------


async def test_a_new_connection_evicts_the_oldest_idle_one_and_is_answered(tmp_path: Path) -> None:
    async def check(path: Path) -> None:
        idle = [await trio.open_unix_socket(str(path)) for _ in range(4)]
        # four wait (the cap): a request on a fifth connection evicts the oldest, long before its deadline
        answer = await _exchange(path, _request("POST", "/v1/echo", b'{"a": 1}'))
        assert _status(answer) == 200
        with trio.fail_after(30):
            assert await idle[0].receive_some(100) == b""  # closed without an answer
        for stream in idle:
            await stream.aclose()

    await _with_server(tmp_path, check, read_timeout=60, max_waiting=4)


async def test_head_is_answered_with_headers_only(tmp_path: Path) -> None:
    async def check(path: Path) -> None:
        answer = await _exchange(path, _request("HEAD", "/v1/echo"))
        assert _status(answer) == 405 and answer.endswith(b"\r\n\r\n")
        assert _status(await _exchange(path, _request("POST", "/v1/echo", b"{}"))) == 200

    await _with_server(tmp_path, check)


async def test_an_unauthorised_head_holds_no_request_slot(tmp_path: Path) -> None:
    async def check(path: Path) -> None:
        for _ in range(api.MAX_REQUESTS + 8):
            answer = await _exchange(path, _request("POST", "/v1/echo", b"{}", token="wrong"))
            assert _status(answer) == 401
        assert _status(await _exchange(path, _request("POST", "/v1/echo", b"{}", token=TOKEN))) == 200

    await _with_server(tmp_path, check)


@pytest.mark.parametrize(("what", "body"), MALICIOUS_BODIES)
def test_parse_object_refuses_each_malicious_body_with_an_api_error(what: str, body: bytes) -> None:
    with pytest.raises(ApiError) as refused:
        parse_object(body)
    assert refused.value.status == 400, what
    assert len(str(refused.value)) < 100 and "\n" not in str(refused.value)


def test_parse_object_reads_what_the_api_sends() -> None:
    assert parse_object(b"") == {} and parse_object(b"  \n") == {}
    assert parse_object(b'{"roots": ["a", "b"], "seed": false}') == {"roots": ["a", "b"], "seed": False}
    nested = b'{"a":' * MAX_DEPTH + b"1" + b"}" * MAX_DEPTH
    assert nesting_depth(nested.decode()) == MAX_DEPTH
    parse_object(nested)
    assert parse_object(b'{"s": "[[[[{{{{\\"]]"}') == {"s": '[[[[{{{{"]]'}  # brackets in strings


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=40,
)


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_nesting_depth_is_the_depth_of_the_value(value: Any) -> None:
    text = json.dumps(value)
    assert nesting_depth(text, limit=10_000) == _depth(value)


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=200) | st.text(alphabet='[]{}",:\\ 0aeNtrufl', max_size=300).map(str.encode))
def test_parse_object_raises_only_api_errors(body: bytes) -> None:
    try:
        value = parse_object(body)
    except ApiError:
        return
    assert isinstance(value, dict)
    assert _depth(value) <= MAX_DEPTH


def test_parse_object_survives_bodies_of_every_depth_up_to_the_cap() -> None:
    for depth in (MAX_DEPTH + 1, 1000, DEEP, api.MAX_BODY):
        with pytest.raises(ApiError):
            parse_object(b"[" * depth + b"]" * depth)
