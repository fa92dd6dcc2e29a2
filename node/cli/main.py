"""The ``sealbox`` command line: the top-level arguments, and the one line a failure ends with (each
group of commands registers its own: node/cli/share.py, repo_commands.py, node_commands.py)."""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path

from node.cli import node_commands, repo_commands, share, transfer_commands
from node.cli.output import Interrupted
from node.cli.secrets import scrub_process_title
from node.errors import NodeError
from node.files.alloc import keep_freed_buffers
from protocol.errors import ProtocolError

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


def version() -> str:
    """The installed package's version; from a checkout that is not installed, pyproject.toml's.
    Imported and read only for ``--version`` (importlib.metadata costs a command tens of ms)."""
    import tomllib
    from importlib import metadata

    try:
        return metadata.version("sealbox")
    except metadata.PackageNotFoundError:
        pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
        try:
            return str(tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["version"])
        except (OSError, ValueError, KeyError):
            return "unknown"


class _Version(argparse.Action):
    """``--version``: the version is looked up only when asked for."""

    def __call__(self, parser: argparse.ArgumentParser, *_args: object, **_kwargs: object) -> None:
        print(f"sealbox {version()}")  # on stdout, as argparse's own version action prints it
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; the top-level options may also follow the subcommand (``common``)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output"
    )
    common.add_argument(
        "--repo", default=argparse.SUPPRESS, help="repo directory (default $SEALBOX_REPO or ~/.sealbox)"
    )
    common.add_argument(
        "-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bar"
    )

    parser = argparse.ArgumentParser(
        prog="sealbox",
        description="End-to-end encrypted file sharing: add files, share the link, get them back.",
    )
    parser.add_argument("--version", action=_Version, nargs=0, help="print the version and exit")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--repo", help="repo directory (default $SEALBOX_REPO or ~/.sealbox)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    share.register(sub, common)  # in the order 'sealbox --help' lists them
    repo_commands.register(sub, common)
    node_commands.register(sub, common)
    transfer_commands.register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        scrub_process_title()  # links and names out of ps, as early as can be
    args = build_parser().parse_args(argv)
    keep_freed_buffers()
    try:
        args.func(args)
    except (NodeError, ProtocolError) as exc:
        return _fail(args, str(exc))
    except KeyboardInterrupt as exc:
        return _fail(args, _interrupted(args, exc), EXIT_INTERRUPTED)
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        return _fail(args, f"{exc.strerror or exc}{where}")
    except sqlite3.Error as exc:  # the block store turns these into RepoDamagedError: a last resort
        return _fail(args, f"the block index is damaged ({exc}): run 'sealbox repo check'")
    return 0


def _interrupted(args: argparse.Namespace, exc: KeyboardInterrupt) -> str:
    """The truthful line for Ctrl-C: what the command that was stopped leaves behind."""
    if isinstance(exc, Interrupted):  # a fetch, or a transfer in the daemon: it knows what stays
        return exc.message
    if args.command == "add":  # add pins only at its end: its blocks wait, unpinned, for gc
        return "interrupted: nothing was pinned and no link was made"
    if args.command == "get":  # the output is written under a temp name, renamed at the end
        return "interrupted: no output was written"
    return "interrupted"


def _fail(args: argparse.Namespace, message: str, code: int = EXIT_ERROR) -> int:
    if getattr(args, "json", False):
        print(json.dumps({"error": message}))
    print(f"sealbox: error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
