"""The link policy (blocklist, loop check): the common URL shape is judged as urlsplit judges it."""

from __future__ import annotations

import re
import urllib.parse

from hypothesis import example, given, settings
from hypothesis import strategies as st

from goto_tw.blocklist import LinkPolicy
from goto_tw.errors import InvalidURL
from goto_tw.urls import validate_url

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
    if host in own:
        port = parts.port
        if port is None or port in (80, 443) or port == own[host]:
            raise InvalidURL("a link to this service itself would loop")
    if blocked:
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
