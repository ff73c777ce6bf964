"""End to end, review 2: one rate-limit token per custom-key add (item 4), and a browser's 429 is an
HTML page with the form (item 12), on a real master."""

from __future__ import annotations

import urllib.parse
from pathlib import Path

from .harness import GotoProcesses, Reply, request

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def test_custom_key_adds_take_one_token_and_a_browser_gets_an_html_429(
    goto_processes: GotoProcesses, tmp_path: Path
) -> None:
    """The review's repro: with --add-rate 1/m --add-burst 4, four custom-key adds pass (two did,
    each taking two tokens); the fifth, from a browser, is a 429 HTML page with Retry-After and the form."""
    master = goto_processes("--add-rate", "1/m", "--add-burst", "4", data_file=tmp_path / "data.json")

    def add(number: int, headers: dict[str, str] | None = None) -> Reply:
        query = urllib.parse.urlencode({"url": f"https://custom.example/{number}", "key": f"custom{number}"})
        return request("GET", f"{master.base_url}/add?{query}", headers=headers)

    for number in range(4):
        reply = add(number)
        assert reply.status == 200, (number, reply)
    page = add(4, {"Accept": BROWSER_ACCEPT})
    assert page.status == 429, page
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert 1 <= int(page.headers["Retry-After"]) <= 60
    body = page.text
    assert "Too many links added from your address" in body and 'action="/add"' in body
    assert 'value="custom4"' in body
