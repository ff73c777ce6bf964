"""Log output for log shippers: ``twistd --logger goto_tw.logs.json_observer -n goto ...``.

twistd chooses its log observer before the plugin's options are read, so the JSON format is picked
with twistd's own ``--logger`` option rather than an option of ``goto``. Each event becomes one JSON
object on one line of standard output: ``time`` (ISO 8601, UTC), ``level``, ``namespace``, ``message``
(the text a person would read), then the event's own fields where they are plain values (for the
access log: ``client``, ``method``, ``path``, ``status``, ``size``, ``route``), and ``failure`` with the
traceback for an error that has one.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from typing import IO, Any

from twisted.logger import ILogObserver, LogEvent, formatEvent
from zope.interface import implementer

_PLAIN = (str, int, float, bool, type(None))


def event_as_json(event: LogEvent) -> str:
    """One event as a one-line JSON object (keys in a stable order, no Twisted internals)."""
    level = event.get("log_level")
    record: dict[str, Any] = {
        "time": datetime.fromtimestamp(event.get("log_time", 0), timezone.utc).isoformat(
            timespec="milliseconds"
        ),
        "level": getattr(level, "name", "info"),
        "namespace": event.get("log_namespace", "-"),
        "message": formatEvent(event),
    }
    for name, value in event.items():
        if not name.startswith("log_") and name not in record and isinstance(value, _PLAIN):
            record[name] = value
    failure = event.get("log_failure")
    if failure is not None:
        record["failure"] = failure.getTraceback()
    return json.dumps(record, ensure_ascii=False, default=str)


@implementer(ILogObserver)
class JSONLinesObserver:
    """Writes each event as one JSON line to ``out``."""

    def __init__(self, out: IO[str]) -> None:
        self._out = out

    def __call__(self, event: LogEvent) -> None:
        self._out.write(event_as_json(event) + "\n")
        self._out.flush()


def json_observer() -> ILogObserver:
    """The ``--logger`` factory: JSON lines to standard output (the journal, a container's log)."""
    return JSONLinesObserver(sys.stdout)
