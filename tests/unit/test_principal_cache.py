from __future__ import annotations

import time

from app.auth.principal import Principal, PrincipalCache


def test_cached_standing_expires_after_its_ttl() -> None:
    cache = PrincipalCache()
    principal = Principal(id=7, is_superuser=False, tokens_valid_after=None)
    cache.put(7, principal, ttl=0.05)
    assert cache.get(7) == (True, principal)
    time.sleep(0.06)
    assert cache.get(7) == (False, None)


def test_unknown_user_is_cached_as_none_and_invalidation_drops_entries() -> None:
    cache = PrincipalCache()
    cache.put(8, None, ttl=10)
    assert cache.get(8) == (True, None)
    cache.invalidate(8)
    assert cache.get(8) == (False, None)


def test_zero_ttl_disables_caching() -> None:
    cache = PrincipalCache()
    cache.put(9, Principal(id=9, is_superuser=True, tokens_valid_after=None), ttl=0)
    assert cache.get(9) == (False, None)
