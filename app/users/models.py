from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, List, Optional

from sqlalchemy import Boolean, DateTime, String, false, true
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.core.db import Base
from app.core.models import TimestampMixin

if TYPE_CHECKING:
    from app.posts.models import Post


class User(TimestampMixin, Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Stored lowercased: the unique constraint is then case-insensitive.
    email: Mapped[str] = mapped_column(String(320), unique=True, nullable=False)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    password_hash: Mapped[str] = mapped_column(String(100), nullable=False)
    is_active: Mapped[bool] = mapped_column(Boolean, server_default=true(), nullable=False)
    is_superuser: Mapped[bool] = mapped_column(Boolean, server_default=false(), nullable=False)
    # Access tokens issued before this instant are refused (password reset, logout-all).
    tokens_valid_after: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))

    posts: Mapped[List[Post]] = relationship(lazy="raise", order_by="desc(Post.id)")

    def __repr__(self) -> str:  # never include the hash
        return f"User(id={self.id!r})"
