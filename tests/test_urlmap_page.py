"""Paging through a URLMap (``GET /api/v1/links``): every link once, in the documented order."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from goto_tw.keys import is_valid_key, key_for_index
from goto_tw.urlmap import URLMap, canonical_index

#: Custom keys: valid keys that are not a counter's key (letters, digits, '-' and '_').
_custom_keys = st.text("ab-_0xYZ9", min_size=1, max_size=6).filter(
    lambda key: is_valid_key(key) and canonical_index(key) is None
)


def _every_page(urls: URLMap, limit: int) -> list[str]:
    keys: list[str] = []
    after = None
    while True:
        page = urls.page(after, limit)
        keys += [key for key, _ in page]
        if len(page) < limit:
            return keys
        after = page[-1][0]


@settings(max_examples=200, deadline=None)
@given(
    counters=st.integers(0, 30),
    before=st.sets(_custom_keys, max_size=20),
    after=st.sets(_custom_keys, max_size=20),
    limit=st.integers(1, 7),
)
def test_pages_visit_every_link_once_in_order_as_custom_keys_come(
    counters: int, before: set[str], after: set[str], limit: int
) -> None:
    """Counter keys by their number, then custom keys sorted, each once, with limit-sized pages; custom
    keys added after a page was served (review 35 keeps their order as they come, where each page
    sorted them all again) take their place in that order."""
    urls = URLMap()
    for index in range(counters):
        urls.add(key_for_index(index), f"https://c.example/{index}")
    for key in sorted(before):
        urls.add_custom(key, f"https://o.example/{key}", 0.0)
    urls.page(None, 1 + counters)  # a page that reaches the custom keys: their order is made now
    for key in sorted(after - before, reverse=True):
        urls.add_custom(key, f"https://o.example/{key}", 0.0)
    customs = sorted(before | after)
    canonical = [key_for_index(index) for index in range(counters)]
    assert _every_page(urls, limit) == canonical + customs
    assert all(urls[key] == f"https://o.example/{key}" for key in customs)
