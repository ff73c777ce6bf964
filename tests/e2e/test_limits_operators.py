"""End to end, issue 11: the add rate limit on both paths, and X-Forwarded-For from a trusted proxy only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .harness import GotoProcesses, add_url, get, key_of, request


def api_add(base_url: str, url: str, headers: dict[str, str] | None = None) -> int:
    body = json.dumps({"url": url}).encode()
    return request(
        "POST",
        f"{base_url}/api/v1/links",
        body=body,
        headers={"Content-Type": "application/json", **(headers or {})},
    ).status


def test_adds_over_the_rate_are_429_with_retry_after_on_both_paths(
    goto_processes: GotoProcesses, tmp_path: Path
) -> None:
    """With --add-rate 1/m --add-burst 2: two adds pass, the third is 429 with Retry-After on the
    fast path (GET /add), the general path (HTTP/1.0) and the API; redirects are not limited; the
    refusals are counted in metrics."""
    master = goto_processes("--add-rate", "1/m", "--add-burst", "2", data_file=tmp_path / "data.json")
    assert add_url(master.base_url, "https://rate.example/1").status == 200
    assert add_url(master.base_url, "https://rate.example/2", method="POST").status == 200
    fast = add_url(master.base_url, "https://rate.example/3")
    assert fast.status == 429 and 1 <= int(fast.headers["Retry-After"]) <= 60, fast
    general = request(
        "GET", f"{master.base_url}/add?url=https://rate.example/4", headers={"Connection": "close"}
    )
    assert general.status == 429 and general.headers["Retry-After"], general
    assert api_add(master.base_url, "https://rate.example/5") == 429
    assert get(f"{master.base_url}/0").status == 302
    metrics = get(f"{master.base_url}/_goto/metrics").text
    assert "goto_adds_rate_limited_total 3.0" in metrics


def add_for(base_url: str, url: str, client: str) -> int:
    """The status of ``GET /add?url=URL`` sent as a proxy sends it for ``client`` (X-Forwarded-For)."""
    return request("GET", f"{base_url}/add?url={url}", headers={"X-Forwarded-For": client}).status


@pytest.mark.parametrize("proxy", ["127.0.0.1", "::ffff:127.0.0.1"])
def test_a_trusted_proxy_is_recognised_on_a_dual_stack_listener(
    goto_processes: GotoProcesses, tmp_path: Path, proxy: str
) -> None:
    """A ``tcp6:`` listener reports an IPv4 proxy as ``::ffff:127.0.0.1``: written either way,
    ``--trusted-proxy`` still matches it, so each X-Forwarded-For client keeps its own bucket."""
    master = goto_processes(
        "--add-rate", "1/m", "--add-burst", "1", "--trusted-proxy", proxy,
        data_file=tmp_path / "a.json", http="tcp6:0:interface=\\:\\:ffff\\:127.0.0.1",
    )  # fmt: skip
    statuses = [add_for(master.base_url, f"https://dual.example/{n}", f"198.51.100.{n}") for n in range(3)]
    assert statuses == [200, 200, 200]
    assert add_for(master.base_url, "https://dual.example/9", "198.51.100.0") == 429


def test_forwarded_for_is_believed_only_from_a_trusted_proxy(
    goto_processes: GotoProcesses, tmp_path: Path
) -> None:
    """Behind --trusted-proxy 127.0.0.1 each X-Forwarded-For client has its own bucket; without it,
    the header is ignored and every request counts against the peer."""
    trusted = goto_processes(
        "--add-rate", "1/m", "--add-burst", "1", "--trusted-proxy", "127.0.0.1", data_file=tmp_path / "a.json"
    )
    statuses = [add_for(trusted.base_url, f"https://xff.example/{n}", f"198.51.100.{n}") for n in range(3)]
    assert statuses == [200, 200, 200]
    untrusted = goto_processes("--add-rate", "1/m", "--add-burst", "1", data_file=tmp_path / "b.json")
    statuses = [add_for(untrusted.base_url, f"https://xff.example/{n}", f"198.51.100.{n}") for n in range(2)]
    assert statuses == [200, 429]


def test_qr_codes_past_a_clients_share_are_429_with_retry_after(
    goto_processes: GotoProcesses, tmp_path: Path
) -> None:
    """With adds rate-limited (the default), a client may have QR codes rendered at a bounded rate:
    past its burst a new code is 429 with Retry-After, while a code already made is still served."""
    master = goto_processes("--add-rate", "100/s", "--add-burst", "100", data_file=tmp_path / "data.json")
    keys = [
        key_of(add_url(master.base_url, f"https://qr-limit.example/{number}").text) for number in range(30)
    ]
    statuses = [get(f"{master.base_url}/{key}.qr").status for key in keys]
    assert statuses[0] == 200 and 429 in statuses, statuses
    refused = get(f"{master.base_url}/{keys[statuses.index(429)]}.qr")
    assert refused.status == 429 and 1 <= int(refused.headers["Retry-After"]) <= 60, refused
    assert get(f"{master.base_url}/{keys[0]}.qr").status == 200, "a code already made costs no render"
