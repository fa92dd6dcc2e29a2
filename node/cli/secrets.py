"""Secrets the CLI is given without putting them in argv, and scrubbing the ones that were.

Any local user can read every process's command line (``ps``, ``/proc/PID/cmdline``), so a share link
typed as an argument (``sealbox get LINK``) shows its key to them for as long as the command runs, and
``add --name NAME`` shows the name. The safe forms read the secret from stdin or a file instead:
``get -`` / ``get --link-file FILE``, ``rm -`` / ``rm --link-file FILE``, ``add --name-file FILE``
(``-`` there is stdin too).

For the unsafe forms, :func:`scrub_process_title` rewrites the process title with ``setproctitle``, which
on Linux overwrites the memory ``/proc/PID/cmdline`` is read from: every argument holding a link becomes
``<link>``, a ``--name`` value ``<name>``. That happens as the CLI starts, so the secret is still visible
between ``exec`` and that moment (the interpreter's start-up, tens of milliseconds), and anything that
recorded the command line (shell history, audit logs) keeps it: the safe forms avoid both. Where
``setproctitle`` cannot rewrite the title, nothing changes.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from node.cli.errors import CliError
from protocol.link import MAX_DISPLAY_NAME, MAX_LINK_LEN, SCHEME

STDIN = "-"
MAX_TARGETS_TEXT = 64 * 1024  # characters of links and roots ``rm`` reads from stdin or a file
LINK_PLACEHOLDER = "<link>"
NAME_PLACEHOLDER = "<name>"


class SecretInputError(CliError):
    """A link or name could not be read from stdin or the given file, or none was given."""


def read_secret(source: str, what: str, limit: int, *, line: bool = False) -> str:
    """The text of ``source`` (``-`` for stdin, else a file's path), at most ``limit`` characters read;
    with ``line``, stdin is read up to its first newline only (someone typing it presses Enter).
    Errors name neither the file nor its content."""
    try:
        if source == STDIN:
            text = sys.stdin.readline(limit + 1) if line else sys.stdin.read(limit + 1)
        else:
            with open(source, encoding="utf-8") as f:
                text = f.read(limit + 1)
    except OSError as exc:
        raise SecretInputError(f"cannot read the {what}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise SecretInputError(f"the {what} is not UTF-8 text") from None
    if len(text) > limit:
        raise SecretInputError(f"the {what} is longer than {limit} characters")
    return text


def read_link(source: str) -> str:
    """The one link in ``source`` (surrounding whitespace and a final newline are fine)."""
    words = read_secret(source, "link", 2 * MAX_LINK_LEN, line=True).split()
    if len(words) != 1:
        raise SecretInputError(f"expected one link, found {len(words)} words: give exactly one link")
    return words[0]


def read_targets(sources: Sequence[str]) -> list[str]:
    """Every link or root in ``sources`` (whitespace-separated; each is ``-`` or a file)."""
    out: list[str] = []
    for source in sources:
        out += read_secret(source, "list of links and roots", MAX_TARGETS_TEXT).split()
    return out


def read_name(source: str) -> str:
    """The display name in ``source``: its text without the final newline (one line)."""
    text = read_secret(source, "name", MAX_DISPLAY_NAME + 2, line=True).removesuffix("\n").removesuffix("\r")
    if "\n" in text or "\r" in text:
        raise SecretInputError("the name file holds more than one line")
    return text


def scrubbed(argv: Sequence[str]) -> list[str]:
    """``argv`` with every link replaced by ``<link>`` and every ``--name`` value by ``<name>``."""
    out: list[str] = []
    after_name = False
    for arg in argv:
        if after_name:
            out.append(NAME_PLACEHOLDER)
            after_name = False
        elif SCHEME in arg:
            out.append(LINK_PLACEHOLDER)
        elif _is_name_flag(arg):
            out.append(arg)
            after_name = True
        elif "=" in arg and _is_name_flag(arg.partition("=")[0]):
            out.append(f"{arg.partition('=')[0]}={NAME_PLACEHOLDER}")
        else:
            out.append(arg)
    return out


def _is_name_flag(arg: str) -> bool:
    """``--name`` or a prefix argparse would expand to it (``--na``)."""
    return len(arg) >= 3 and "--name".startswith(arg)


def scrub_process_title() -> None:
    """Rewrite this process's visible command line (``sys.orig_argv``, interpreter included) without
    links and names; leave it alone when it holds neither."""
    clean = scrubbed(sys.orig_argv)
    if clean == sys.orig_argv:
        return
    try:
        import setproctitle
    except ImportError:  # not installed on this platform: the safe forms remain
        return
    setproctitle.setproctitle(" ".join(clean))
