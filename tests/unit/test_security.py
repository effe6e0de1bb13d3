from __future__ import annotations

import base64
import json
from datetime import timedelta

import jwt
import pytest

from app.core.config import Settings
from app.core.security import (
    ACCESS,
    REFRESH,
    create_token,
    decode_token,
    hash_password,
    verify_password,
)

SETTINGS = Settings(secret_key="unit-test-secret-key-0123456789abcdef", bcrypt_rounds=4)


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_access_token_round_trip_carries_required_claims() -> None:
    token = create_token("42", ACCESS, timedelta(minutes=5), settings=SETTINGS)
    claims = decode_token(token, ACCESS, settings=SETTINGS)
    assert claims["sub"] == "42"
    assert claims["type"] == ACCESS
    assert {"exp", "iat", "jti"} <= set(claims)
    assert claims["exp"] - int(claims["iat"]) == 300


def test_decode_rejects_expired_token() -> None:
    token = create_token("1", ACCESS, timedelta(seconds=-1), settings=SETTINGS)
    with pytest.raises(jwt.ExpiredSignatureError):
        decode_token(token, ACCESS, settings=SETTINGS)


def test_decode_rejects_token_signed_with_other_key() -> None:
    other = Settings(secret_key="another-secret-key-0123456789abcdef")
    token = create_token("1", ACCESS, timedelta(minutes=5), settings=other)
    with pytest.raises(jwt.InvalidSignatureError):
        decode_token(token, ACCESS, settings=SETTINGS)


def test_decode_rejects_tampered_payload() -> None:
    token = create_token("1", ACCESS, timedelta(minutes=5), settings=SETTINGS)
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["sub"] = "2"
    with pytest.raises(jwt.InvalidSignatureError):
        decode_token(f"{header}.{_b64(claims)}.{signature}", ACCESS, settings=SETTINGS)


def test_decode_rejects_alg_none() -> None:
    claims = {"sub": "1", "type": ACCESS, "iat": 1, "exp": 9999999999, "jti": "x"}
    token = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."
    with pytest.raises(jwt.InvalidTokenError):
        decode_token(token, ACCESS, settings=SETTINGS)


def test_decode_rejects_other_hmac_algorithm() -> None:
    claims = {"sub": "1", "type": ACCESS, "iat": 1, "exp": 9999999999, "jti": "x"}
    token = jwt.encode(claims, SETTINGS.secret_key, algorithm="HS512")
    with pytest.raises(jwt.InvalidAlgorithmError):
        decode_token(token, ACCESS, settings=SETTINGS)


def test_decode_rejects_wrong_token_type() -> None:
    token = create_token("1", REFRESH, timedelta(minutes=5), settings=SETTINGS)
    with pytest.raises(jwt.InvalidTokenError, match="wrong token type"):
        decode_token(token, ACCESS, settings=SETTINGS)


def test_decode_rejects_token_missing_jti() -> None:
    token = jwt.encode(
        {"sub": "1", "type": ACCESS, "iat": 1, "exp": 9999999999}, SETTINGS.secret_key
    )
    with pytest.raises(jwt.MissingRequiredClaimError):
        decode_token(token, ACCESS, settings=SETTINGS)


async def test_password_hash_verifies_only_the_right_password() -> None:
    hashed = await hash_password("correct-horse-1", SETTINGS)
    assert hashed.startswith("$2b$04$")
    assert await verify_password("correct-horse-1", hashed)
    assert not await verify_password("wrong-horse-1", hashed)


async def test_verify_without_hash_and_overlong_password_are_false() -> None:
    assert not await verify_password("anything", None)
    hashed = await hash_password("x" * 72, SETTINGS)
    assert not await verify_password("x" * 73, hashed)


def test_production_refuses_default_or_short_secret() -> None:
    with pytest.raises(RuntimeError):
        Settings(environment="production").check_production_safety()
    with pytest.raises(RuntimeError):
        Settings(environment="production", secret_key="short").check_production_safety()
    servers = {"database_url": "postgresql+asyncpg://db/keel", "redis_url": "redis://r"}
    Settings(
        environment="production", secret_key="p" * 40, smtp_host="mail", **servers
    ).check_production_safety()
    Settings(environment="development").check_production_safety()


@pytest.mark.parametrize("rounds", [5, 6])
async def test_unknown_account_check_costs_the_configured_bcrypt_rounds(
    rounds: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stand-in hash for a missing account must have the cost of a real
    one (BCRYPT_ROUNDS), or an unknown email answers measurably faster."""
    import bcrypt

    from app.core import security

    checked = []
    real_checkpw = bcrypt.checkpw

    def spy(password: bytes, hashed: bytes) -> bool:
        checked.append(hashed)
        return real_checkpw(password, hashed)

    monkeypatch.setattr(security.bcrypt, "checkpw", spy)
    settings = SETTINGS.model_copy(update={"bcrypt_rounds": rounds})
    monkeypatch.setattr(security, "get_settings", lambda: settings)  # as login calls it
    real = await hash_password("correct-horse-1")
    assert await verify_password("correct-horse-1", None) is False
    (stand_in,) = checked
    assert stand_in.split(b"$")[2] == real.encode().split(b"$")[2] == b"%02d" % rounds
