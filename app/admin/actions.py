"""What the console's buttons do. Each action runs in the caller's session
(committed by the caller), goes through the same domain code as the API and
writes its audit record in the same transaction. Each takes (session, actor,
object id, client address), the shape app/admin/views.py runs.

Errors are the domain's AppErrors (NotFound, Conflict, ...); the console
shows their message and nothing is committed.
"""

from __future__ import annotations

from typing import Optional

from sqlalchemy.ext.asyncio import AsyncSession

from app.admin import audit
from app.admin.audit import CONSOLE
from app.auth import service as auth_service
from app.auth.principal import principal_cache
from app.core.errors import Conflict, NotFound
from app.jobs import service as jobs_service
from app.ml import service as ml_service
from app.ml.serving import model_server
from app.posts import repository as posts_repository
from app.users.models import User


class NotOnYourself(Conflict):
    code = "not_on_yourself"
    message = "You cannot do this to your own account"


async def _user_to_change(session: AsyncSession, actor: User, user_id: int) -> User:
    """The user, locked for the change. Never the actor: an operator cannot
    lock themself out or drop their own rights."""
    if user_id == actor.id:
        raise NotOnYourself()
    user = await session.get(User, user_id, with_for_update=True)
    if user is None:
        raise NotFound("User not found")
    return user


async def _user_changed(
    session: AsyncSession, actor: User, user: User, action: str, address: Optional[str]
) -> None:
    # The auth cache must not keep serving the old rights or status.
    principal_cache.invalidate(user.id)
    await audit.record(session, actor, action, "user", user.id, address=address, channel=CONSOLE)


async def set_user_active(
    session: AsyncSession, actor: User, user_id: int, address: Optional[str], *, active: bool
) -> str:
    """Deactivate (ending every session, as a password reset does) or
    reactivate an account. Not on yourself."""
    user = await _user_to_change(session, actor, user_id)
    if user.is_active == active:
        return f"{user.email} is already {'active' if active else 'deactivated'}"
    user.is_active = active
    if not active:
        await auth_service.revoke_sessions(session, user)
    await _user_changed(
        session, actor, user, "user.reactivate" if active else "user.deactivate", address
    )
    return f"{user.email} {'reactivated' if active else 'deactivated; every session ended'}"


async def set_superuser(
    session: AsyncSession, actor: User, user_id: int, address: Optional[str], *, grant: bool
) -> str:
    """Grant or revoke superuser rights. Not on yourself."""
    user = await _user_to_change(session, actor, user_id)
    if user.is_superuser == grant:
        return f"{user.email} {'is' if grant else 'is not'} a superuser already"
    user.is_superuser = grant
    await _user_changed(
        session, actor, user, "user.grant_superuser" if grant else "user.revoke_superuser", address
    )
    return f"{user.email} {'is now' if grant else 'is no longer'} a superuser"


async def delete_post(
    session: AsyncSession, actor: User, post_id: int, address: Optional[str]
) -> str:
    post = await posts_repository.get_post(session, post_id, for_update=True)
    if post is None:
        raise NotFound("Post not found")
    detail = f"author {post.author_id}: {post.title}"
    await posts_repository.delete_post(session, post)
    await audit.record(
        session,
        actor,
        "post.delete",
        "post",
        post_id,
        address=address,
        channel=CONSOLE,
        detail=detail,
    )
    return f"Post {post_id} deleted"


async def retry_job(session: AsyncSession, actor: User, job_id: int, address: Optional[str]) -> str:
    """The service behind `POST /api/jobs/{id}/retry`: published after commit."""
    job = await jobs_service.retry_job(session, job_id=job_id)
    await audit.record(session, actor, "job.retry", "job", job.id, address=address, channel=CONSOLE)
    return f"Job {job.id} queued again"


async def activate_model(
    session: AsyncSession, actor: User, version: str, address: Optional[str]
) -> str:
    """The service and checks behind `POST /api/models/{version}/activate`.
    On ModelNotFound or ModelInvalid the old model keeps serving."""
    # Recorded first, as the API does: a refused activation rolls it back.
    await audit.record(
        session, actor, "model.activate", "model", version, address=address, channel=CONSOLE
    )
    manifest = await ml_service.activate_model(model_server, version)
    return f"Now serving model {manifest.get('version', version)}"
