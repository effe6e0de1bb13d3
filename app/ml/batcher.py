"""Micro-batching: concurrent prediction requests share one inference call.

Requests queue their rows; the first to find no run scheduled schedules one
with `loop.call_soon`, so every request that reaches the batcher in the same
turn of the event loop joins it. A run takes what is waiting, up to
`max_batch_rows` rows (a larger request goes alone), runs the model once and
answers each request with its slice; what is left waits for the next turn,
after other work. The queue is bounded (`max_queue_rows`, beyond it 503
`Overloaded`), and a failed batch is retried request by request so the
failure stays with the request that caused it.

Why on the event loop, not a thread: an ONNX call on a batch of served size
costs less than handing the batch to a thread and back (wake-ups and GIL
hand-offs per batch: bench/README.md). The loop is held for one call at a
time, of at most `max_batch_rows` rows or one request's own rows (whose
body the loop has just decoded, row by row); a model slow per batch should
get a smaller ML_MAX_BATCH_ROWS.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Deque, List, Optional, Tuple

import numpy as np
from typing_extensions import Protocol

from app.ml import metrics
from app.ml.errors import ModelUnavailable, Overloaded, WrongFeatureCount

logger = logging.getLogger(__name__)


class ServingModel(Protocol):
    @property
    def version(self) -> str: ...

    @property
    def n_features(self) -> int: ...

    def predict_proba(self, rows: np.ndarray) -> np.ndarray: ...

    def labels(self, positive: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class Prediction:
    """One request's answer: a label and a class-1 probability per row, and the
    version of the model that produced them."""

    labels: List[int]
    probabilities: List[float]
    model_version: str


@dataclass
class _Item:
    rows: np.ndarray
    future: asyncio.Future[Prediction]
    enqueued: float


Outcome = Any  # Prediction or an exception instance


class MicroBatcher:
    def __init__(
        self,
        model_source: Callable[[], Optional[ServingModel]],
        *,
        max_batch_rows: int = 64,
        max_queue_rows: int = 4096,
    ) -> None:
        self._model_source = model_source
        self.max_batch_rows = max_batch_rows
        self.max_queue_rows = max_queue_rows
        self._pending: Deque[_Item] = deque()
        self._queued_rows = 0
        # The loop a run is scheduled on, if any (one per process; tests may
        # leave a loop with a run pending, so another loop schedules its own).
        self._scheduled: Optional[asyncio.AbstractEventLoop] = None
        self._accepting = False

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> None:
        self._accepting = True

    def stop(self) -> None:
        """Refuse new work and answer everything queued, now."""
        self._accepting = False
        while self._pending:
            self._answer(self._take_batch())

    @property
    def is_running(self) -> bool:
        return self._accepting

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    # ---------------------------------------------------------------- requests
    async def submit(self, rows: np.ndarray) -> Prediction:
        """Queue a float32 (n, n_features) array and wait for its predictions.

        Raises Overloaded when the queue is full, ModelUnavailable when no
        model is loaded (or the batcher is stopped), WrongFeatureCount when the
        model changed shape between validation and inference.
        """
        return await self.enqueue(rows)

    def enqueue(self, rows: np.ndarray) -> asyncio.Future[Prediction]:
        """`submit` without the wait: the rows are queued when this returns."""
        if not self._accepting:
            raise ModelUnavailable()
        n = len(rows)
        if self._queued_rows and self._queued_rows + n > self.max_queue_rows:
            metrics.SHED.inc()
            raise Overloaded(retry_after=1)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Prediction] = loop.create_future()
        self._pending.append(_Item(rows, future, time.perf_counter()))
        self._queued_rows += n
        if self._scheduled is not loop:
            self._scheduled = loop
            loop.call_soon(self._run)
        return future

    def _run(self) -> None:
        """One inference call for what is waiting; the rest on a later turn."""
        self._scheduled = None
        if not self._pending:
            return
        batch = self._take_batch()
        if self._pending:
            loop = asyncio.get_running_loop()
            self._scheduled = loop
            loop.call_soon(self._run)
        self._answer(batch)

    def _answer(self, batch: List[_Item]) -> None:
        started = time.perf_counter()
        try:
            outcomes, fitting = self._process(batch)
        except Exception as exc:  # noqa: BLE001 - every request must get an answer
            logger.exception("a batch of %d requests failed", len(batch))
            outcomes, fitting = [exc] * len(batch), []
        finished = time.perf_counter()
        for item, outcome in zip(batch, outcomes):
            if item.future.done():  # the caller went away (cancelled)
                continue
            if isinstance(outcome, BaseException):
                item.future.set_exception(outcome)
            else:
                item.future.set_result(outcome)
        try:
            self._record(batch, fitting, started, finished)
        except OSError:  # the multiprocess metrics file (disk full, ...)
            logger.exception("cannot record prediction metrics")

    def _take_batch(self) -> List[_Item]:
        """The oldest request and those after it, up to max_batch_rows rows (a
        larger request goes alone)."""
        head = self._pending.popleft()
        batch = [head]
        rows = len(head.rows)
        while self._pending and rows + len(self._pending[0].rows) <= self.max_batch_rows:
            item = self._pending.popleft()
            batch.append(item)
            rows += len(item.rows)
        self._queued_rows -= rows
        return batch

    def _record(
        self, batch: List[_Item], fitting: List[int], started: float, finished: float
    ) -> None:
        """Metrics, recorded after the answers are given. One observation per
        batch, not per request: under gunicorn each is a write to a shared file."""
        metrics.QUEUE_ROWS.set(self._queued_rows)
        metrics.QUEUE_WAIT.observe(started - batch[0].enqueued)  # the head waited longest
        if fitting:
            metrics.BATCH_ROWS.observe(sum(len(batch[i].rows) for i in fitting))
            metrics.BATCH_REQUESTS.observe(len(fitting))
            metrics.INFERENCE_SECONDS.observe(finished - started)

    def _process(self, batch: List[_Item]) -> Tuple[List[Outcome], List[int]]:
        """Each request's outcome, and the indexes of those the model ran on."""
        model = self._model_source()
        if model is None:
            return [ModelUnavailable() for _ in batch], []
        outcomes: List[Outcome] = [None] * len(batch)
        fitting: List[int] = []
        for index, item in enumerate(batch):
            if item.rows.ndim == 2 and item.rows.shape[1] == model.n_features:
                fitting.append(index)
            else:
                outcomes[index] = WrongFeatureCount(
                    detail=f"expected {model.n_features} features per row"
                )
        if not fitting:
            return outcomes, fitting
        try:
            results = self._infer(model, [batch[i].rows for i in fitting])
        except Exception:  # noqa: BLE001 - isolate: retry each request alone below
            logger.warning("batched inference failed; retrying requests one by one", exc_info=True)
            results = [self._infer_alone(model, batch[i].rows) for i in fitting]
        for index, result in zip(fitting, results):
            outcomes[index] = result
        return outcomes, fitting

    @staticmethod
    def _infer(model: ServingModel, parts: List[np.ndarray]) -> List[Prediction]:
        stacked = parts[0] if len(parts) == 1 else np.concatenate(parts)
        positive = model.predict_proba(stacked)
        labels = model.labels(positive).tolist()
        probabilities = positive.tolist()
        version = model.version
        answers = []
        start = 0
        for part in parts:
            end = start + len(part)
            answers.append(Prediction(labels[start:end], probabilities[start:end], version))
            start = end
        return answers

    def _infer_alone(self, model: ServingModel, rows: np.ndarray) -> Outcome:
        try:
            return self._infer(model, [rows])[0]
        except Exception as exc:  # noqa: BLE001 - the failure belongs to this request only
            logger.exception("inference failed for one request")
            metrics.ERRORS.inc()
            return exc
