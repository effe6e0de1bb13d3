from typing import Optional

from fastapi import Form
from pydantic import BaseModel, Field


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
