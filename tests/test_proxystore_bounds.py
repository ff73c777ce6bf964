"""Issue 13: the slave remembers exactly ``cache_size`` keys its master answered
"disabled" (for good) and ``cache_size`` it answered "unknown" (for negative_ttl), no fewer: the
errbacks that record them (ProxyStore._not_got) were rewritten with isinstance, and only a test that
counts the keys answered locally tells a bound of cache_size from one of cache_size - 1."""

from __future__ import annotations

import pytest

from goto_tw.errors import GotoError, KeyDisabled, KeyNotFound
from tests.helpers import failure_of
from tests.test_proxystore import make


@pytest.mark.parametrize("error", [KeyDisabled, KeyNotFound])
def test_the_last_cache_size_refused_keys_are_all_answered_locally(error: type[GotoError]) -> None:
    store, master, _ = make(cache_size=3, negative_ttl=60.0)
    keys = ["k0", "k1", "k2", "k3"]
    for key in keys:
        asked = store.get(key)
        master.fail(error("no"))
        assert failure_of(asked).check(error)
    for key in keys[1:]:  # the newest three: none is asked again
        assert failure_of(store.get(key)).check(error)
    assert master.calls == []
    store.get(keys[0]).addErrback(lambda _: None)  # the oldest left the bound
    assert [(method, key) for method, key, _ in master.calls] == [("get", keys[0])]
    master.fail(error("no"))
