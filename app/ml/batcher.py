"""Micro-batching: concurrent prediction requests share one inference call.

One inference thread takes everything waiting (whole requests, up to
`max_batch_rows` rows), runs the model once and hands each request its slice.
There is no timer: batches grow only while an inference call runs, so a lone
client waits for nothing. The queue is bounded (`max_queue_rows`, beyond it
503 `Overloaded`), and a failed batch is retried request by request so the
failure stays with the request that caused it.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

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
    loop: asyncio.AbstractEventLoop
    enqueued: float


Outcome = Any  # Prediction or an exception instance
_STOP = object()  # queued by stop(): everything before it is still served


class MicroBatcher:
    def __init__(
        self,
        model_source: Callable[[], Optional[ServingModel]],
        *,
        max_batch_rows: int = 64,
        max_queue_rows: int = 4096,
        name: str = "keel-inference",
    ) -> None:
        self._model_source = model_source
        self.max_batch_rows = max_batch_rows
        self.max_queue_rows = max_queue_rows
        self._name = name
        # A C-level queue: a cheaper hand-off than a Condition's. The row count
        # has its own lock, never held while waiting.
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._queued_rows = 0
        self._count_lock = threading.Lock()
        self._stopping = False
        self._thread: Optional[threading.Thread] = None

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._count_lock:
            # A fresh queue: nothing left from an earlier run (its stop marker).
            self._queue = queue.SimpleQueue()
            self._queued_rows = 0
            self._stopping = False
        self._thread = threading.Thread(
            target=self._run, args=(self._queue,), name=self._name, daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish what is queued, then end the thread."""
        with self._count_lock:
            if self._stopping:
                return
            self._stopping = True
            # Under the lock: no request can be queued behind the marker.
            self._queue.put(_STOP)
        if self._thread is not None:
            self._thread.join(timeout)
        self._thread = None

    @property
    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    # ---------------------------------------------------------------- event-loop side
    async def submit(self, rows: np.ndarray) -> Prediction:
        """Queue a float32 (n, n_features) array and wait for its predictions.

        Raises Overloaded when the queue is full, ModelUnavailable when no
        model is loaded (or the batcher is stopped), WrongFeatureCount when the
        model changed shape between validation and inference.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Prediction] = loop.create_future()
        n = len(rows)
        with self._count_lock:
            if self._stopping or self._thread is None:
                raise ModelUnavailable()
            if self._queued_rows and self._queued_rows + n > self.max_queue_rows:
                metrics.SHED.inc()
                raise Overloaded(retry_after=1)
            self._queued_rows += n
            self._queue.put(_Item(rows, future, loop, time.perf_counter()))
        return await future

    # ---------------------------------------------------------------- inference thread
    def _run(self, jobs: queue.SimpleQueue[Any]) -> None:
        carried: Any = None  # taken from the queue but too big for the last batch
        while True:
            head = carried if carried is not None else jobs.get()
            if head is _STOP:
                return
            batch, carried = self._take_batch(jobs, head)
            started = time.perf_counter()
            try:
                outcomes, fitting = self._process(batch)
            except Exception as exc:  # noqa: BLE001 - the thread must outlive any batch
                logger.exception("a batch of %d requests failed", len(batch))
                outcomes, fitting = [exc] * len(batch), []
            finished = time.perf_counter()
            self._deliver(batch, outcomes)
            try:
                self._record(batch, fitting, started, finished)
            except OSError:  # the multiprocess metrics file (disk full, ...)
                logger.exception("cannot record prediction metrics")

    def _take_batch(self, jobs: queue.SimpleQueue[Any], head: _Item) -> Tuple[List[_Item], Any]:
        """`head` and whatever else is waiting, up to max_batch_rows rows (a
        larger head goes alone); also the item taken that did not fit, if any."""
        batch = [head]
        rows = len(head.rows)
        carried: Any = None
        while rows < self.max_batch_rows:
            try:
                item = jobs.get_nowait()
            except queue.Empty:
                break
            if item is _STOP or rows + len(item.rows) > self.max_batch_rows:
                carried = item
                break
            batch.append(item)
            rows += len(item.rows)
        with self._count_lock:
            self._queued_rows -= rows
        return batch, carried

    def _record(
        self, batch: List[_Item], fitting: List[int], started: float, finished: float
    ) -> None:
        """Metrics, recorded after the answers are handed to their event loops.
        One observation per batch, not per request: under gunicorn each is a
        locked write to a shared file."""
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

    @staticmethod
    def _deliver(batch: List[_Item], outcomes: List[Outcome]) -> None:
        by_loop: Dict[asyncio.AbstractEventLoop, List[Tuple[asyncio.Future, Outcome]]] = {}
        for item, outcome in zip(batch, outcomes):
            by_loop.setdefault(item.loop, []).append((item.future, outcome))
        for loop, pairs in by_loop.items():
            try:
                loop.call_soon_threadsafe(_resolve, pairs)
            except RuntimeError:  # that loop is closed: nobody is waiting any more
                continue


def _resolve(pairs: List[Tuple[asyncio.Future, Outcome]]) -> None:
    for future, outcome in pairs:
        if future.done():  # the caller went away (cancelled)
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
