from typing import Optional

from fastapi import Form
from pydantic import BaseModel, EmailStr, Field, field_validator

from app.core.security import MAX_PASSWORD_BYTES
from app.users.schemas import check_password_strength


class TokenPair(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int
    refresh_token: str


class RefreshRequest(BaseModel):
    refresh_token: str = Field(min_length=1, max_length=512)


class PasswordLoginForm:
    """OAuth2 password-flow form (`username` is the email) with explicit
    bounds, so the documented schema matches what is accepted."""

    def __init__(
        self,
        username: str = Form(min_length=1, max_length=320),
        password: str = Form(min_length=1, max_length=1024),
        grant_type: Optional[str] = Form(None, pattern="^password$"),
        scope: str = Form(""),
        client_id: Optional[str] = Form(None),
        client_secret: Optional[str] = Form(None),
    ) -> None:
        self.username = username
        self.password = password
        self.scopes = scope.split()


class PasswordResetRequest(BaseModel):
    email: EmailStr = Field(max_length=320)


class PasswordResetConfirm(BaseModel):
    token: str = Field(min_length=1, max_length=256)
    new_password: str = Field(min_length=8, max_length=MAX_PASSWORD_BYTES)

    @field_validator("new_password")
    @classmethod
    def _password(cls, value: str) -> str:
        return check_password_strength(value)


class ResetAccepted(BaseModel):
    message: str = "If the account exists, a reset email is on its way"
