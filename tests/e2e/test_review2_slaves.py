"""End-to-end (review 2, item 9): a slave of a single PostgreSQL master stops asking it every second
for what it does not keep: its change feed (``Store.Changes``) and click counts (``Store.Clicks``)."""

from __future__ import annotations

import re
import time

from .harness import add_url, get, key_of, poll_until

#: Seconds the slave is watched once it has found out; the old slave asked twice a second then.
WINDOW = 3.0


def _calls(slave_metrics: str, method: str) -> float:
    """Requests the slave sent for ``method`` (``goto_rpc_call_seconds_count``, every outcome)."""
    pattern = re.compile(r"^goto_rpc_call_seconds_count\{([^}]*)\} ([0-9.e+]+)$", re.MULTILINE)
    return sum(
        float(value) for labels, value in pattern.findall(slave_metrics) if f'method="{method}"' in labels
    )


def test_a_slave_of_a_postgresql_master_stops_polling_what_it_does_not_keep(goto_processes, pg_uri):
    master = goto_processes("--rpc", "--store", pg_uri, data_file=None, name="master")
    slave = goto_processes("--master", f"127.0.0.1:{master.port}", data_file=None, name="slave")
    key = key_of(add_url(slave.base_url, "https://example.com/review2/9").text)
    for _ in range(3):
        assert get(f"{slave.base_url}/{key}").status == 302  # clicks for the forwarder to offer

    def found_out() -> bool | None:
        output = slave.output()
        return True if "gives no change feed" in output and "keeps no clicks" in output else None

    poll_until(found_out, 10.0, "the slave to log that its master keeps no feed and no clicks")
    before = get(f"{slave.base_url}/_goto/metrics").text
    time.sleep(WINDOW)  # the observation window itself: nothing is awaited here
    after = get(f"{slave.base_url}/_goto/metrics").text
    for method in ("Store.Changes", "Store.Clicks"):
        assert _calls(after, method) == _calls(before, method), method
    output = slave.output()
    assert output.count("gives no change feed") == 1 and output.count("keeps no clicks") == 1
    assert get(f"{slave.base_url}/{key}").status == 302  # and it still serves


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_clicked_custom_keys_that_read_as_far_numbers_cost_no_memory(goto_processes, tmp_path):
    """Review 2, item 1 (the review's repro): 40 custom keys numbered k * 2**20, each followed once,
    used to grow the master's click totals by 8 MiB a key (56 MB -> 391 MB); now they cost a dict
    entry each, after a restart too."""
    from urllib.parse import quote

    from goto_tw.keys import key_for_index

    data = tmp_path / "data.json"
    master = goto_processes("--rpc", data_file=data, name="master")
    keys = [key_for_index(k << 20) for k in range(1, 41)]
    for key in keys:
        url = quote(f"https://example.com/far/{key}", safe="")
        assert get(f"{master.base_url}/add?url={url}&key={key}").status == 200
    before = _rss_kib(master.pid)
    for key in keys:
        assert get(f"{master.base_url}/{key}").status == 302
    clicks = tmp_path / "data.json.clicks"

    def written(key: str, times: int) -> bool | None:
        """Whether ``key`` is in ``times`` lines of the click file yet."""
        found = clicks.read_bytes().count(f'"{key}":1'.encode()) if clicks.exists() else 0
        return True if found >= times else None

    poll_until(lambda: written(keys[-1], 1), 10.0, "the clicks to be written")
    # One more click, written in a later write: by then the totals hold the first ones too.
    assert get(f"{master.base_url}/{keys[0]}").status == 302
    poll_until(lambda: written(keys[0], 2), 10.0, "the next write")
    assert _rss_kib(master.pid) - before < 32 * 1024
    master = goto_processes.restart(master)
    assert _rss_kib(master.pid) < before + 32 * 1024
