from __future__ import annotations

from datetime import datetime
from typing import List

from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator

from app.core.security import MAX_PASSWORD_BYTES


def check_password_strength(value: str) -> str:
    if len(value) < 8:
        raise ValueError("password must be at least 8 characters")
    if len(value.encode("utf-8")) > MAX_PASSWORD_BYTES:
        raise ValueError(f"password must be at most {MAX_PASSWORD_BYTES} bytes in UTF-8")
    return value


class UserCreate(BaseModel):
    model_config = ConfigDict(regex_engine="python-re")

    email: EmailStr = Field(max_length=320)
    password: str = Field(
        min_length=8,
        max_length=MAX_PASSWORD_BYTES,
        description="8 to 72 characters, and at most 72 bytes in UTF-8 (bcrypt's limit)",
    )
    name: str = Field(min_length=1, max_length=100, pattern=r"\S")

    @field_validator("password")
    @classmethod
    def _password(cls, value: str) -> str:
        return check_password_strength(value)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("name must not be empty")
        return value


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    email: str
    name: str


class PostSummary(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    title: str
    created_at: datetime


class PublicProfile(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    posts: List[PostSummary]
