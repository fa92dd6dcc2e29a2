"""A small synchronous client of the control API (``node/daemon/api.py``), for the CLI.

``ApiClient.call`` raises :class:`NoDaemon` when nothing answers on the repo's socket (no daemon runs,
or a crashed one left its socket behind), and :class:`node.daemon.errors.ApiError` when the daemon refuses.

A connection the daemon closes without any answer was evicted before its request head was read (a flood
of idle connections, see ``node/daemon/api.py``): the request is sent again, ``ATTEMPTS`` times in all. The
daemon answers every request it has read, so nothing runs twice (the socket of a daemon that died
mid-request refuses the next attempt: no daemon).

``ApiClient.stream`` sends a long request (an add, a fetch) asking for its answer as events (NDJSON,
``node/daemon/transfers.py``) and yields them as they come; leaving its ``with`` block (the last event,
an error, Ctrl-C) closes the connection at once, which tells the daemon to stop that transfer.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node.daemon.api_files import socket_path, token_path
from node.daemon.errors import ApiError, DaemonError

if TYPE_CHECKING:
    import httpx

CONNECT_TIMEOUT = 5.0
DEFAULT_TIMEOUT = 60.0
ATTEMPTS = 3  # sends of a request the daemon closed without answering
NDJSON = "application/x-ndjson"  # the events of a long request (one JSON object a line)


class NoDaemon(DaemonError):
    """No daemon answers on this repo."""


class ApiClient:
    def __init__(self, repo_path: Path) -> None:
        self.repo_path = repo_path
        try:
            self.socket: Path | None = socket_path(repo_path)
        except DaemonError:
            self.socket = None  # too long for a Unix socket: no daemon can run on this repo

    def _token(self) -> str:
        try:
            return token_path(self.repo_path).read_text("ascii").strip()
        except (OSError, UnicodeDecodeError):
            raise NoDaemon(f"no daemon runs on {self.repo_path} (start one with 'sealbox daemon')") from None

    def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        token: str | None = None,
    ) -> Any:
        """Send one request; return the decoded JSON answer. ``timeout=None`` waits as long as it takes."""
        self._check_socket()
        import httpx  # here, not at the top: commands that find no daemon never pay for it

        content, headers = self._parts(body, token)
        limits = httpx.Timeout(timeout, connect=CONNECT_TIMEOUT)
        with self._client(limits) as client:
            response = self._send(
                client, client.build_request(method, path, content=content, headers=headers)
            )
        return _decoded(response)

    @contextmanager
    def stream(self, method: str, path: str, body: dict[str, Any]) -> Iterator[Iterator[dict[str, Any]]]:
        """Send a long request; yield an iterator of its events (dicts with an ``event`` key), the last
        ``done`` or ``error``. An answer that is not a stream (a refusal) comes as one such event."""
        self._check_socket()
        import httpx

        content, headers = self._parts(body, None)
        headers["accept"] = NDJSON
        with self._client(httpx.Timeout(None, connect=CONNECT_TIMEOUT)) as client:
            request = client.build_request(method, path, content=content, headers=headers)
            response = self._send(client, request, stream=True)
            try:
                yield _events(response)
            except (httpx.TransportError, httpx.StreamError) as exc:
                raise ApiError(f"lost the connection to the daemon: {exc}", 502) from None
            finally:
                response.close()

    def _parts(self, body: dict[str, Any] | None, token: str | None) -> tuple[bytes | None, dict[str, str]]:
        """A request's encoded body and headers."""
        try:  # encoded here, once: httpx's own encoding would raise this untrapped
            content = None if body is None else json.dumps(body, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ApiError(
                "a path or name given is not valid UTF-8 (a file name in another encoding?): rename it"
            ) from None
        headers = {"authorization": f"Bearer {self._token() if token is None else token}"}
        if content is not None:
            headers["content-type"] = "application/json"
        return content, headers

    def _check_socket(self) -> Path:
        """The socket, or NoDaemon unless it is there: before httpx is imported (a tenth of a second)."""
        if self.socket is None or not os.path.exists(self.socket):
            raise NoDaemon(f"no daemon runs on {self.repo_path} (start one with 'sealbox daemon')")
        return self.socket

    def _client(self, timeout: httpx.Timeout) -> httpx.Client:
        sock = self._check_socket()
        import httpx

        transport = httpx.HTTPTransport(uds=os.fspath(sock))
        return httpx.Client(transport=transport, base_url="http://sealbox", timeout=timeout)

    def _send(self, client: httpx.Client, request: httpx.Request, *, stream: bool = False) -> httpx.Response:
        """Send ``request`` (again, up to ``ATTEMPTS`` times, when closed unanswered); the response."""
        import httpx

        for attempt in range(1, ATTEMPTS + 1):
            try:
                return client.send(request, stream=stream)
            except httpx.ConnectError:
                raise NoDaemon(
                    f"no daemon runs on {self.repo_path} (start one with 'sealbox daemon')"
                ) from None
            except httpx.TimeoutException:
                raise ApiError("the daemon did not answer in time", 504) from None
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
                # closed with no answer: the daemon evicted the connection before reading its head
                # (node/daemon/api.py), so nothing was done and sending it again is safe
                if attempt == ATTEMPTS:
                    raise ApiError(f"lost the connection to the daemon: {exc}", 502) from None
            except httpx.TransportError as exc:
                raise ApiError(f"lost the connection to the daemon: {exc}", 502) from None
        raise AssertionError("unreachable")


def _events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """The events of a long request's answer; a plain JSON answer becomes one ``done`` or ``error``."""
    if not response.headers.get("content-type", "").startswith(NDJSON):
        response.read()
        try:
            yield {"event": "done"} | _decoded(response)
        except ApiError as exc:
            yield {"event": "error", "error": str(exc), "status": exc.status}
        return
    for line in response.iter_lines():
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:
            raise ApiError("the daemon sent an event that is not JSON", 502) from None
        if not isinstance(event, dict):
            raise ApiError("the daemon sent an event that is not a JSON object", 502)
        yield event


def _decoded(response: httpx.Response) -> Any:
    """A plain answer's JSON, or the ApiError it is."""
    try:
        data = response.json()
    except ValueError:
        raise ApiError(f"the daemon sent an answer that is not JSON ({response.status_code})", 502) from None
    if response.status_code != 200:
        message = data.get("error") if isinstance(data, dict) else None
        raise ApiError(str(message or f"the daemon refused ({response.status_code})"), response.status_code)
    return data
