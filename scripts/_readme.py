"""docs/performance.md (the benchmarks' detail, moved out of README.md), for the benchmark scripts
that write their own block of it (standard library only)."""

from __future__ import annotations

from pathlib import Path

PERFORMANCE = Path(__file__).resolve().parent.parent / "docs" / "performance.md"
WRAP = 105  # the paragraphs of README.md and docs/ are wrapped at about this width


def markers(name: str) -> tuple[str, str]:
    """The comments that delimit the block ``name`` writes."""
    return f"<!-- {name} -->", f"<!-- /{name} -->"


def update_block(text: str, name: str, block: str) -> str:
    """``text`` with ``block`` (markers included) in place of ``name``'s block, or, without one, at the
    end."""
    start_mark, end_mark = markers(name)
    start, end = text.find(start_mark), text.find(end_mark)
    if start >= 0 and end > start:
        return text[:start] + block + text[end + len(end_mark) :]
    return text.rstrip("\n") + "\n\n" + block + "\n"
