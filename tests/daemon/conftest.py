"""The daemon tests' shared fixture: ``daemons`` (real ``sealbox daemon`` subprocesses), defined with
its ``Daemon`` class in test_daemon.py and offered here to the other modules of this folder."""

from tests.daemon.test_daemon import daemons

__all__ = ["daemons"]
