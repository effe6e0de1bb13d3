from __future__ import annotations

import time
from typing import Any, List, Tuple

from app.auth.principal import Principal, PrincipalCache, TokenCache


def _cache_on_a_hand_clock() -> Tuple[PrincipalCache, List[float]]:
    """A cache whose clock moves only when the test moves it."""
    cache = PrincipalCache()
    now = [1000.0]
    cache.clock = lambda: now[0]
    return cache, now


def test_cached_standing_expires_after_its_ttl() -> None:
    cache, now = _cache_on_a_hand_clock()
    principal = Principal(
        id=7, is_superuser=False, tokens_valid_after=None, email="u@example.com", name="u"
    )
    cache.put(7, principal, ttl=0.05)
    now[0] += 0.049
    assert cache.get(7) == (True, principal)
    now[0] += 0.002
    assert cache.get(7) == (False, None)


def test_unknown_user_is_cached_as_none_and_invalidation_drops_entries() -> None:
    cache = PrincipalCache()
    cache.put(8, None, ttl=10)
    assert cache.get(8) == (True, None)
    cache.invalidate(8)
    assert cache.get(8) == (False, None)


def test_zero_ttl_disables_caching() -> None:
    cache = PrincipalCache()
    cache.put(
        9,
        Principal(
            id=9, is_superuser=True, tokens_valid_after=None, email="u@example.com", name="u"
        ),
        ttl=0,
    )
    assert cache.get(9) == (False, None)


def _settings(secret: str = "s" * 32, algorithm: str = "HS256") -> Any:
    from app.core.config import Settings

    return Settings(secret_key=secret, jwt_algorithm=algorithm)


def test_verified_token_is_served_from_cache_until_its_exp() -> None:
    cache = TokenCache()
    settings = _settings()
    assert cache.get("tok", settings) is None
    cache.put("tok", 5, 100.5, int(time.time()) + 60)
    assert cache.get("tok", settings) == (5, 100.5)
    cache.put("old", 5, 100.5, int(time.time()))  # exp reached: PyJWT rejects it too
    assert cache.get("old", settings) is None


def test_token_cache_forgets_everything_when_the_signing_key_changes() -> None:
    cache = TokenCache()
    cache.get("tok", _settings())
    cache.put("tok", 5, 1.0, int(time.time()) + 60)
    assert cache.get("tok", _settings("t" * 32)) is None
    assert cache.get("tok", _settings()) is None  # not restored by switching back
    cache.put("tok", 5, 1.0, int(time.time()) + 60)
    assert cache.get("tok", _settings(algorithm="HS512")) is None


def test_token_cache_is_bounded() -> None:
    cache = TokenCache(max_entries=3)
    settings = _settings()
    cache.get("t0", settings)
    for n in range(4):
        cache.put(f"t{n}", n + 1, 1.0, int(time.time()) + 60)
    assert cache.get("t3", settings) == (4, 1.0)
    assert cache.get("t0", settings) is None
    cache.clear()
    assert cache.get("t3", settings) is None


def test_verify_access_token_rejects_forged_expired_and_odd_subjects() -> None:
    from datetime import timedelta

    import pytest

    from app.auth.principal import token_cache, verify_access_token
    from app.core.errors import InvalidToken
    from app.core.security import ACCESS, REFRESH, create_token

    token_cache.clear()
    good = create_token("7", ACCESS, timedelta(minutes=5))
    assert verify_access_token(good)[0] == 7
    assert verify_access_token(good)[0] == 7  # second time from the cache
    for bad in (
        good + "x",
        create_token("7", ACCESS, timedelta(seconds=-1)),
        create_token("7", REFRESH, timedelta(minutes=5)),
        create_token("0", ACCESS, timedelta(minutes=5)),
        create_token("abc", ACCESS, timedelta(minutes=5)),
        create_token(str(2**63), ACCESS, timedelta(minutes=5)),
    ):
        with pytest.raises(InvalidToken):
            verify_access_token(bad)


def test_an_entry_in_its_second_half_is_served_and_due_for_refresh() -> None:
    cache, now = _cache_on_a_hand_clock()
    principal = Principal(
        id=3, is_superuser=False, tokens_valid_after=None, email="u@example.com", name="u"
    )
    cache.put(3, principal, ttl=0.2)
    now[0] += 0.09
    assert cache.lookup(3) == (True, principal, False)
    now[0] += 0.02
    assert cache.lookup(3) == (True, principal, True)
    now[0] += 0.1
    assert cache.lookup(3) == (False, None, False)


def test_a_load_from_before_an_invalidation_is_not_stored() -> None:
    cache = PrincipalCache()
    principal = Principal(
        id=4, is_superuser=False, tokens_valid_after=None, email="u@example.com", name="u"
    )
    started = cache.generation
    cache.invalidate(4)  # e.g. sessions revoked while the read was in flight
    cache.put(4, principal, ttl=10, generation=started)
    assert cache.get(4) == (False, None)
    cache.put(4, principal, ttl=10, generation=cache.generation)
    assert cache.get(4) == (True, principal)
