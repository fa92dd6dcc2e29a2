"""``REPO/config.toml`` read as a TOML table, and the one setting a command without a daemon needs.

``node/daemon/config.py`` validates the whole file, and imports the network stack to check its addresses
(~1.9 s of start-up). An ``add`` or ``get`` run without a daemon still has to keep ``storage_limit``, so
that setting is read here, with nothing heavier than ``tomllib``. The daemon validates the rest of the
file when it starts.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from node.daemon.errors import ConfigError

CONFIG_NAME = "config.toml"
MAX_CONFIG_BYTES = 64 * 1024


def config_path(repo_path: Path) -> Path:
    return repo_path / CONFIG_NAME


def read_config_bytes(path: Path) -> bytes | None:
    """The file's bytes (capped), or None if it does not exist."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path} is larger than {MAX_CONFIG_BYTES} bytes")
    return raw


def parse_table(raw: bytes, where: str) -> dict[str, Any]:
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{where} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where} is not valid TOML: {exc}") from None


def parse_limit(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError("storage_limit must be a positive number of bytes (or left unset)")
    return value


def storage_limit(repo_path: Path) -> int | None:
    """``storage_limit`` from the repo's config file (None when unset or when there is no file)."""
    path = config_path(repo_path)
    raw = read_config_bytes(path)
    if raw is None:
        return None
    try:
        return parse_limit(parse_table(raw, str(path)).get("storage_limit"))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
