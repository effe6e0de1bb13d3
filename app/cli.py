"""The `keel` command (also `python -m app`)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import List, Optional, Tuple

from app.core.config import UnsafeSettings, get_settings


def cmd_migrate(args: argparse.Namespace) -> int:
    from app.core.migrations import downgrade, upgrade

    if args.downgrade:
        downgrade(revision=args.revision or "-1")
    else:
        upgrade(revision=args.revision or "head")
    return 0


def memory_backed_dir() -> Optional[str]:
    """/dev/shm where it is a writable directory (Linux), else None: files
    written often (gunicorn's heartbeat, the multiprocess metrics) never wait
    on disk writeback there."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None


def cmd_serve(args: argparse.Namespace) -> int:
    """Production server: gunicorn managing uvicorn workers (app/gunicorn_conf.py)."""
    settings = get_settings()
    settings.check_production_safety()
    if args.workers:
        os.environ["KEEL_WORKERS"] = str(args.workers)
    if args.host or args.port:
        os.environ["KEEL_BIND"] = f"{args.host or settings.host}:{args.port or settings.port}"
    metrics_dir = None
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Each worker writes its metrics here; /metrics aggregates them.
        metrics_dir = tempfile.mkdtemp(prefix="keel-metrics-", dir=memory_backed_dir())
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    # gunicorn runs in this process (no exec): a second interpreter would
    # import the settings machinery again before the app's own import.
    from gunicorn.app.wsgiapp import WSGIApplication

    master = os.getpid()
    sys.argv = ["gunicorn", "-c", "python:app.gunicorn_conf", "app.main:app"]
    try:
        WSGIApplication("%(prog)s [OPTIONS] [APP_MODULE]", prog="keel serve").run()
    finally:
        # Workers leave through here too (gunicorn forks inside run()).
        if metrics_dir and os.getpid() == master:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


class CommandError(Exception):
    """A failure the command reports in one line (exit status 1), not a traceback."""


SUPERUSER_PASSWORD_ENV = "KEEL_SUPERUSER_PASSWORD"


def read_superuser_password(args: argparse.Namespace) -> str:
    """The new account's password: --password-stdin, --password, the
    environment, or (on a terminal only) a prompt asked twice."""
    if args.password_stdin:
        line = sys.stdin.readline()
        return line[:-1] if line.endswith("\n") else line
    if args.password:
        return str(args.password)
    from_env = os.environ.get(SUPERUSER_PASSWORD_ENV)
    if from_env:
        return from_env
    if not sys.stdin.isatty():
        raise CommandError(
            f"no password given: use --password-stdin or set {SUPERUSER_PASSWORD_ENV}"
        )
    password = getpass.getpass("Password: ")
    if getpass.getpass("Password (again): ") != password:
        raise CommandError("the passwords do not match")
    return password


async def _promote_existing(email: str) -> Optional[Tuple[int, bool]]:
    """(id, was already a superuser) of the account with this email, promoted
    to superuser; None when there is no such account."""
    from app.core.db import db
    from app.users.service import find_user_by_email

    try:
        async with db.sessionmaker() as session:
            user = await find_user_by_email(session, email)
            if user is None:
                return None
            already = user.is_superuser
            user.is_superuser = True
            await session.commit()
            return user.id, already
    finally:
        await db.dispose()


async def _create_superuser(email: str, password: str, name: str) -> int:
    from app.core.db import db
    from app.users.service import create_user

    try:
        async with db.sessionmaker() as session:
            user = await create_user(
                session, email=email, password=password, name=name, is_superuser=True
            )
            await session.commit()
            return user.id
    finally:
        await db.dispose()


def cmd_create_superuser(args: argparse.Namespace) -> int:
    """Create a superuser, or promote the existing account with that email
    (its password is then left as it is): safe to run on every deploy."""
    from pydantic import ValidationError
    from sqlalchemy.exc import DBAPIError

    from app.users.errors import EmailTaken
    from app.users.schemas import UserCreate
    from app.users.service import normalize_email

    email = normalize_email(args.email)
    try:
        try:
            promoted = asyncio.run(_promote_existing(email))
            if promoted is not None:
                user_id, already = promoted
                state = "is already a superuser" if already else "promoted to superuser"
                print(f"{email} (id {user_id}) {state}; password unchanged")
                return 0
            password = read_superuser_password(args)
            try:
                valid = UserCreate(email=email, password=password, name=args.name)
            except ValidationError as exc:
                problems = "; ".join(f"{e['loc'][-1]}: {e['msg']}" for e in exc.errors())
                raise CommandError(problems) from exc
            user_id = asyncio.run(_create_superuser(valid.email, valid.password, valid.name))
        except EmailTaken as exc:
            raise CommandError(f"{email} was created meanwhile: run the command again") from exc
        except (DBAPIError, OSError) as exc:
            raise CommandError(f"cannot reach the database: {exc}") from exc
    except CommandError as exc:
        print(f"create-superuser: {exc}", file=sys.stderr)
        return 1
    print(f"superuser {email} created with id {user_id}")
    return 0


def cmd_train_model(args: argparse.Namespace) -> int:
    """Train, evaluate, export to ONNX, parity-check and register a model."""
    from app.ml.errors import ArtifactError
    from app.ml.training import train_model

    model_dir = args.model_dir or get_settings().resolved_model_dir
    if args.if_missing:
        from app.ml.registry import Registry

        if Registry(model_dir).versions():
            print(f"train-model: {model_dir} already has a model; nothing to do")
            return 0
    try:
        manifest = train_model(model_dir, kind=args.kind, seed=args.seed, activate=args.activate)
    except ArtifactError as exc:
        print(f"train-model: not registered: {exc}", file=sys.stderr)
        return 1
    metrics = ", ".join(f"{k}={v}" for k, v in manifest["metrics"].items())
    print(f"registered {manifest['version']} ({manifest['name']}) in {model_dir}: {metrics}")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """A Celery worker for the job queue (also runs the outbox sweep)."""
    from app.worker import QUEUE, celery_app

    settings = get_settings()
    settings.check_production_safety()
    argv = ["worker", "--loglevel", args.loglevel, "--pool", args.pool, "--queues", QUEUE]
    # No mingle/gossip: workers share nothing but the queue, and start faster.
    argv += ["--without-mingle", "--without-gossip"]
    concurrency = args.concurrency or settings.worker_concurrency
    if concurrency:
        argv += ["--concurrency", str(concurrency)]
    if args.hostname:
        argv += ["--hostname", args.hostname]
    celery_app.worker_main(argv)
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    from app.dev.launcher import run_dev

    return run_dev(port=args.port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="keel", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("migrate", help="apply database migrations")
    p.add_argument("revision", nargs="?", help="target revision (default: head)")
    p.add_argument("--downgrade", action="store_true", help="downgrade instead (default: -1)")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("serve", help="run the API under gunicorn with uvicorn workers")
    p.add_argument("--workers", type=int)
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "create-superuser",
        help="create a superuser, or promote the existing account with this email",
    )
    p.add_argument("--email", required=True)
    p.add_argument("--name", default="Admin")
    p.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input",
    )
    p.add_argument(
        "--password",
        help=f"visible to other local users in the process list: prefer --password-stdin "
        f"or ${SUPERUSER_PASSWORD_ENV} (default: a prompt on a terminal)",
    )
    p.set_defaults(func=cmd_create_superuser)

    p = sub.add_parser("train-model", help="train and register a model version (ONNX)")
    p.add_argument("--kind", choices=["logreg", "forest"], default="logreg")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--activate",
        action="store_true",
        help="serve this version (the first version registered is always activated)",
    )
    p.add_argument("--model-dir", type=Path, help="default: MODEL_DIR or .keel/models")
    p.add_argument("--if-missing", action="store_true", help="do nothing if a model exists")
    p.set_defaults(func=cmd_train_model)
    p = sub.add_parser("worker", help="run a background-job worker (Celery)")
    p.add_argument("--concurrency", type=int, help="pool processes (default: CPU count)")
    p.add_argument("--pool", default="prefork", choices=["prefork", "solo"])
    p.add_argument("--loglevel", default="INFO")
    p.add_argument("--hostname", help="worker node name, e.g. w1@%%h")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("dev", help="the whole system on embedded defaults (make run)")
    p.add_argument("--port", type=int, default=8000)
    p.set_defaults(func=cmd_dev)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    # Every model mapped before any command touches the database: a model's
    # relationships name other models by string, resolved only once all are imported.
    import app.models  # noqa: F401
    from app.dev import register_embedded_defaults

    register_embedded_defaults()
    try:
        return int(args.func(args) or 0)
    except UnsafeSettings as unsafe:
        # A configuration mistake, not a crash: the message, no traceback.
        print(f"keel {args.command}: {unsafe}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
