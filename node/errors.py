"""The root of the node's errors. Each layer has its own errors module with one root of its own
(``StoreError``, ``FilesError``, ``NetworkError``, ``ServiceError``, ``CliError``), all under
:class:`NodeError`, so the command line reports any of them in one line. Messages are one line, for
the user, and never hold a key or a link.

Also here, as every layer needs them: the unwrapping of trio's exception groups."""

from typing import TypeVar

E = TypeVar("E", bound=BaseException)


class NodeError(Exception):
    """Root of every error raised by ``node/``."""


def single_exception(exc: BaseException) -> BaseException:
    """The one exception inside nested single-member exception groups (``exc`` itself otherwise).

    trio's nurseries (and the library services built on them: py-libp2p's host and DHT, the daemon's
    root nursery) wrap whatever crosses them, a body's own exceptions included; a caller unwraps the
    one that is really there so it comes out as itself, not as a group."""
    inner = exc
    while isinstance(inner, BaseExceptionGroup) and len(inner.exceptions) == 1:
        inner = inner.exceptions[0]
    return inner if not isinstance(inner, BaseExceptionGroup) else exc


def first_exception(group: BaseExceptionGroup[E]) -> E:
    """The first leaf exception of a (possibly nested) exception group: where several tasks failed
    with the same kind of error (``except* RepoError``), the one to report."""
    inner = group.exceptions[0]
    return first_exception(inner) if isinstance(inner, BaseExceptionGroup) else inner
