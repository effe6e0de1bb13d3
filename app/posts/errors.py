"""Errors of the posts domain (codes and statuses in docs/api.md)."""

from __future__ import annotations

from app.core.errors import (
    Forbidden,
    NotFound,
)


class NotAuthor(Forbidden):
    code = "not_author"
    message = "Only the author may change this post"


class PostNotFound(NotFound):
    message = "Post not found"
