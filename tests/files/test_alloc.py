"""The allocator setting keeps freed chunk-sized buffers for reuse instead of faulting them in again."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

glibc_only = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt"
)

# 16 chunks in flight, freed, then 16 more: what reading and sealing a file does, round after round
CHURN = """
import resource, sys
from node.files.alloc import keep_freed_buffers
tuned = sys.argv[1] == "tuned" and keep_freed_buffers()
def round_():
    buffers = [bytes(256 << 10) for _ in range(16)]
    del buffers
round_()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    round_()
print(int(tuned), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> tuple[bool, int]:
    out = subprocess.run(
        [sys.executable, "-c", CHURN, mode], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    return out[0] == "1", int(out[1])


@glibc_only
def test_freed_buffers_are_reused_not_faulted_in_again() -> None:
    tuned, tuned_faults = _faults("tuned")
    untuned, untuned_faults = _faults("default")
    assert tuned and not untuned
    # 50 rounds x 16 buffers x 64 pages would be 51,200 faults if every buffer were fresh memory
    assert untuned_faults > 10_000
    assert tuned_faults < 2_500
