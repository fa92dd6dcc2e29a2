"""README.md's Performance section, for the benchmark scripts that write their own block of it
(standard library only)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
WRAP = 105  # README.md's paragraphs are wrapped at about this width


def markers(name: str) -> tuple[str, str]:
    """The comments that delimit the block ``name`` writes."""
    return f"<!-- {name} -->", f"<!-- /{name} -->"


def update_block(text: str, name: str, block: str) -> str:
    """``text`` with ``block`` (markers included) in place of ``name``'s block, or, without one, at the
    end of the Performance section (a new section at the end when there is none)."""
    start_mark, end_mark = markers(name)
    start, end = text.find(start_mark), text.find(end_mark)
    if start >= 0 and end > start:
        return text[:start] + block + text[end + len(end_mark) :]
    heading = re.search(r"^## Performance[ \t]*$", text, re.MULTILINE)
    if heading is None:
        return text.rstrip("\n") + "\n\n## Performance\n\n" + block + "\n"
    following = re.compile(r"^## ", re.MULTILINE).search(text, heading.end())
    cut = following.start() if following else len(text)
    before, after = text[:cut].rstrip("\n"), text[cut:]
    return before + "\n\n" + block + "\n" + ("\n" + after if after else "")
