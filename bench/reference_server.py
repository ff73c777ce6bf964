"""The reference for the redirect benchmarks: the plainest ``twisted.web`` redirect server there is.

Usage: python bench/reference_server.py --data store.json [--port 0] [--no-access-log]

It loads the same data file as goto (one ``{"key": K, "url": U}`` JSON object per line) into a dict,
and serves it with one leaf ``Resource`` under a default ``Site``: ``GET /KEY`` answers 302 with
``Location``, anything else 404. Like ``twistd -n``, it logs to standard output with
``twisted.logger``'s text observer, so the default ``Site`` access log (one line per request through
the logging system) costs what it costs under twistd; ``--no-access-log`` turns that line off.
It logs ``Site starting on PORT`` when it listens, as twistd does. No goto code is involved.
"""

from __future__ import annotations

import argparse
import json
import sys

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.logger import globalLogBeginner, textFileLogObserver
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import Request, Site


class Redirects(Resource):
    """``GET /KEY``: 302 to the URL stored under KEY; 404 for anything else."""

    isLeaf = True

    def __init__(self, urls: dict[bytes, bytes]) -> None:
        super().__init__()
        self._urls = urls

    def render_GET(self, request: Request) -> bytes:
        url = self._urls.get(request.path[1:])
        if url is None:
            request.setResponseCode(404)
            return b"No link here.\n"
        request.redirect(url)
        return b""


class SilentSite(Site):
    """A default ``Site`` that writes no access log line."""

    def log(self, request: http.Request) -> None:
        """Write nothing."""


def load(path: str) -> dict[bytes, bytes]:
    """Read a goto data file into a ``key -> URL`` dict of bytes."""
    urls = {}
    with open(path, "rb") as data:
        for line in data:
            record = json.loads(line)
            urls[record["key"].encode("ascii")] = record["url"].encode("ascii")
    return urls


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", required=True, help="goto data file (JSON lines) to serve")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--no-access-log", action="store_true", help="write no access log line")
    args = parser.parse_args()
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
    site_class = SilentSite if args.no_access_log else Site
    site = site_class(Redirects(load(args.data)))
    endpoint = TCP4ServerEndpoint(reactor, args.port, interface="127.0.0.1")
    endpoint.listen(site)
    reactor.run()


if __name__ == "__main__":
    main()
