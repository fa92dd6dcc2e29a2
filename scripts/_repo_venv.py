"""The repo's virtualenv, for the scripts in this folder (standard library only: imported before the
re-exec that puts the script under that venv)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("SEALBOX_VENV") or ROOT / ".venv")  # scripts/_venv.sh makes it


def reexec_in_venv(script: str) -> None:
    """Run ``script`` again under the repo's venv (it has sealbox and its dependencies), whatever python
    started it; a no-op when already there or when the venv does not exist yet."""
    python = VENV / "bin" / "python"
    if Path(sys.prefix).resolve() != VENV.resolve() and python.exists():
        os.execv(python, [str(python), str(Path(script).resolve()), *sys.argv[1:]])
