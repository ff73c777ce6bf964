"""SIGHUP: re-read the files an operator may change while the service runs (API keys, blocklist),
and open the access log file again (log rotation)."""

from __future__ import annotations

import signal
from typing import Any, Callable

from twisted.application.service import Service
from twisted.logger import Logger

log = Logger()


class ReloadOnSighup(Service):
    """Calls each reloader, in the reactor thread, when the process gets SIGHUP (a reloader with
    much to read does it in the reactor's thread pool, one reading at a time, as the block file's does).

    The handler is installed when the service starts and the previous one put back when it stops.
    A reloader that fails is logged; the others still run.
    """

    def __init__(self, reactor: Any, reloaders: list[Callable[[], object]]) -> None:
        self._reactor = reactor
        self._reloaders = reloaders
        self._previous: Any = None

    def startService(self) -> None:
        super().startService()
        self._previous = signal.signal(signal.SIGHUP, self._on_signal)

    def stopService(self) -> None:
        super().stopService()
        if self._previous is not None:
            signal.signal(signal.SIGHUP, self._previous)
            self._previous = None

    def _on_signal(self, signum: int, frame: object) -> None:
        self._reactor.callFromThread(self.reload)

    def reload(self) -> None:
        """Run every reloader now."""
        log.info("SIGHUP: reloading")
        for reloader in self._reloaders:
            try:
                reloader()
            except Exception:
                log.failure("A reload failed")
