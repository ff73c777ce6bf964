"""The link policy (blocklist, loop check): the common URL shape is judged as urlsplit judges it."""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from goto_tw.blocklist import LinkPolicy
from goto_tw.errors import InvalidURL
from goto_tw.urls import canonical_host, ends_in_number, validate_url
from tests.conftest import LogCapture

_PLAIN_HOST = re.compile(r"[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]")


def reference_policy(own: dict[str, int | None], blocked: frozenset[str], url: str) -> None:
    """The policy as it read every URL before the fast shape: through urlsplit (the reference)."""
    parts = urllib.parse.urlsplit(url)
    if "@" in parts.netloc:
        raise InvalidURL("a URL with a user name or password before the host is not accepted")
    host_and_port = parts.netloc.rsplit(":", 1)[0] if not parts.netloc.endswith("]") else parts.netloc
    if _PLAIN_HOST.fullmatch(host_and_port) is None:
        raise InvalidURL("the URL's host holds characters a browser would read differently (% or \\)")
    host = (parts.hostname or "").rstrip(".")
    address = ":" in host or ends_in_number(host)
    if address:
        named = canonical_host(host)
        if named is None:
            raise InvalidURL("the URL's host ends in a number but is no IP address a browser could open")
        host = named
    if host in own:
        port = parts.port
        if port is None or port in (80, 443) or port == own[host]:
            raise InvalidURL("a link to this service itself would loop")
    if blocked and address:
        if host in blocked:
            raise InvalidURL("links to this address are not accepted here")
    elif blocked:
        labels = host.split(".")
        for start in range(len(labels)):
            if ".".join(labels[start:]) in blocked:
                raise InvalidURL("links to this domain are not accepted here")


_urls = st.builds(
    lambda scheme, host, port, rest: f"{scheme}{host}{port}{rest}",
    st.sampled_from(["http://", "https://", "HTTP://"]),
    st.one_of(
        st.sampled_from(
            ["go.test", "GO.test.", "evil.example", "a.evil.example", "evil.example.", "ok.example"]
        ),
        st.from_regex(r"\A[A-Za-z0-9._-]{1,12}\Z"),
        st.text(alphabet="aZ0.-%@[]:\\", max_size=12),
    ),
    st.one_of(
        st.just(""),
        st.sampled_from([":80", ":443", ":8080", ":8081", ":0"]),
        st.from_regex(r"\A:[0-9]{0,6}\Z"),
    ),
    st.one_of(st.just(""), st.from_regex(r"\A[/?#][!-~]{0,20}\Z")),
)


@settings(max_examples=500)
@given(_urls)
@example("http://GO.test/x")
@example("http://go.test.:8080/x")
@example("http://go.test:8081/x")
@example("http://A.Evil.Example./")
@example("http://user@go.test/")
def test_the_policy_judges_every_url_as_urlsplit_does(url: str) -> None:
    """For every URL ``validate_url`` accepts, the policy refuses exactly what the urlsplit-based
    reference refuses, with the same reason (the fast shape changes nothing but the cost)."""
    try:
        url = validate_url(url)
    except InvalidURL:
        return
    policy = LinkPolicy(frozenset({"go.test:8080"}))
    policy.blocked = frozenset({"evil.example"})
    try:
        reference_policy({"go.test": 8080}, policy.blocked, url)
    except InvalidURL as exc:
        expected: str | None = str(exc)
    else:
        expected = None
    try:
        policy(url)
    except InvalidURL as exc:
        got: str | None = str(exc)
    else:
        got = None
    assert got == expected


def _policy(tmp_path: Path, *lines: str, own: str = "go.test:8080") -> LinkPolicy:
    block_file = tmp_path / "blocked.txt"
    block_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return LinkPolicy(frozenset({own}), str(block_file))


def _refusal(policy: LinkPolicy, url: str) -> str | None:
    try:
        policy(validate_url(url))
    except InvalidURL as exc:
        return str(exc)
    return None


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://2130706433/",
        "http://127.1/",
        "http://0x7f.0.0.1/",
        "http://0177.0.0.1/",
        "http://0x7F000001./x",
        "http://167772165/",
        "http://10.5/",
        "http://[::ffff:10.0.0.5]/",
        "http://[0:0:0:0:0:0:0:1]/",
        "http://[::0:1]:8000/",
    ],
)
def test_an_address_is_blocked_however_it_is_written(tmp_path: Path, url: str) -> None:
    """Browsers read all of these as 127.0.0.1, 10.0.0.5 or ::1 (review 33: they passed the block)."""
    policy = _policy(tmp_path, "127.0.0.1", "0x0a.0.0.5", "[::1]")
    assert _refusal(policy, url) == "links to this address are not accepted here"


@pytest.mark.parametrize(
    "url", ["http://127.0.0.2/", "http://2130706434/", "http://[::2]/", "http://1.127.0.0.1.example/"]
)
def test_other_addresses_and_names_pass(tmp_path: Path, url: str) -> None:
    assert _refusal(_policy(tmp_path, "127.0.0.1", "::1"), url) is None


def test_a_link_to_the_service_by_another_spelling_of_its_address_loops(tmp_path: Path) -> None:
    """With ``--host http://127.0.0.1:19620``, ``http://2130706433:19620/1`` is the service itself."""
    policy = _policy(tmp_path, own="127.0.0.1:19620")
    for url in ("http://2130706433:19620/1", "http://0x7f.1:19620/", "http://[::ffff:127.0.0.1]:19620/"):
        assert _refusal(policy, url) == "a link to this service itself would loop", url
    assert _refusal(policy, "http://2130706433:19621/1") is None


@pytest.mark.parametrize(
    "host", ["example.123", "1.2.3.4.5", "256.1.1.1", "1.0x100.1", "09.1.1.1", "example.0x"]
)
def test_a_host_ending_in_a_number_that_is_no_address_is_refused(tmp_path: Path, host: str) -> None:
    """Browsers refuse such a URL outright: it would never open, and it is no name to compare."""
    assert "no IP address" in (_refusal(_policy(tmp_path), f"http://{host}/") or "")


def test_unicode_domains_block_what_browsers_open(tmp_path: Path) -> None:
    """A block file's Unicode domain is converted as a URL's host is (IDNA 2008, UTS 46): ``straße``
    keeps its ß (``xn--strae-oqa``), a final sigma stays final (review 33: they passed)."""
    policy = _policy(tmp_path, "straße.example", "ςigma.example", "Bücher.Example")
    assert _refusal(policy, "http://straße.example/") == "links to this domain are not accepted here"
    assert _refusal(policy, "http://www.ςigma.example/") == "links to this domain are not accepted here"
    assert _refusal(policy, "http://xn--bcher-kva.example/") == "links to this domain are not accepted here"
    assert _refusal(policy, "http://strasse.example/") is None


@pytest.mark.parametrize(
    "line",
    ["evil.example:8080", "1.2.3.4:80", "[::g]", "a/b", "two words", "[fe80::1%eth0]:80", "fe80::1%eth0:80"],
)
def test_a_block_file_line_with_a_port_or_path_stops_the_file(tmp_path: Path, line: str) -> None:
    """A line meant to block (a domain with a port, say) must not be ignored: the file is refused
    (at start-up; on SIGHUP the list in force stays), as before (third read of review 33); an
    address with a zone ID and a port too (a hostile review, stop 42: it was ignored with a warning)."""
    with pytest.raises(ValueError, match="line 2: not a domain"):
        _policy(tmp_path, "ok.example", line)


@pytest.mark.parametrize(
    "line", ["example.123", "1.2.3.4.5", "a..b\u00fc", "\u2603.net", "fe80::1%eth0", "[fe80::1%25eth0]"]
)
def test_a_block_file_line_no_url_can_match_is_ignored_with_a_warning(
    tmp_path: Path, line: str, log_events: LogCapture
) -> None:
    """Such a line blocks nothing (no URL the service accepts has that host): the rest of the file
    is in force, and one warning names the first such line (a file that loaded before still does:
    the mutation audit of stop 41 found an address with a zone ID stopping the file as a port would)."""
    policy = _policy(tmp_path, "ok.example", line, "1.2.3.4.5.6")
    assert policy.blocked == frozenset({"ok.example"})
    assert _refusal(policy, f"http://{line.strip('[]')}/") is not None, "its URLs are refused anyway"
    [warning] = [message for message in log_events.messages() if "Ignoring" in message]
    assert "2 line(s)" in warning and "line 2" in warning


_NOTATIONS = st.sampled_from(["decimal", "octal", "hex"])


@given(st.integers(min_value=0, max_value=2**32 - 1), st.integers(min_value=1, max_value=4), st.data())
def test_canonical_host_reads_ipv4_as_the_url_standard_does(
    value: int, parts: int, data: st.DataObject
) -> None:
    """Any split of an address into 1 to 4 parts (the last holding the rest), each part in decimal,
    octal (leading 0) or hex (0x), is that address in dotted-decimal form."""
    octets = value.to_bytes(4, "big")
    numbers = [*octets[: parts - 1], int.from_bytes(octets[parts - 1 :], "big")]
    written = []
    for number in numbers:
        notation = data.draw(_NOTATIONS)
        written.append({"decimal": str(number), "octal": f"0{number:o}", "hex": f"0x{number:x}"}[notation])
    host = ".".join(written)
    assert ends_in_number(host)
    assert canonical_host(host) == str(ipaddress.IPv4Address(value))
