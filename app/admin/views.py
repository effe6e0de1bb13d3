"""The console's views. Nothing here creates, edits or deletes rows through
sqladmin's generic forms (every `can_create/can_edit/can_delete` is False, so
those routes answer 403); changes happen only through the operations below,
POST forms with a CSRF token, each running one function of app/admin/actions.py.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import partial
from typing import Any, Awaitable, Callable, ClassVar, Dict, List, Optional

from sqladmin import BaseView, ModelView, expose
from sqladmin.filters import StaticValuesFilter
from sqladmin.flash import Flash, FlashLevel
from sqlalchemy import Select, case
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from app.admin import actions, audit
from app.admin.models import AuditRecord
from app.admin.security import CSRF_FIELD, console_user, csrf_refused, csrf_valid
from app.core.db import db
from app.core.errors import AppError
from app.core.schemas import MAX_DB_ID
from app.jobs.models import DEAD, STATUSES, Job
from app.ledger.models import Account, LedgerEntry, Transfer
from app.ml import service as ml_service
from app.ml.serving import model_server
from app.payments.models import Payment, PaymentEvent
from app.posts.models import Post
from app.users.models import User

logger = logging.getLogger(__name__)

# An action: (session, actor, object id, client address) -> message for the operator.
Action = Callable[[AsyncSession, User, Any, Optional[str]], Awaitable[str]]


@dataclass(frozen=True)
class Operation:
    name: str
    label: str
    danger: bool = False


async def run_action(request: Request, action: Action, object_id: Any) -> None:
    """Run one action in its own transaction and flash the outcome. Domain
    refusals (4xx AppErrors) are shown; nothing of the action is committed.
    Dependency failures (503) propagate to the console's 503 page."""
    actor = console_user(request)
    address = audit.request_address(request)
    async with db.sessionmaker() as session:
        try:
            message = await action(session, actor, object_id, address)
            await session.commit()
        except AppError as exc:
            await session.rollback()
            if exc.status_code >= 500:
                raise
            detail = exc.detail if isinstance(exc.detail, str) else exc.message
            Flash.flash(request, detail, FlashLevel.error, title="Refused")
            return
    Flash.flash(request, message, FlashLevel.success, title="Done")


class ReadOnlyView(ModelView):
    can_create = False
    can_edit = False
    can_delete = False
    can_export = False
    page_size = 50
    page_size_options = [25, 50, 100]
    # Newest first (every console table has an `id` primary key).
    column_default_sort = [("id", True)]

    def sort_requested(self, request: Request) -> bool:
        """True when the request asks to sort by one of the sortable columns.
        sqladmin would sort by any attribute named in `sortBy` (the password
        hash, or a typo that fails with a 500): anything else is ignored."""
        return request.query_params.get("sortBy") in self._sort_fields

    def sort_query(self, stmt: Select, request: Request) -> Select:
        if request.query_params.get("sortBy") is not None and not self.sort_requested(request):
            request = Request({**request.scope, "query_string": b""})
        return super().sort_query(stmt, request)


class OperatedView(ReadOnlyView):
    """A view whose detail page offers `operations` as POST buttons."""

    details_template = "keel/details.html"
    keel_actions: ClassVar[Dict[str, Action]] = {}

    def operations(self, request: Request, obj: Any) -> List[Operation]:
        return []

    @expose("/operate/{pk:int}/{operation}", methods=["POST"])
    async def operate(self, request: Request) -> Response:
        form = await request.form()
        if not csrf_valid(request, form.get(CSRF_FIELD)):
            return csrf_refused()
        pk: int = request.path_params["pk"]
        action = self.keel_actions.get(request.path_params["operation"])
        if action is None or not 0 < pk <= MAX_DB_ID:
            return Response("Not found", status_code=404)
        await run_action(request, action, pk)
        url = request.url_for("admin:details", identity=self.identity, pk=str(pk))
        return RedirectResponse(url, status_code=303)


class UserAdmin(OperatedView, model=User):
    name, name_plural, icon = "User", "Users", "fa-solid fa-user"
    # Never the password hash.
    column_list = [
        User.id,
        User.email,
        User.name,
        User.is_active,
        User.is_superuser,
        User.created_at,
    ]
    column_details_list = [
        User.id,
        User.email,
        User.name,
        User.is_active,
        User.is_superuser,
        User.tokens_valid_after,
        User.created_at,
        User.updated_at,
    ]
    column_searchable_list = [User.email]
    column_sortable_list = [User.id, User.email, User.created_at]
    keel_actions = {
        "deactivate": partial(actions.set_user_active, active=False),
        "reactivate": partial(actions.set_user_active, active=True),
        "grant-superuser": partial(actions.set_superuser, grant=True),
        "revoke-superuser": partial(actions.set_superuser, grant=False),
    }

    def operations(self, request: Request, obj: Any) -> List[Operation]:
        if obj.id == console_user(request).id:
            return []
        ops = [
            Operation("deactivate", "Deactivate (ends every session)", danger=True)
            if obj.is_active
            else Operation("reactivate", "Reactivate"),
            Operation("revoke-superuser", "Revoke superuser", danger=True)
            if obj.is_superuser
            else Operation("grant-superuser", "Grant superuser"),
        ]
        return ops


class PostAdmin(OperatedView, model=Post):
    name, name_plural, icon = "Post", "Posts", "fa-solid fa-file-lines"
    column_list = [Post.id, Post.author_id, Post.title, Post.created_at]
    column_details_list = [
        Post.id,
        Post.author_id,
        Post.title,
        Post.body,
        Post.created_at,
        Post.updated_at,
    ]
    column_searchable_list = [Post.title, Post.body]
    column_sortable_list = [Post.id, Post.created_at]
    keel_actions = {"delete": actions.delete_post}

    def operations(self, request: Request, obj: Any) -> List[Operation]:
        return [Operation("delete", "Delete post", danger=True)]


def _payload_summary(job: Any, attribute: Any) -> str:
    text = json.dumps(job.payload, sort_keys=True, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def _short_error(job: Any, attribute: Any) -> str:
    error = job.last_error or ""
    return error if len(error) <= 80 else error[:77] + "..."


class JobAdmin(OperatedView, model=Job):
    name, name_plural, icon = "Job", "Jobs", "fa-solid fa-gears"
    column_list = [
        Job.id,
        Job.kind,
        Job.status,
        Job.attempts,
        Job.deliveries,
        Job.last_error,
        Job.payload,
        Job.owner_id,
        Job.updated_at,
    ]
    column_details_list = [
        Job.id,
        Job.kind,
        Job.status,
        Job.attempts,
        Job.deliveries,
        Job.last_error,
        Job.payload,
        Job.owner_id,
        Job.available_at,
        Job.published_at,
        Job.created_at,
        Job.updated_at,
    ]
    column_formatters = {Job.payload: _payload_summary, Job.last_error: _short_error}
    column_filters = [
        StaticValuesFilter(Job.status, values=[(s, s) for s in STATUSES], title="Status")
    ]
    column_searchable_list = [Job.kind]
    column_sortable_list = [Job.id, Job.status, Job.attempts, Job.updated_at]
    keel_actions = {"retry": actions.retry_job}

    def sort_query(self, stmt: Select, request: Request) -> Select:
        if self.sort_requested(request):
            return super().sort_query(stmt, request)
        # Dead letters first, newest first within each group.
        return stmt.order_by(case((Job.status == DEAD, 0), else_=1), Job.id.desc())

    def operations(self, request: Request, obj: Any) -> List[Operation]:
        return [Operation("retry", "Retry")] if obj.status == DEAD else []


class RecordView(ReadOnlyView):
    """Every column: for tables that hold nothing secret (records, not users)."""

    column_list = "__all__"


class AccountAdmin(RecordView, model=Account):
    name, name_plural, icon = "Account", "Accounts", "fa-solid fa-wallet"


class TransferAdmin(RecordView, model=Transfer):
    name, name_plural, icon = "Transfer", "Transfers", "fa-solid fa-right-left"


class LedgerEntryAdmin(RecordView, model=LedgerEntry):
    name, name_plural, icon = "Ledger entry", "Ledger entries", "fa-solid fa-book"


class PaymentAdmin(RecordView, model=Payment):
    name, name_plural, icon = "Payment", "Payments", "fa-solid fa-credit-card"


class PaymentEventAdmin(RecordView, model=PaymentEvent):
    name, name_plural, icon = "Payment event", "Payment events", "fa-solid fa-bell"


class AuditAdmin(RecordView, model=AuditRecord):
    name, name_plural, icon = "Audit record", "Audit", "fa-solid fa-clipboard-list"
    column_searchable_list = [AuditRecord.action, AuditRecord.actor_email, AuditRecord.object_id]


class ModelsView(BaseView):
    """Registered model versions (the registry is files, not a table)."""

    name, icon = "Models", "fa-solid fa-brain"

    @expose("/models", methods=["GET"], identity="models")
    async def models_page(self, request: Request) -> Response:
        models = await ml_service.list_models(model_server)
        return await self.templates.TemplateResponse(
            request, "keel/models.html", {"models": models, "title": "Models"}
        )

    @expose("/models/activate", methods=["POST"], identity="models-activate")
    async def activate(self, request: Request) -> Response:
        form = await request.form()
        if not csrf_valid(request, form.get(CSRF_FIELD)):
            return csrf_refused()
        version = form.get("version")
        if not isinstance(version, str) or not 0 < len(version) <= 128:
            return Response("Bad request", status_code=400)
        await run_action(request, actions.activate_model, version)
        return RedirectResponse(request.url_for("admin:models"), status_code=303)


VIEWS = [
    UserAdmin,
    PostAdmin,
    JobAdmin,
    ModelsView,
    AccountAdmin,
    TransferAdmin,
    LedgerEntryAdmin,
    PaymentAdmin,
    PaymentEventAdmin,
    AuditAdmin,
]
