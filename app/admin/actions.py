"""What the console's buttons do. Each action runs in the caller's session
(committed by the caller), goes through the same domain code as the API and
writes its audit record in the same transaction.

Errors are the domain's AppErrors (NotFound, Conflict, ...); the console
shows their message and nothing is committed.
"""

from __future__ import annotations

from typing import Optional

from sqlalchemy.ext.asyncio import AsyncSession

from app.admin import audit
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


async def _locked_user(session: AsyncSession, user_id: int) -> User:
    user = await session.get(User, user_id, with_for_update=True)
    if user is None:
        raise NotFound("User not found")
    return user


async def set_user_active(
    session: AsyncSession, *, actor: User, user_id: int, active: bool, address: Optional[str]
) -> str:
    """Deactivate (ending every session, as a password reset does) or
    reactivate an account. Not on yourself."""
    if user_id == actor.id:
        raise NotOnYourself()
    user = await _locked_user(session, user_id)
    if user.is_active == active:
        return f"{user.email} is already {'active' if active else 'deactivated'}"
    user.is_active = active
    if not active:
        await auth_service.revoke_sessions(session, user)
    principal_cache.invalidate(user.id)
    await audit.record(
        session,
        actor=actor,
        action="user.reactivate" if active else "user.deactivate",
        object_type="user",
        object_id=user.id,
        address=address,
        channel=audit.CONSOLE,
    )
    return f"{user.email} {'reactivated' if active else 'deactivated; every session ended'}"


async def set_superuser(
    session: AsyncSession, *, actor: User, user_id: int, grant: bool, address: Optional[str]
) -> str:
    """Grant or revoke superuser rights. Not on yourself."""
    if user_id == actor.id:
        raise NotOnYourself()
    user = await _locked_user(session, user_id)
    if user.is_superuser == grant:
        return f"{user.email} {'is' if grant else 'is not'} a superuser already"
    user.is_superuser = grant
    principal_cache.invalidate(user.id)
    await audit.record(
        session,
        actor=actor,
        action="user.grant_superuser" if grant else "user.revoke_superuser",
        object_type="user",
        object_id=user.id,
        address=address,
        channel=audit.CONSOLE,
    )
    return f"{user.email} {'is now' if grant else 'is no longer'} a superuser"


async def delete_post(
    session: AsyncSession, *, actor: User, post_id: int, address: Optional[str]
) -> str:
    post = await posts_repository.get_post(session, post_id, for_update=True)
    if post is None:
        raise NotFound("Post not found")
    detail = f"author {post.author_id}: {post.title}"
    await posts_repository.delete_post(session, post)
    await audit.record(
        session,
        actor=actor,
        action="post.delete",
        object_type="post",
        object_id=post_id,
        address=address,
        channel=audit.CONSOLE,
        detail=detail,
    )
    return f"Post {post_id} deleted"


async def retry_job(
    session: AsyncSession, *, actor: User, job_id: int, address: Optional[str]
) -> str:
    """The service behind `POST /api/jobs/{id}/retry`: published after commit."""
    job = await jobs_service.retry_job(session, job_id=job_id)
    await audit.record(
        session,
        actor=actor,
        action="job.retry",
        object_type="job",
        object_id=job.id,
        address=address,
        channel=audit.CONSOLE,
    )
    return f"Job {job.id} queued again"


async def activate_model(
    session: AsyncSession, *, actor: User, version: str, address: Optional[str]
) -> str:
    """The service and checks behind `POST /api/models/{version}/activate`.
    On ModelNotFound or ModelInvalid the old model keeps serving."""
    # Recorded first, as the API does: a refused activation rolls it back.
    await audit.record(
        session,
        actor=actor,
        action="model.activate",
        object_type="model",
        object_id=version,
        address=address,
        channel=audit.CONSOLE,
    )
    manifest = await ml_service.activate_model(model_server, version)
    return f"Now serving model {manifest.get('version', version)}"
