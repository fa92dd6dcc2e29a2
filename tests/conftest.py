"""Shared fixtures: a fresh repo in ``tmp_path`` and a runner for the real ``sealbox`` command."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.store.repo import Repo
from tests.helpers import SEALBOX, RunCli


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repo]:
    opened = Repo.open(tmp_path / "repo")
    yield opened
    opened.close()


@pytest.fixture
def run_cli(tmp_path: Path) -> RunCli:
    """Run ``sealbox ARGS`` as a subprocess with text output.

    HOME points into ``tmp_path`` and SEALBOX_REPO is unset unless ``env`` sets it, so no test can touch
    the real ``~/.sealbox``.
    """
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)

    def run(
        *args: str | Path, input: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        full_env = {k: v for k, v in os.environ.items() if k != "SEALBOX_REPO"}
        full_env["HOME"] = str(home)
        full_env.update(env or {})
        return subprocess.run(
            [SEALBOX, *map(str, args)],
            input=input,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    return run
