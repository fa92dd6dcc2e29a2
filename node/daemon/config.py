"""The node's settings: ``REPO/config.toml``, written from a commented template on first start.

Command-line flags override the file (``Config.override``). Every problem with the file is one line that
names the file and the setting. Defaults never reach beyond this machine: the node listens on
127.0.0.1 only and knows no bootstrap peer. The default port is fixed (``DEFAULT_PORT``, 4710), so the
address a peer bootstraps from survives a restart; when it is taken the daemon listens on a random
port instead and says so (node/daemon/main.py).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.daemon.config_file import CONFIG_NAME, config_path, parse_limit, parse_table, read_config_bytes
from node.daemon.errors import ConfigError
from node.net.dht import RECORD_LIFETIME, REPROVIDE_INTERVAL
from node.net.errors import NetworkError
from node.net.host import DEFAULT_PORT, listen_multiaddr, parse_peer_addr
from node.store.fsutil import write_atomic

MAX_ADDRS = 64
DAEMON_LISTEN = (f"/ip4/127.0.0.1/tcp/{DEFAULT_PORT}",)
LISTEN_EXAMPLE = f"/ip4/0.0.0.0/tcp/{DEFAULT_PORT}"
MIN_REPROVIDE_INTERVAL = 60.0

TEMPLATE = f"""\
# Sealbox node settings (read by 'sealbox daemon'; flags given on the command line win).

# Where the node listens: multiaddrs /ip4|ip6/<address>/tcp/<port>. Port 0 picks a free port at each
# start. Port {DEFAULT_PORT} stays the same across restarts, so a peer's --bootstrap address keeps working
# (if another program holds it, the daemon takes a random port and logs a warning).
# The default accepts connections from this machine only. For a peer on another machine, listen on
# this machine's LAN address, e.g. "/ip4/192.168.1.20/tcp/{DEFAULT_PORT}" ('sealbox address' prints what
# to give the other side).
listen = ["/ip4/127.0.0.1/tcp/{DEFAULT_PORT}"]

# Peers to join the DHT through: full multiaddrs ending in /p2p/<peer id>. None by default: the node
# never dials anything it was not told to. Public IPFS bootstrap peers work too (the DHT only ever sees
# hashes of ciphertext), e.g. the long-standing IPFS bootstrap node
#   "/ip4/104.131.131.82/tcp/4001/p2p/QmaCpDMGvV2BGHeYERUEnRQAwe3N8SzbUtfsmvsqQLuvuJ"
bootstrap = []

# The most bytes of blocks the repo may hold; adding or fetching more is refused. Unset: no limit.
# storage_limit = 10_000_000_000

# Seconds between two announcements of every pinned root on the DHT ({MIN_REPROVIDE_INTERVAL:.0f} to \
{RECORD_LIFETIME / 3:.0f}).
reprovide_interval = {REPROVIDE_INTERVAL:.0f}

# Serve the blocks of pinned roots to other peers and announce those roots on the DHT.
seed = true
"""


@dataclass(frozen=True)
class Config:
    listen: tuple[str, ...] = DAEMON_LISTEN
    bootstrap: tuple[str, ...] = ()
    storage_limit: int | None = None
    reprovide_interval: float = REPROVIDE_INTERVAL
    seed: bool = True

    def override(self, *, listen: Sequence[str] = (), bootstrap: Sequence[str] = ()) -> Config:
        """This config with the addresses given on the command line (when any) in place of the file's."""
        changes: dict[str, Any] = {}
        if listen:
            changes["listen"] = _addrs("--listen", listen, peer=False)
        if bootstrap:
            changes["bootstrap"] = _addrs("--bootstrap", bootstrap, peer=True)
        return dataclasses.replace(self, **changes)


def load_config(repo_path: Path, *, create: bool = True) -> Config:
    """Read ``REPO/config.toml`` (writing the template first if it is missing and ``create``)."""
    path = config_path(repo_path)
    raw = read_config_bytes(path)
    if raw is None:
        if not create:
            return Config()
        write_atomic(path, TEMPLATE.encode(), mode=0o644)
        raw = TEMPLATE.encode()
    return parse_config(raw, str(path))


def parse_config(raw: bytes, where: str = CONFIG_NAME) -> Config:
    """A :class:`Config` from the bytes of a config file; anything unusable raises :class:`ConfigError`."""
    data = parse_table(raw, where)
    known = {f.name for f in dataclasses.fields(Config)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown setting {unknown[0]!r} (known: {', '.join(sorted(known))})")
    try:
        return Config(
            listen=_addrs("listen", data.get("listen", list(DAEMON_LISTEN)), peer=False),
            bootstrap=_addrs("bootstrap", data.get("bootstrap", []), peer=True),
            storage_limit=parse_limit(data.get("storage_limit")),
            reprovide_interval=_interval(data.get("reprovide_interval", REPROVIDE_INTERVAL)),
            seed=_bool("seed", data.get("seed", True)),
        )
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _addrs(name: str, value: Any, *, peer: bool) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(a, str) for a in value):
        raise ConfigError(f"{name} must be a list of multiaddr strings")
    if len(value) > MAX_ADDRS:
        raise ConfigError(f"{name} holds more than {MAX_ADDRS} addresses")
    if not peer and not value:
        raise ConfigError(f"{name} needs at least one address")
    for addr in value:
        if not addr.startswith("/"):
            example = "/ip4/192.0.2.10/tcp/4710/p2p/12D3KooW..." if peer else LISTEN_EXAMPLE
            raise ConfigError(f"{name}: not a multiaddr: {addr[:100]!r} (expected one like {example})")
        if not peer:
            try:
                listen_multiaddr(addr)
            except NetworkError as exc:
                raise ConfigError(f"{name}: {exc} (expected a multiaddr like {LISTEN_EXAMPLE})") from None
        if peer:
            try:
                parse_peer_addr(addr)
            except NetworkError as exc:
                raise ConfigError(f"{name}: {exc}") from None
    return tuple(value)


def _interval(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError("reprovide_interval must be a number of seconds")
    if not MIN_REPROVIDE_INTERVAL <= value <= RECORD_LIFETIME / 3:
        raise ConfigError(
            f"reprovide_interval must be between {MIN_REPROVIDE_INTERVAL:.0f} and {RECORD_LIFETIME / 3:.0f}"
            " seconds (a record lives 48 h)"
        )
    return float(value)


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false")
    return value
