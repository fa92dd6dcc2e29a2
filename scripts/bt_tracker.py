#!/usr/bin/env python3
"""A tiny BitTorrent HTTP tracker on 127.0.0.1, for benchmarks that must stay on loopback.

It answers ``GET /announce`` (BEP 3, with the compact peer list of BEP 23) with the peers that announced
the same info-hash: each peer is 127.0.0.1 and the port it announced (the tracker listens on 127.0.0.1
only, so every peer it hears from is local; an ``ip`` parameter is ignored). Nothing else is served, no
state is kept on disk. ``scripts/bench_compare.py`` runs it in a thread (:class:`Tracker`); on its own:

    scripts/bt_tracker.py [--port 0]      # prints the announce URL, serves until Ctrl-C

Standard library only.
"""

from __future__ import annotations

import argparse
import contextlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

HOST = "127.0.0.1"
INTERVAL = 5  # seconds between a client's announces (the peers that join later are learned sooner)

Bencodable = int | bytes | str | Sequence["Bencodable"] | Mapping[str, "Bencodable"]


def bencode(value: Bencodable) -> bytes:
    """Bencode ``value`` (BEP 3): integers, byte strings, str (as UTF-8), lists, dicts (keys sorted)."""
    if isinstance(value, bool):
        raise TypeError("bencode has no booleans")
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, Mapping):
        items = sorted((k.encode(), v) for k, v in value.items())
        return b"d" + b"".join(bencode(k) + bencode(v) for k, v in items) + b"e"
    return b"l" + b"".join(bencode(v) for v in value) + b"e"


@dataclass
class Peer:
    peer_id: bytes
    port: int
    left: int
    seen: float


class Swarms:
    """Who announced which info-hash; thread-safe, with a condition to wait on announces."""

    def __init__(self) -> None:
        self._swarms: dict[bytes, dict[bytes, Peer]] = {}
        self._cond = threading.Condition()
        self.announces = 0

    def announce(self, info_hash: bytes, peer: Peer, event: str) -> list[Peer]:
        """Record ``peer`` (or forget it on ``event=stopped``); returns the other peers of the swarm."""
        with self._cond:
            swarm = self._swarms.setdefault(info_hash, {})
            if event == "stopped":
                swarm.pop(peer.peer_id, None)
            else:
                swarm[peer.peer_id] = peer
            self.announces += 1
            self._cond.notify_all()
            return [p for p in swarm.values() if p.peer_id != peer.peer_id]

    def peers(self, info_hash: bytes) -> list[Peer]:
        with self._cond:
            return list(self._swarms.get(info_hash, {}).values())

    def wait_for_seeder(
        self, info_hash: bytes, port: int, timeout: float, give_up: Callable[[], bool] = lambda: False
    ) -> bool:
        """Wait until the peer listening on ``port`` announced ``info_hash`` as complete (left=0); False
        after ``timeout`` seconds, or as soon as ``give_up()`` is true (checked at each :meth:`wake`)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not any(p.port == port and p.left == 0 for p in self._swarms.get(info_hash, {}).values()):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or give_up():
                    return False
                self._cond.wait(remaining)
            return True

    def wake(self) -> None:
        """Wake the waiters, so that they check their ``give_up`` again."""
        with self._cond:
            self._cond.notify_all()

    def reset(self) -> None:
        with self._cond:
            self._swarms.clear()


def _failure(reason: str) -> bytes:
    return bencode({"failure reason": reason})


def announce_reply(query: str, client_ip: str, swarms: Swarms) -> bytes:
    """The bencoded reply to an announce whose raw query string is ``query``."""
    # info_hash and peer_id are raw bytes, percent-encoded: latin-1 maps each byte to one character
    params = parse_qs(query, encoding="latin-1", keep_blank_values=True)

    def one(name: str) -> str | None:
        values = params.get(name)
        return values[0] if values else None

    info_hash, peer_id, port_text = one("info_hash"), one("peer_id"), one("port")
    if info_hash is None or peer_id is None or port_text is None:
        return _failure("info_hash, peer_id and port are required")
    try:
        port = int(port_text)
        left = int(one("left") or "0")
    except ValueError:
        return _failure("port and left must be integers")
    if not 0 < port < 65536 or len(info_hash) != 20:
        return _failure("bad port or info_hash")
    if not client_ip.startswith("127."):
        return _failure("loopback only")
    others = swarms.announce(
        info_hash.encode("latin-1"),
        Peer(peer_id.encode("latin-1"), port, left, time.monotonic()),
        one("event") or "",
    )
    complete = sum(1 for p in others if p.left == 0)
    reply: dict[str, Bencodable] = {
        "interval": INTERVAL,
        "min interval": 1,
        "complete": complete,
        "incomplete": len(others) - complete,
    }
    if one("compact") == "0":
        reply["peers"] = [{"ip": HOST, "port": p.port, "peer id": p.peer_id} for p in others]
    else:  # BEP 23: 4 bytes of IPv4 address, 2 of port, per peer
        reply["peers"] = b"".join(bytes([127, 0, 0, 1]) + p.port.to_bytes(2, "big") for p in others)
    return bencode(reply)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path != "/announce":
            self.send_error(404)
            return
        body = announce_reply(url.query, self.client_address[0], self.server.swarms)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, swarms: Swarms) -> None:
        super().__init__((HOST, port), _Handler)
        self.swarms = swarms


class Tracker:
    """The tracker, serving from a thread of this process: ``with Tracker() as t: t.url ...``."""

    def __init__(self, port: int = 0) -> None:
        self.swarms = Swarms()
        self._server = _Server(port, self.swarms)
        self._thread = threading.Thread(target=self._server.serve_forever, name="bt-tracker", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/announce"

    def start(self) -> Tracker:
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def __enter__(self) -> Tracker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free one)")
    args = parser.parse_args()
    with Tracker(args.port) as tracker:
        print(tracker.url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
