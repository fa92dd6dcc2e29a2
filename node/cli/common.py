"""What every ``sealbox`` command shares: the repo it works on, the daemon client, warnings."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from node.daemon.api_client import ApiClient
from node.store.repo import Repo, default_repo_path

Subcommands = "argparse._SubParsersAction[argparse.ArgumentParser]"


def repo_path(args: argparse.Namespace) -> Path:
    return Path(args.repo) if args.repo else default_repo_path()


def open_repo(args: argparse.Namespace, *, create: bool = True) -> Repo:
    return Repo.open(repo_path(args), create=create)


def daemon(args: argparse.Namespace) -> ApiClient:
    """The client of the daemon running on this repo; its calls raise NoDaemon when none answers."""
    return ApiClient(repo_path(args))


def warn(message: str) -> None:
    print(f"sealbox: warning: {message}", file=sys.stderr)
