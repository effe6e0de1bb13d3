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
from typing import List, Optional

from app.core.config import UnsafeSettings, get_settings


def cmd_migrate(args: argparse.Namespace) -> int:
    from app.core.migrations import downgrade, upgrade

    if args.downgrade:
        downgrade(revision=args.revision or "-1")
    else:
        upgrade(revision=args.revision or "head")
    return 0


def memory_backed_dir() -> Optional[str]:
    """/dev/shm where it is a writable directory (Linux), else None. Files
    there are never written back to disk: a worker writing to one never waits
    on the filesystem's journal or writeback (gunicorn's heartbeat `fchmod`s a
    file each second; the multiprocess metrics are mmap'ed files written on
    every request)."""
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


def cmd_create_superuser(args: argparse.Namespace) -> int:
    from app.core.db import db
    from app.users.service import create_user

    password = args.password or os.environ.get("KEEL_SUPERUSER_PASSWORD") or getpass.getpass()

    async def create() -> int:
        async with db.sessionmaker() as session:
            user = await create_user(
                session, email=args.email, password=password, name=args.name, is_superuser=True
            )
            await session.commit()
            user_id = user.id
        await db.dispose()
        return user_id

    print(f"superuser {args.email} created with id {asyncio.run(create())}")
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
    # No mingle/gossip: workers share nothing but the queue, and start faster.
    argv = [
        "worker",
        "--loglevel",
        args.loglevel,
        "--pool",
        args.pool,
        "--without-mingle",
        "--without-gossip",
        "--queues",
        QUEUE,
    ]
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

    p = sub.add_parser("create-superuser", help="create an account with superuser rights")
    p.add_argument("--email", required=True)
    p.add_argument("--name", default="Admin")
    p.add_argument("--password", help="default: $KEEL_SUPERUSER_PASSWORD or a prompt")
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
    try:
        return int(args.func(args) or 0)
    except UnsafeSettings as unsafe:
        # A configuration mistake, not a crash: the message, no traceback.
        print(f"keel {args.command}: {unsafe}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
