"""End to end, issue 11 (the rest): --redirect-status on a master and a slave, both paths."""

from __future__ import annotations

from pathlib import Path

from .harness import GotoProcesses, add_url, key_of, request


def test_redirect_status_308_on_master_and_slave_both_paths(
    goto_processes: GotoProcesses, tmp_path: Path
) -> None:
    """A master and a slave started with --redirect-status 308 answer 308 with Cache-Control on the
    fast path (a plain HTTP/1.1 GET of a key held locally) and on twisted.web's (``Connection:
    close``, and a slave's first look-up of a key, go there)."""
    master = goto_processes("--rpc", "--redirect-status", "308", data_file=tmp_path / "d.json", name="master")
    slave = goto_processes(
        "--master", f"127.0.0.1:{master.port}", "--redirect-status", "308", data_file=None, name="slave"
    )
    key = key_of(add_url(master.base_url, "https://perm.example/").text)
    for process in (master, slave, slave):
        for headers in ({}, {"Connection": "close"}):
            reply = request("GET", f"{process.base_url}/{key}", headers=headers)
            assert reply.status == 308, reply
            assert reply.headers["Location"] == "https://perm.example/"
            assert reply.headers["Cache-Control"] == "private, max-age=90"


def test_adds_are_limited_by_default(goto_processes: GotoProcesses, tmp_path: Path) -> None:
    """Started with no --add-rate, a master lets a client add 50 at once, then answers 429."""
    master = goto_processes("--no-fsync", data_file=tmp_path / "d.json", rate_limit_off=False)
    statuses = [add_url(master.base_url, f"https://burst.example/{n}").status for n in range(70)]
    assert statuses[:50] == [200] * 50
    assert 429 in statuses[50:], statuses


def test_add_rate_off_lifts_the_limit(goto_processes: GotoProcesses, tmp_path: Path) -> None:
    """With --add-rate off (what the harness passes by default), 120 quick adds all succeed."""
    master = goto_processes("--no-fsync", data_file=tmp_path / "d.json")
    assert "--add-rate" in master.command
    statuses = {add_url(master.base_url, f"https://bulk.example/{n}").status for n in range(120)}
    assert statuses == {200}


def test_cors_for_a_listed_origin_on_a_real_master(goto_processes: GotoProcesses, tmp_path: Path) -> None:
    """--cors-origin: a listed origin's preflight is 204 and its API answers carry
    Access-Control-Allow-Origin; another origin gets none; redirects never do."""
    master = goto_processes("--cors-origin", "https://app.example", data_file=tmp_path / "d.json")
    key = key_of(add_url(master.base_url, "https://cors.example/").text)
    listed = {"Origin": "https://app.example"}
    preflight = request(
        "OPTIONS",
        f"{master.base_url}/api/v1/links",
        headers={
            **listed,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert preflight.status == 204, preflight
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    reply = request("GET", f"{master.base_url}/api/v1/links/{key}", headers=listed)
    assert reply.status == 200 and reply.headers["Access-Control-Allow-Origin"] == "https://app.example"
    other = request(
        "GET", f"{master.base_url}/api/v1/links/{key}", headers={"Origin": "https://evil.example"}
    )
    assert other.status == 200 and other.headers["Access-Control-Allow-Origin"] is None
    assert (
        request("GET", f"{master.base_url}/{key}", headers=listed).headers["Access-Control-Allow-Origin"]
        is None
    )


def _raw_answer(port: int, data: bytes) -> bytes:
    """What the server answers ``data`` with on a fresh connection, up to its close."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(data)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


def test_refusals_under_the_api_carry_cors_for_a_listed_origin(
    goto_processes: GotoProcesses, tmp_path: Path
) -> None:
    """Review 33: the 413 for a body over 1 MiB and the 431 for a header block over the bound are
    written before any resource sees the request; under /api/ they carry Access-Control-Allow-Origin
    for a listed origin too, so its page can read the problem document."""
    master = goto_processes("--cors-origin", "https://app.example", data_file=tmp_path / "d.json")
    too_large = b"POST /api/v1/links HTTP/1.1\r\nHost: h\r\nOrigin: %s\r\nContent-Type: application/json\r\nContent-Length: 2000000\r\n\r\n"
    listed = _raw_answer(master.port, too_large % b"https://app.example")
    assert (
        listed.startswith(b"HTTP/1.1 413 ")
        and b"\r\nAccess-Control-Allow-Origin: https://app.example\r\n" in listed
    )
    other = _raw_answer(master.port, too_large % b"https://evil.example")
    assert other.startswith(b"HTTP/1.1 413 ") and b"Access-Control-Allow-Origin" not in other
    big_head = (
        b"GET /api/v1/links/0 HTTP/1.1\r\nHost: h\r\nOrigin: https://app.example\r\n"
        + b"X-Pad: "
        + b"a" * 8000
        + b"\r\n" * 1
    )
    head_refused = _raw_answer(master.port, big_head + b"X-More: " + b"b" * 20000 + b"\r\n\r\n")
    assert (
        head_refused.startswith(b"HTTP/1.1 431 ")
        and b"Access-Control-Allow-Origin: https://app.example" in head_refused
    )
