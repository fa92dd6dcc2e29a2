"""Fail when product code outgrows its limits: a module of node/ or protocol/ over MAX_MODULE lines, or a
function (with the functions defined inside it) over MAX_FUNCTION lines.

Run by scripts/test. Limits, and the reason for them, are in the README's Architecture section.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("node", "protocol")
MAX_MODULE = 400
MAX_FUNCTION = 60


def problems(root: Path = ROOT) -> list[str]:
    found = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            text = path.read_text()
            name = path.relative_to(root)
            if (count := len(text.splitlines())) > MAX_MODULE:
                found.append(f"{name}: {count} lines (at most {MAX_MODULE})")
            for node in ast.walk(ast.parse(text)):
                if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or node.end_lineno is None:
                    continue
                if (lines := node.end_lineno - node.lineno + 1) > MAX_FUNCTION:
                    found.append(
                        f"{name}:{node.lineno}: {node.name}() has {lines} lines (at most {MAX_FUNCTION})"
                    )
    return found


def main() -> int:
    found = problems()
    for line in found:
        print(line, file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
