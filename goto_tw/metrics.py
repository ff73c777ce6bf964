"""Prometheus metrics: what an operator graphs and alerts on, exposed through ``prometheus-client``.

Counting on the request path is done with plain integers, read by a custom collector only when
``/_goto/metrics`` is scraped: a redirect must not pay for a lock per label set. Latencies, which are
rarer (RPC calls, data-file writes), go into ``prometheus_client`` histograms directly. Each process
has its own registry (not the library's global one), so tests and several stores never mix.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Callable

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client import Counter as PrometheusCounter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

#: The methods that get a label of their own; any other (a client can invent any) counts as "other",
#: so the number of series stays fixed whatever clients send.
METHOD_LABELS = frozenset({"GET", "HEAD", "POST"})

#: Buckets (seconds) for RPC and disk latencies: from a fast local call to a timed-out one.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Every metric of one goto process, and the registry ``/_goto/metrics`` renders."""

    def __init__(self, role: str) -> None:
        self.role = role
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests: Counter[tuple[str, str, int]] = Counter()
        #: Of those, the requests twisted.web's general path answered (not the fast path), by route.
        self.general_requests: Counter[str] = Counter()
        self.adds = 0
        self.redirects = 0
        #: Adds refused by the rate limit (429).
        self.rate_limited = 0
        self._store_size: Callable[[], int] = lambda: 0
        self._cache_stats: Callable[[], tuple[int, int, int]] | None = None
        self._clicks: Callable[[], int] | None = None
        self._clicks_dropped: Callable[[], int] = lambda: 0
        self._access_log_lost: Callable[[], int] | None = None
        self.rpc_latency = Histogram(
            "goto_rpc_call_seconds",
            "Time for a call to the master to be answered (or to fail), by method and outcome.",
            ["method", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        # The data file's metrics exist only where there is one (watch_data_file): a slave's or a
        # PostgreSQL master's would stay at zero for ever, and read as a healthy disk.
        self.write_latency = Histogram(
            "goto_data_file_write_seconds",
            "Time to write one group of records to the data file (and hand it to the OS).",
            buckets=LATENCY_BUCKETS,
            registry=None,
        )
        self.fsync_latency = Histogram(
            "goto_data_file_fsync_seconds",
            "Time for one sync of the data file (fdatasync; --fsync, the default).",
            buckets=LATENCY_BUCKETS,
            registry=None,
        )
        self.refused_records = PrometheusCounter(
            "goto_data_file_refused_records",
            "Records (adds, disablings) refused because the data file or its key bound could not be written.",
            registry=None,
        )
        self._data_file_watched = False
        self.registry.register(_Collector(self))

    def watch_data_file(self) -> None:
        """Report the data file's write and fsync latency and its refused records (the writer of a
        data file calls this; once is enough)."""
        if not self._data_file_watched:
            self._data_file_watched = True
            for metric in (self.write_latency, self.fsync_latency, self.refused_records):
                self.registry.register(metric)

    def watch_store(self, size: Callable[[], int]) -> None:
        """Report ``size()`` as the number of keys held, read at each scrape."""
        self._store_size = size

    def watch_clicks(self, total: Callable[[], int], dropped: Callable[[], int]) -> None:
        """Report ``total()`` as ``goto_clicks_total`` and ``dropped()`` as
        ``goto_clicks_dropped_total``, read at each scrape (nothing per click here)."""
        self._clicks = total
        self._clicks_dropped = dropped

    def watch_access_log(self, lost: Callable[[], int]) -> None:
        """Report ``lost()`` as ``goto_access_log_lost_lines_total``: access-log lines a failed write
        (a full disk) lost, read at each scrape."""
        self._access_log_lost = lost

    def watch_cache(self, stats: Callable[[], tuple[int, int, int]]) -> None:
        """Report ``stats()`` as the cache's (hits, misses, evictions), read at each scrape."""
        self._cache_stats = stats

    def count_request(self, route: str, method: str, status: int) -> None:
        """Count one finished HTTP request (cheap: called for every request).

        ``route`` comes from a fixed set (``site.route_of``) and ``status`` is a three-digit code;
        ``method`` is the client's, so it is labelled only if it is one we serve.
        """
        self.requests[(route, method if method in METHOD_LABELS else "other", status)] += 1

    def render(self) -> bytes:
        """The text exposition format of every metric."""
        return generate_latest(self.registry)


class _Collector(Collector):
    """Turns the plain counters of :class:`Metrics` into metric families at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        metrics = self._metrics
        requests = CounterMetricFamily(
            "goto_http_requests",
            "HTTP requests answered, by route, method and status.",
            labels=["route", "method", "status"],
        )
        for (route, method, status), count in sorted(metrics.requests.items()):
            requests.add_metric([route, method, str(status)], count)
        yield requests
        general = CounterMetricFamily(
            "goto_http_general_path_requests",
            "Of those, the requests answered by twisted.web's general path, not the fast path, by route.",
            labels=["route"],
        )
        for route, count in sorted(metrics.general_requests.items()):
            general.add_metric([route], count)
        yield general
        yield CounterMetricFamily(
            "goto_redirects", "Redirects answered (302, or --redirect-status).", value=metrics.redirects
        )
        yield CounterMetricFamily("goto_adds", "Links added or found (successful adds).", value=metrics.adds)
        yield CounterMetricFamily(
            "goto_adds_rate_limited", "Adds refused by the rate limit (429).", value=metrics.rate_limited
        )
        size = GaugeMetricFamily(
            "goto_store_keys",
            "Keys held: all of them on a master, the cached ones on a slave.",
            labels=["role"],
        )
        size.add_metric([metrics.role], metrics._store_size())
        yield size
        if metrics._clicks is not None:
            yield CounterMetricFamily(
                "goto_clicks",
                "Clicks counted (redirects but HEAD and preview bots), kept or dropped.",
                value=metrics._clicks(),
            )
            yield CounterMetricFamily(
                "goto_clicks_dropped",
                "Of those, clicks dropped: for a new key past the bound of keys waiting to be written or sent, "
                "or because the master keeps none (PostgreSQL).",
                value=metrics._clicks_dropped(),
            )
        if metrics._access_log_lost is not None:
            yield CounterMetricFamily(
                "goto_access_log_lost_lines",
                "Access-log lines lost to failed writes (a full disk, a closed pipe).",
                value=metrics._access_log_lost(),
            )
        if metrics._cache_stats is not None:
            hits, misses, evictions = metrics._cache_stats()
            yield CounterMetricFamily("goto_cache_hits", "Slave cache hits.", value=hits)
            yield CounterMetricFamily("goto_cache_misses", "Slave cache misses.", value=misses)
            yield CounterMetricFamily("goto_cache_evictions", "Slave cache evictions (LRU).", value=evictions)
