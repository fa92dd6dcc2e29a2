"""A dump of every trio task and where it waits, for ``kill -USR1 <daemon pid>`` (like Go's SIGQUIT):
the way to see what a live daemon is stuck on without stopping it."""

from __future__ import annotations

import signal
import sys

import trio


def format_tasks() -> str:
    """Every task under the root task, indented by nesting, each with the frames it awaits in."""
    lines: list[str] = []

    def walk(task: trio.lowlevel.Task, depth: int) -> None:
        lines.append(f"{'  ' * depth}task {task.name}")
        for frame, lineno in task.iter_await_frames():
            code = frame.f_code
            lines.append(f"{'  ' * depth}  at {code.co_filename}:{lineno} in {code.co_name}")
        for nursery in task.child_nurseries:
            for child in sorted(nursery.child_tasks, key=lambda t: t.name):
                walk(child, depth + 1)

    walk(trio.lowlevel.current_root_task(), 0)
    return "\n".join(lines)


async def serve_task_dumps() -> None:
    """On each SIGUSR1, write a dump of the tasks on stderr (the daemon's log)."""
    with trio.open_signal_receiver(signal.SIGUSR1) as signals:
        async for _ in signals:
            print(f"task dump (SIGUSR1):\n{format_tasks()}", file=sys.stderr, flush=True)
