"""The ``sealbox`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from node.add import add_path, scan_size
from node.errors import NodeError
from node.get import get_link
from node.repo import Pin, Repo, default_repo_path
from protocol.cid import cid_from_text, cid_to_text
from protocol.errors import LinkError, ProtocolError
from protocol.link import SCHEME, parse_link
from protocol.manifest import DEFAULT_CHUNK

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


def human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


@contextmanager
def progress_bar(args: argparse.Namespace, total: int | None, what: str) -> Iterator[Callable[[int], None]]:
    """A byte progress bar on stderr when it is a terminal (and output is not JSON)."""
    if args.json or args.quiet or not sys.stderr.isatty():
        yield lambda _n: None
        return
    with tqdm(
        total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=what, leave=False, file=sys.stderr
    ) as bar:

        def advance(n: int) -> None:
            bar.update(n)

        yield advance


class Output:
    def __init__(self, args: argparse.Namespace) -> None:
        self.json = args.json

    def emit(self, data: Any, text: str | None) -> None:
        if self.json:
            print(json.dumps(data, ensure_ascii=False))
        elif text is not None:
            print(text)


def _open_repo(args: argparse.Namespace, *, create: bool = True) -> Repo:
    return Repo.open(Path(args.repo) if args.repo else default_repo_path(), create=create)


def _pin_json(pin: Pin) -> dict[str, Any]:
    return {
        "root": cid_to_text(pin.root),
        "name": pin.name,
        "kind": pin.kind,
        "size": pin.size,
        "blocks": pin.blocks,
        "stored_bytes": pin.stored,
        "added": datetime.fromtimestamp(pin.added, UTC).isoformat(timespec="seconds"),
    }


def cmd_add(args: argparse.Namespace) -> None:
    repo = _open_repo(args)
    path = Path(args.path)
    total = scan_size(path) if sys.stderr.isatty() and not args.json and path.exists() else None
    with progress_bar(args, total, "sealing") as advance:
        result = add_path(
            repo,
            path,
            display_name=args.name,
            with_size=args.with_size,
            chunk_size=args.chunk_size,
            progress=advance,
            warn=lambda msg: print(f"sealbox: warning: {msg}", file=sys.stderr),
        )
    data = _pin_json(result.pin) | {
        "link": str(result.link),
        "new_blocks": result.new_blocks,
        "already_added": result.existing,
    }
    Output(args).emit(data, str(result.link))


def cmd_get(args: argparse.Namespace) -> None:
    if not args.link.strip().startswith(SCHEME):
        raise LinkError("get needs a share link (sealbox:?...): a root alone does not carry the key")
    link = parse_link(args.link)
    repo = _open_repo(args)
    with progress_bar(args, link.size, "opening") as advance:
        result = get_link(repo, link, Path(args.output) if args.output else None, progress=advance)
    data = {
        "root": cid_to_text(link.root),
        "path": str(result.path),
        "kind": result.kind,
        "size": result.size,
        "files": result.files,
    }
    Output(args).emit(data, str(result.path))


def cmd_ls(args: argparse.Namespace) -> None:
    pins = _open_repo(args).pins()
    rows = [f"{'ROOT':<59}  {'NAME':<24}  {'SIZE':>10}  ADDED"]
    for pin in pins:
        added = datetime.fromtimestamp(pin.added).strftime("%Y-%m-%d %H:%M")
        name = pin.name if pin.name is not None else "-"
        rows.append(f"{cid_to_text(pin.root):<59}  {name:<24.24}  {human(pin.size):>10}  {added}")
    Output(args).emit([_pin_json(p) for p in pins], "\n".join(rows) if pins else None)


def _root_of(text: str) -> bytes:
    text = text.strip()
    return parse_link(text).root if text.startswith(SCHEME) else cid_from_text(text)


def cmd_rm(args: argparse.Namespace) -> None:
    repo = _open_repo(args, create=False)
    roots = [_root_of(t) for t in args.targets]
    with repo.lock():
        removed = [repo.unpin(root) for root in roots]
    text = "\n".join(f"unpinned {cid_to_text(p.root)}" for p in removed)
    Output(args).emit({"unpinned": [cid_to_text(p.root) for p in removed]}, text)


def cmd_gc(args: argparse.Namespace) -> None:
    blocks, freed = _open_repo(args, create=False).gc()
    Output(args).emit(
        {"blocks_removed": blocks, "bytes_freed": freed},
        f"removed {blocks} unpinned block{'s' if blocks != 1 else ''}, freed {human(freed)}",
    )


def _chunk_size(text: str) -> int:
    units = {"k": 1024, "m": 1024 * 1024}
    text = text.strip().lower().removesuffix("ib").removesuffix("b")
    try:
        return int(text[:-1]) * units[text[-1]] if text and text[-1] in units else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("chunk size is a number of bytes, e.g. 256KiB") from None


def build_parser() -> argparse.ArgumentParser:
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

    add = sub.add_parser(
        "add", parents=[common], help="seal a file or folder into the repo and print its share link"
    )
    add.add_argument("path", help="file or directory to add")
    add.add_argument("--name", help="display name to show in 'ls' and carry (opt-in) in the link")
    add.add_argument("--with-size", action="store_true", help="carry the total size in the link")
    add.add_argument("--chunk-size", type=_chunk_size, default=DEFAULT_CHUNK, help=argparse.SUPPRESS)
    add.set_defaults(func=cmd_add)

    get = sub.add_parser("get", parents=[common], help="rebuild a file or folder from its share link")
    get.add_argument("link", help="a sealbox:?... share link (quote it in the shell)")
    get.add_argument(
        "-o", "--output", help="destination path (default: ./NAME; into DEST/NAME if DEST is a folder)"
    )
    get.set_defaults(func=cmd_get)

    ls = sub.add_parser("ls", parents=[common], help="list what this repo holds")
    ls.set_defaults(func=cmd_ls)

    rm = sub.add_parser("rm", parents=[common], help="unpin roots (their blocks go at the next gc)")
    rm.add_argument("targets", nargs="+", metavar="LINK|ROOT")
    rm.set_defaults(func=cmd_rm)

    gc = sub.add_parser("gc", parents=[common], help="remove blocks no pinned root needs")
    gc.set_defaults(func=cmd_gc)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (NodeError, ProtocolError) as exc:
        return _fail(args, str(exc))
    except KeyboardInterrupt:
        return _fail(args, "interrupted: nothing partial was kept", EXIT_INTERRUPTED)
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        return _fail(args, f"{exc.strerror or exc}{where}")
    return 0


def _fail(args: argparse.Namespace, message: str, code: int = EXIT_ERROR) -> int:
    if getattr(args, "json", False):
        print(json.dumps({"error": message}))
    print(f"sealbox: error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
