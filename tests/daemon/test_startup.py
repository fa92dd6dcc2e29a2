"""Every CLI command starts fast: offline commands import neither the network stack nor the API client's
HTTP library, nor the progress-bar library unless a bar is shown."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("trio", "httpx", "h11", "libp2p", "multiformats", "tqdm")


def test_the_cli_imports_no_network_or_progress_library_up_front() -> None:
    code = (
        "import sys, node.cli.main; print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in %r)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code % (HEAVY,)], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.split() == []
