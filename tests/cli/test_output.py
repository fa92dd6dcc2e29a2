"""What the CLI prints of sizes and of a fetch's progress: one decimal unit system, one status line."""

from __future__ import annotations

from node.cli.output import clock, fetch_line, human
from node.cli.transfer_commands import cancelled_line


def test_sizes_are_decimal_everywhere() -> None:
    assert human(999) == "999 B"
    assert human(1_500) == "1.5 kB"
    assert human(610_000_000) == "610.0 MB"
    assert human(1_500_000_000) == "1.5 GB"


def test_the_clock_runs_in_minutes_and_hours() -> None:
    assert clock(7) == "0:07" and clock(754) == "12:34" and clock(3723) == "1:02:03"


def test_a_fetch_line_says_what_the_fetch_is_doing() -> None:
    assert fetch_line({"phase": "looking", "waited": 7.4}) == "looking for providers… 0:07"
    assert fetch_line({"phase": "looking", "waited": 61, "providers_known": 2}).endswith("1:01 (2 known)")
    line = fetch_line(
        {
            "phase": "fetching",
            "done": 100_000_000,
            "held": 0,
            "total": 400_000_000,
            "speed": 20_000_000,
            "eta": 15,
            "peers": 3,
        }
    )
    assert line == "fetching:  25% 100.0 MB / 400.0 MB  20.0 MB/s  ETA 0:15  3 peers"
    resumed = fetch_line(
        {"phase": "fetching", "done": 0, "held": 610_000_000, "resumed": 610_000_000, "total": 1_000_000_000}
    )
    assert "resuming: 610.0 MB already here" in resumed and " 61% " in resumed
    # a total not known yet: the link's size (if it carries one) stands in
    assert fetch_line({"phase": "fetching", "done": 5_000}, size=10_000).startswith("fetching:  50%")
    assert fetch_line({"phase": "fetching", "done": 5_000}) == "fetching: 5.0 kB"


def test_a_cancel_says_what_stayed() -> None:
    fetched = {"id": "0123abcd", "kind": "fetch", "state": "cancelled", "done": 1_000_000, "held": 234_000}
    assert cancelled_line(fetched) == (
        "cancelled 0123abcd: 1.2 MB already fetched stay in the repo and a later get resumes from them"
    )
    assert cancelled_line(fetched | {"done": 0, "held": 0}) == "cancelled 0123abcd: nothing was fetched yet"
    assert "nothing was pinned" in cancelled_line({"id": "x", "kind": "add", "state": "cancelled"})
    assert "had already finished" in cancelled_line({"id": "x", "kind": "add", "state": "done"})
