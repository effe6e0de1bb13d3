from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.posts.schemas import PostCreate, PostUpdate
from app.users.schemas import UserCreate


@pytest.mark.parametrize(
    "payload",
    [
        {"email": "not-an-email", "password": "password1", "name": "A"},
        {"email": "a@example.com", "password": "short", "name": "A"},
        {"email": "a@example.com", "password": "é" * 37, "name": "A"},  # 74 bytes
        {"email": "a@example.com", "password": "password1", "name": ""},
        {"email": "a@example.com", "password": "password1", "name": "   "},
        {"email": "a@example.com", "password": 12345678, "name": "A"},
        {"email": "a@example.com", "name": "A"},
    ],
)
def test_user_create_rejects_bad_input(payload: dict) -> None:
    with pytest.raises(ValidationError):
        UserCreate.model_validate(payload)


def test_user_create_accepts_72_byte_password_and_strips_name() -> None:
    user = UserCreate(email="a@example.com", password="x" * 72, name="  Ann ")
    assert user.name == "Ann"


@pytest.mark.parametrize(
    "payload",
    [{"title": ""}, {"title": "   "}, {"title": "x" * 201}, {"title": "t", "body": "x" * 50_001}],
)
def test_post_create_rejects_bad_input(payload: dict) -> None:
    with pytest.raises(ValidationError):
        PostCreate.model_validate(payload)


def test_post_update_allows_omission_but_not_null() -> None:
    assert PostUpdate.model_validate({}).model_fields_set == set()
    with pytest.raises(ValidationError):
        PostUpdate.model_validate({"title": None})
