"""End to end, issue 11: API keys, disabling a link everywhere within 2 s, tombstones, SIGHUP reloads."""

from __future__ import annotations

import json
import os
import signal
import time
import xmlrpc.client as xmlrpclib
from pathlib import Path

import pytest

from .harness import (
    GotoProcesses,
    add_url,
    get,
    key_of,
    poll_until,
    post_form,
    read_records,
    read_tombstones,
    request,
    rpc_proxy,
)

KEY = "e2e-operator-key-1"
OTHER_KEY = "e2e-operator-key-2"
#: The coherence bound the README states: a disabled key answers 410 on every slave within this.
DISABLE_BOUND = 2.0


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def keys_file(tmp_path: Path, *keys: str) -> Path:
    path = tmp_path / "api-keys"
    path.write_text("# operators\n" + "".join(f"{key}\n" for key in keys))
    return path


def test_disabled_key_answers_410_on_master_and_two_slaves_within_2_seconds(
    goto_processes: GotoProcesses, tmp_path: Path
) -> None:
    """A key cached on two slaves (answered by their fast paths) is 410 on the master and on both
    slaves within 2 s of the DELETE's answer, and the API shows it disabled."""
    data = tmp_path / "data.json"
    master = goto_processes(
        "--rpc", "--api-keys-file", str(keys_file(tmp_path, KEY)), data_file=data, name="master"
    )
    slaves = [
        goto_processes("--master", f"127.0.0.1:{master.port}", data_file=None, name=name, wait=False)
        for name in ("slave-a", "slave-b")
    ]
    for slave in slaves:
        slave.wait_ready()
    key = key_of(add_url(slaves[0].base_url, "https://phish.example/login").text)
    for process in (master, *slaves):
        for _ in range(2):  # the second answer comes from the slave's cache
            assert get(f"{process.base_url}/{key}").status == 302
    reply = request("DELETE", f"{master.base_url}/api/v1/links/{key}", headers=auth(KEY))
    disabled_at = time.monotonic()
    assert reply.status == 200, reply
    assert json.loads(reply.body)["disabled"] is not None

    def all_gone() -> bool | None:
        return all(get(f"{p.base_url}/{key}").status == 410 for p in (master, *slaves)) or None

    poll_until(all_gone, DISABLE_BOUND, "410 on the master and both slaves")
    elapsed = time.monotonic() - disabled_at
    assert elapsed <= DISABLE_BOUND, elapsed
    for process in (master, *slaves):
        api = get(f"{process.base_url}/api/v1/links/{key}")
        assert api.status == 410 and api.headers["Content-Type"] == "application/problem+json"
    assert key in read_tombstones(data)


def test_a_slave_serving_only_cached_keys_sees_a_disable_made_after_an_outage(
    goto_processes: GotoProcesses, tmp_path: Path
) -> None:
    """Review 33: the master stops, one uncached look-up through the slave fails (503: the slave
    marks it down), the master comes back on its port and a cached key is disabled there. With
    nothing but hits on the slave, the key still answers 410 there within the bound plus a second
    (the poller checks a down master once a second)."""
    data = tmp_path / "data.json"
    keys = keys_file(tmp_path, KEY)
    master = goto_processes("--rpc", "--api-keys-file", str(keys), data_file=data, name="master")
    slave = goto_processes("--master", f"127.0.0.1:{master.port}", data_file=None, name="slave")
    key = key_of(add_url(master.base_url, "https://later-disabled.example/").text)
    for _ in range(2):
        assert get(f"{slave.base_url}/{key}").status == 302
    master.stop()
    assert get(f"{slave.base_url}/zzzz").status == 503
    master = goto_processes._run(master.respawn(keep_port=True), True)
    assert request("DELETE", f"{master.base_url}/api/v1/links/{key}", headers=auth(KEY)).status == 200
    disabled_at = time.monotonic()
    poll_until(
        lambda: get(f"{slave.base_url}/{key}").status == 410 or None,
        DISABLE_BOUND + 1,
        "410 on the slave after the outage",
    )
    assert time.monotonic() - disabled_at <= DISABLE_BOUND + 1


def test_tombstone_survives_a_restart_and_the_key_is_never_given_again(
    goto_processes: GotoProcesses, tmp_path: Path
) -> None:
    """After a restart (SIGTERM, and again after kill -9) a disabled key still answers 410; adding
    its URL again gives a new key; the listing shows it disabled."""
    data = tmp_path / "data.json"
    master = goto_processes("--rpc", "--api-keys-file", str(keys_file(tmp_path, KEY)), data_file=data)
    key = key_of(add_url(master.base_url, "https://gone.example/").text)
    assert request("DELETE", f"{master.base_url}/api/v1/links/{key}", headers=auth(KEY)).status == 200
    master = goto_processes.restart(master, keep_port=True)
    assert get(f"{master.base_url}/{key}").status == 410
    master.kill()
    master = goto_processes._run(master.respawn(keep_port=True), True)
    assert get(f"{master.base_url}/{key}").status == 410
    again = key_of(add_url(master.base_url, "https://gone.example/").text)
    assert again != key
    listing = request("GET", f"{master.base_url}/api/v1/links?limit=10", headers=auth(KEY))
    links = {link["key"]: link for link in json.loads(listing.body)["links"]}
    assert links[key]["disabled"] is not None and links[again]["disabled"] is None
    assert [k for k, _ in read_records(data)] == [key, again]


def test_api_keys_are_reloaded_on_sighup(goto_processes: GotoProcesses, tmp_path: Path) -> None:
    """Management needs a key in force: 401 with WWW-Authenticate and a problem otherwise; after
    the file changes and SIGHUP, the new key works and the old one is refused; the keys never
    reach the log."""
    path = keys_file(tmp_path, KEY)
    master = goto_processes("--rpc", "--api-keys-file", str(path), data_file=tmp_path / "data.json")
    listing = f"{master.base_url}/api/v1/links"
    assert request("GET", listing, headers=auth(KEY)).status == 200
    refused = request("GET", listing, headers=auth(OTHER_KEY))
    assert refused.status == 401 and refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert refused.headers["Content-Type"] == "application/problem+json"
    assert request("GET", listing).status == 401
    keys_file(tmp_path, OTHER_KEY)
    os.kill(master.pid, signal.SIGHUP)
    poll_until(
        lambda: request("GET", listing, headers=auth(OTHER_KEY)).status == 200 or None, 10, "the new key"
    )
    assert request("GET", listing, headers=auth(KEY)).status == 401
    keys_file(tmp_path)  # review 35: every key commented out (revoked) was kept in force
    os.kill(master.pid, signal.SIGHUP)
    poll_until(
        lambda: request("GET", listing, headers=auth(OTHER_KEY)).status == 401 or None, 10, "the key revoked"
    )
    assert KEY not in master.output() and OTHER_KEY not in master.output()


def test_private_mode_needs_a_key_to_add(goto_processes: GotoProcesses, tmp_path: Path) -> None:
    """With --private, adding through the API or /add (fast path or not) needs a key; redirects do not."""
    master = goto_processes(
        "--private", "--api-keys-file", str(keys_file(tmp_path, KEY)), data_file=tmp_path / "data.json"
    )
    body = json.dumps({"url": "https://private.example/"}).encode()
    json_type = {"Content-Type": "application/json"}
    assert request("POST", f"{master.base_url}/api/v1/links", body=body, headers=json_type).status == 401
    assert add_url(master.base_url, "https://private.example/").status == 401
    # Review 35 (mutation audit): the form's POST was promised and never tried.
    assert post_form(f"{master.base_url}/add", {"url": "https://private.example/"}).status == 401
    created = request(
        "POST", f"{master.base_url}/api/v1/links", body=body, headers={**json_type, **auth(KEY)}
    )
    assert created.status == 201
    key = json.loads(created.body)["key"]
    assert get(f"{master.base_url}/{key}").status == 302


def test_a_private_master_refuses_the_adds_of_a_slave_that_does_not_check_keys(
    goto_processes: GotoProcesses, tmp_path: Path
) -> None:
    """A new user's trial (stop 36): a slave started without --private added links for anyone
    through a private master. Its adds are refused now (a 403 saying why); its redirects and its
    disables go on; a slave with --private adds with a key only."""
    keys = str(keys_file(tmp_path, KEY))
    secret_file = tmp_path / "secret"
    secret_file.write_text("s3cret\n")
    secret = ("--rpc-secret-file", str(secret_file))
    master = goto_processes(
        "--rpc", "--private", "--api-keys-file", keys, *secret, data_file=tmp_path / "data.json"
    )
    master_at = f"127.0.0.1:{master.port}"
    with rpc_proxy(master.base_url) as stranger, pytest.raises(xmlrpclib.Fault, match="401"):
        stranger.Store.Put("https://stranger.example/")  # a stranger's client (stop 41): no secret, no add
    body = json.dumps({"url": "https://keyed.example/"}).encode()
    headers = {"Content-Type": "application/json", **auth(KEY)}
    created = request("POST", f"{master.base_url}/api/v1/links", body=body, headers=headers)
    key = json.loads(created.body)["key"]
    unchecked = goto_processes("--master", master_at, *secret, data_file=None, name="unchecked")
    refused = add_url(unchecked.base_url, "https://anyone.example/")
    assert refused.status == 403 and "needs an API key" in refused.text, refused
    assert get(f"{unchecked.base_url}/{key}").status == 302
    assert json.loads(get(f"{unchecked.base_url}/_goto/health").body)["status"] == "ok"
    disabled = request("DELETE", f"{master.base_url}/api/v1/links/{key}", headers=auth(KEY))
    assert disabled.status == 200
    poll_until(lambda: get(f"{unchecked.base_url}/{key}").status == 410 or None, 5, "the disable")
    checked = goto_processes(
        "--master", master_at, "--private", "--api-keys-file", keys, *secret, data_file=None
    )
    assert add_url(checked.base_url, "https://anyone.example/").status == 401
    other = json.dumps({"url": "https://keyed.example/other"}).encode()
    assert request("POST", f"{checked.base_url}/api/v1/links", body=other, headers=headers).status == 201
    master.stop()
    assert "anyone.example" not in (tmp_path / "data.json").read_text()
    assert "stranger.example" not in (tmp_path / "data.json").read_text()
