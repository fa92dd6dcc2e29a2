"""The ``sealbox`` command line: its arguments, and the one line a failure ends with (the commands:
node/cli/commands.py)."""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from collections.abc import Sequence

from node.cli.commands import (
    cmd_add,
    cmd_daemon,
    cmd_gc,
    cmd_get,
    cmd_ls,
    cmd_peers,
    cmd_repo,
    cmd_rm,
    cmd_status,
)
from node.cli.secrets import scrub_process_title
from node.errors import NodeError
from node.files.alloc import keep_freed_buffers
from protocol.errors import ProtocolError
from protocol.manifest import DEFAULT_CHUNK

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


def _chunk_size(text: str) -> int:
    units = {"k": 1024, "m": 1024 * 1024}
    text = text.strip().lower().removesuffix("ib").removesuffix("b")
    try:
        return int(text[:-1]) * units[text[-1]] if text and text[-1] in units else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("chunk size is a number of bytes, e.g. 256KiB") from None


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
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--repo", help="repo directory (default $SEALBOX_REPO or ~/.sealbox)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_sharing_commands(sub, common)  # in the order 'sealbox --help' lists them
    _add_repo_commands(sub, common)
    _add_daemon_commands(sub, common)
    return parser


def _add_sharing_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """``add`` and ``get``: a file or folder into the repo and its link out, and back."""
    add = sub.add_parser(
        "add", parents=[common], help="seal a file or folder into the repo and print its share link"
    )
    add.add_argument("path", help="file or directory to add")
    named = add.add_mutually_exclusive_group()
    named.add_argument("--name", help="display name to show in 'ls' and carry (opt-in) in the link")
    named.add_argument(
        "--name-file",
        metavar="FILE",
        help="read the display name from FILE ('-': stdin), out of the process list other users see",
    )
    add.add_argument("--with-size", action="store_true", help="carry the total size in the link")
    add.add_argument(
        "--peer-hints",
        action="store_true",
        help="carry this node's listen addresses in the link (needs a running daemon)",
    )
    add.add_argument("--chunk-size", type=_chunk_size, default=DEFAULT_CHUNK, help=argparse.SUPPRESS)
    add.set_defaults(func=cmd_add)

    get = sub.add_parser("get", parents=[common], help="rebuild a file or folder from its share link")
    get.add_argument(
        "link",
        nargs="?",
        help="a sealbox:?... share link, or - to read it from stdin (safer: other local users see argv)",
    )
    get.add_argument("--link-file", metavar="FILE", help="read the link from FILE, out of the process list")
    get.add_argument(
        "-o", "--output", help="destination path (default: ./NAME; into DEST/NAME if DEST is a folder)"
    )
    get.add_argument(
        "--bootstrap",
        action="append",
        metavar="MULTIADDR",
        help="without a daemon: a peer to find providers through (repeatable; adds to the config's)",
    )
    get.add_argument(
        "--no-seed",
        action="store_true",
        help="do not announce, pin or keep serving what was fetched (by default a fetcher becomes a seed)",
    )
    get.set_defaults(func=cmd_get)


def _add_repo_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """``ls``, ``rm``, ``gc`` and ``repo``: what the repo holds, and its upkeep."""
    ls = sub.add_parser("ls", parents=[common], help="list what this repo holds")
    ls.set_defaults(func=cmd_ls)

    rm = sub.add_parser("rm", parents=[common], help="unpin roots (their blocks go at the next gc)")
    rm.add_argument("targets", nargs="*", metavar="LINK|ROOT", help="- reads them from stdin")
    rm.add_argument(
        "--link-file",
        action="append",
        metavar="FILE",
        help="read links or roots from FILE, out of the process list (repeatable)",
    )
    rm.set_defaults(func=cmd_rm)

    gc = sub.add_parser("gc", parents=[common], help="remove blocks no pinned root needs")
    gc.set_defaults(func=cmd_gc)

    repo = sub.add_parser("repo", parents=[common], help="check or repair the block index and the pins")
    repo.add_argument("action", choices=["check", "repair"], help="check: report; repair: rebuild what fails")
    repo.add_argument("--deep", action="store_true", help="check: also read and hash every stored block")
    repo.set_defaults(func=cmd_repo)


def _add_daemon_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """``daemon``, and ``status`` and ``peers``, which ask the running one."""
    daemon = sub.add_parser(
        "daemon", parents=[common], help="run the node: serve and announce pinned roots, answer the CLI"
    )
    daemon.add_argument(
        "--listen", action="append", metavar="MULTIADDR", help="listen address (repeatable; overrides config)"
    )
    daemon.add_argument(
        "--bootstrap",
        action="append",
        metavar="MULTIADDR",
        help="peer to join the DHT through, .../p2p/<id> (repeatable; overrides config)",
    )
    daemon.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"], help="default: info"
    )
    daemon.set_defaults(func=cmd_daemon)

    status = sub.add_parser("status", parents=[common], help="show the running daemon's state")
    status.set_defaults(func=cmd_status)
    peers = sub.add_parser("peers", parents=[common], help="list the peers the daemon is connected to")
    peers.set_defaults(func=cmd_peers)


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        scrub_process_title()  # links and names out of ps, as early as can be
    args = build_parser().parse_args(argv)
    keep_freed_buffers()
    try:
        args.func(args)
    except (NodeError, ProtocolError) as exc:
        return _fail(args, str(exc))
    except KeyboardInterrupt:
        return _fail(args, "interrupted: nothing partial was kept", EXIT_INTERRUPTED)
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        return _fail(args, f"{exc.strerror or exc}{where}")
    except sqlite3.Error as exc:  # the block store turns these into RepoDamagedError: a last resort
        return _fail(args, f"the block index is damaged ({exc}): run 'sealbox repo check'")
    return 0


def _fail(args: argparse.Namespace, message: str, code: int = EXIT_ERROR) -> int:
    if getattr(args, "json", False):
        print(json.dumps({"error": message}))
    print(f"sealbox: error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
