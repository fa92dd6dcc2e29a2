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

import contextlib
import os
import shutil
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from node.cli.errors import CliError
from node.store.fsutil import full_error, is_full, temp_name
from node.store.repo import Repo
from protocol.link import MAX_DISPLAY_NAME, MAX_LINK_LEN, SCHEME, ShareLink, parse_link

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


class CutLinkError(CliError):
    """A link the shell cut at its first ``&`` (it was given unquoted)."""


def looks_cut(text: str) -> bool:
    """Whether ``text`` is what bash leaves of an unquoted link: ``sealbox:?v=1 &`` runs ``sealbox ...
    sealbox:?v=1`` in the background and takes the rest for other commands, so the link arrives as
    ``sealbox:?`` and its first parameter, with no ``&`` and no ``#`` fragment (no key)."""
    text = text.strip()
    return text.startswith(SCHEME + "?") and "&" not in text and "#" not in text


def parse_cli_link(text: str, command: str) -> ShareLink:
    """``parse_link``, but a link cut at an ``&`` gets the fix (single quotes) instead of "copy the
    whole link": the user did copy all of it."""
    if looks_cut(text):
        raise CutLinkError(
            f"the link looks cut at an '&': put the link in single quotes: sealbox {command} 'sealbox:?...'"
        )
    return parse_link(text)


@contextlib.contextmanager
def spooled_stdin(repo: Repo) -> Iterator[Path]:
    """stdin's bytes in a private file of the repo's ``tmp/`` (0600, in the 0700 repo) for the time of
    an ``add -``: a daemon cannot read the client's stdin, and the adder seals a file it can stat.
    Deleted after, also on an error or Ctrl-C; one a crash leaves goes at the next gc. The caller holds
    the repo lock (shared), so that no gc deletes it meanwhile."""
    path = repo.tmp / temp_name("stdin-")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            shutil.copyfileobj(sys.stdin.buffer, f, 1 << 20)
        yield path
    except OSError as exc:
        if is_full(exc):
            raise full_error(repo.path) from None
        raise
    finally:
        path.unlink(missing_ok=True)


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
