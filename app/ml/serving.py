"""The process's serving state: the active model, the batcher, the swap logic.

The active version is the registry's `active` pointer file, shared by every
API process. The process handling an activation swaps at once; the others
notice the pointer change within `watch_interval` seconds (a background task,
never the request path, stats the file). A swap replaces one reference, so
no request fails; a candidate failing any check leaves the old model serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any, Dict, Optional

import anyio

from app.core.config import Settings
from app.ml import metrics
from app.ml.batcher import MicroBatcher, Prediction
from app.ml.errors import ArtifactError, ModelInvalid, ModelUnavailable
from app.ml.registry import PointerStamp, Registry
from app.ml.runtime import OnnxModel, load_model

logger = logging.getLogger(__name__)


class ModelServer:
    def __init__(self) -> None:
        self.registry: Optional[Registry] = None
        self._model: Optional[OnnxModel] = None
        self._batcher: Optional[MicroBatcher] = None
        self._stamp: PointerStamp = None
        self._watcher: Optional[asyncio.Task[None]] = None
        self._swap_lock: Optional[asyncio.Lock] = None
        self._intra_op_threads = 1
        self.watch_interval = 1.0

    # ------------------------------------------------------------ lifecycle
    async def start(
        self,
        model_dir: Path,
        *,
        max_batch_rows: int = 64,
        max_queue_rows: int = 4096,
        watch_interval: float = 1.0,
        intra_op_threads: int = 1,
    ) -> None:
        """Load the active model (if any), start the batcher and the
        pointer watcher. A missing or broken model is logged, not fatal: the
        API starts and predictions answer 503 until a model is activated."""
        await self.stop()
        self.registry = Registry(model_dir)
        self._intra_op_threads = intra_op_threads
        self.watch_interval = watch_interval
        self._swap_lock = asyncio.Lock()
        self._stamp = self.registry.pointer_stamp()
        version = self.registry.active_version()
        if version is not None:
            try:
                self._model = await anyio.to_thread.run_sync(self._load, version)
                logger.info("serving model %s", version)
            except ArtifactError:
                logger.exception("active model %s cannot be served", version)
        else:
            logger.warning("no model registered in %s; run `keel train-model`", model_dir)
        self._batcher = MicroBatcher(
            self.current, max_batch_rows=max_batch_rows, max_queue_rows=max_queue_rows
        )
        self._batcher.start()
        if watch_interval > 0:
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        if self._batcher is not None:
            batcher, self._batcher = self._batcher, None
            batcher.stop()
        self._model = None

    # ------------------------------------------------------------ serving
    def current(self) -> Optional[OnnxModel]:
        return self._model

    def require_model(self) -> OnnxModel:
        model = self._model
        if model is None or self._batcher is None:
            raise ModelUnavailable()
        return model

    @property
    def batcher(self) -> MicroBatcher:
        if self._batcher is None:
            raise ModelUnavailable()
        return self._batcher

    async def predict(self, rows: Any) -> Prediction:
        return await self.batcher.submit(rows)

    @property
    def is_ready(self) -> bool:
        return self._model is not None and self._batcher is not None and self._batcher.is_running

    # ------------------------------------------------------------ swapping
    def _load(self, version: str) -> OnnxModel:
        assert self.registry is not None
        return load_model(self.registry.read_artifact(version), self._intra_op_threads)

    async def activate(self, version: str) -> Dict[str, Any]:
        """Verify and load `version`, make it the active version for every
        process, and serve it here from the next batch on. Raises
        ModelNotFound, or ModelInvalid (the serving model is unchanged)."""
        registry = self._require_registry()
        assert self._swap_lock is not None
        async with self._swap_lock:
            try:
                registry.read_manifest(version)  # ModelNotFound before any work
                model = await anyio.to_thread.run_sync(self._load, version)
            except ArtifactError as exc:
                metrics.MODEL_SWAPS.labels("rejected").inc()
                logger.error("activation of %s refused: %s", version, exc)
                raise ModelInvalid(detail=f"{version}: {exc}") from exc
            await anyio.to_thread.run_sync(registry.set_active, version)
            self._stamp = registry.pointer_stamp()
            self._model = model
            metrics.MODEL_SWAPS.labels("activated").inc()
            logger.info("now serving model %s", version)
            return model.manifest

    def _require_registry(self) -> Registry:
        if self.registry is None:
            raise ModelUnavailable()
        return self.registry

    async def check_pointer(self) -> None:
        """Follow an activation made by another process (pointer changed)."""
        registry = self._require_registry()
        stamp = registry.pointer_stamp()
        if stamp == self._stamp:
            return
        assert self._swap_lock is not None
        async with self._swap_lock:
            self._stamp = stamp
            version = registry.active_version()
            current = self._model
            if version is None or (current is not None and current.version == version):
                return
            try:
                self._model = await anyio.to_thread.run_sync(self._load, version)
            except ArtifactError:
                metrics.MODEL_SWAPS.labels("rejected").inc()
                logger.exception(
                    "pointer names %s, which cannot be served; keeping %s",
                    version,
                    current.version if current else None,
                )
                return
            metrics.MODEL_SWAPS.labels("followed").inc()
            logger.info("now serving model %s (activated elsewhere)", version)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.watch_interval)
            try:
                await self.check_pointer()
            except OSError:
                logger.exception("cannot read the model pointer")


model_server = ModelServer()


async def start_model_serving(settings: Settings) -> None:
    """Lifespan hook: load the active model once, before the first request."""
    await model_server.start(
        settings.resolved_model_dir,
        max_batch_rows=settings.ml_max_batch_rows,
        max_queue_rows=settings.ml_max_queue_rows,
        watch_interval=settings.ml_watch_interval,
        intra_op_threads=settings.ml_intra_op_threads,
    )


async def stop_model_serving() -> None:
    await model_server.stop()
