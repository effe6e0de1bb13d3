from __future__ import annotations

from pydantic import BaseModel, EmailStr, Field, field_validator

from app.users.schemas import check_password_strength


class TokenPair(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int
    refresh_token: str


class RefreshRequest(BaseModel):
    refresh_token: str = Field(min_length=1, max_length=512)


class PasswordResetRequest(BaseModel):
    email: EmailStr = Field(max_length=320)


class PasswordResetConfirm(BaseModel):
    token: str = Field(min_length=1, max_length=256)
    new_password: str = Field(max_length=1000)

    @field_validator("new_password")
    @classmethod
    def _password(cls, value: str) -> str:
        return check_password_strength(value)


class ResetAccepted(BaseModel):
    message: str = "If the account exists, a reset email is on its way"
