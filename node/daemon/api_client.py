"""A small synchronous client of the control API (``node/daemon/api.py``), for the CLI.

``ApiClient.call`` raises :class:`NoDaemon` when nothing answers on the repo's socket (no daemon runs,
or a crashed one left its socket behind), and :class:`node.daemon.errors.ApiError` when the daemon refuses.

A connection the daemon closes without any answer was evicted before its request head was read (a flood
of idle connections, see ``node/daemon/api.py``): the request is sent again, ``ATTEMPTS`` times in all. The
daemon answers every request it has read, so nothing runs twice (the socket of a daemon that died
mid-request refuses the next attempt: no daemon).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from node.daemon.api_files import socket_path, token_path
from node.daemon.errors import ApiError, DaemonError

CONNECT_TIMEOUT = 5.0
DEFAULT_TIMEOUT = 60.0
ATTEMPTS = 3  # sends of a request the daemon closed without answering


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
        if self.socket is None or not os.path.exists(self.socket):
            raise NoDaemon(f"no daemon runs on {self.repo_path} (start one with 'sealbox daemon')")
        import httpx  # here, not at the top: commands that find no daemon never pay for it

        try:  # encoded here, once: httpx's own encoding would raise this untrapped
            content = None if body is None else json.dumps(body, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ApiError(
                "a path or name given is not valid UTF-8 (a file name in another encoding?): rename it"
            ) from None
        headers = {"authorization": f"Bearer {self._token() if token is None else token}"}
        if content is not None:
            headers["content-type"] = "application/json"
        transport = httpx.HTTPTransport(uds=os.fspath(self.socket))
        limits = httpx.Timeout(timeout, connect=CONNECT_TIMEOUT)
        for attempt in range(1, ATTEMPTS + 1):
            try:
                with httpx.Client(transport=transport, base_url="http://sealbox", timeout=limits) as client:
                    response = client.request(method, path, content=content, headers=headers)
                break
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
        else:
            raise AssertionError("unreachable")
        try:
            data = response.json()
        except ValueError:
            raise ApiError(
                f"the daemon sent an answer that is not JSON ({response.status_code})", 502
            ) from None
        if response.status_code != 200:
            message = data.get("error") if isinstance(data, dict) else None
            raise ApiError(
                str(message or f"the daemon refused ({response.status_code})"), response.status_code
            )
        return data
