"""Imports every domain's models so Base.metadata is complete (Alembic, tests)."""

from app.auth.models import RefreshToken
from app.core.db import Base
from app.posts.models import Post
from app.users.models import User

__all__ = ["Base", "RefreshToken", "Post", "User"]
