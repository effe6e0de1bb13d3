"""The micro-batcher with fake models: ordering, isolation, shedding, batch bounds."""

from __future__ import annotations

import asyncio
import threading
from typing import List, Optional

import numpy as np
import pytest

from app.ml import metrics
from app.ml.batcher import MicroBatcher
from app.ml.errors import ModelUnavailable, Overloaded, WrongFeatureCount


class FakeModel:
    """p(class 1) = first feature / 100; rows whose first feature is negative fail.
    Optionally blocks each call until `gate` is set, so requests pile up."""

    def __init__(self, n_features: int = 3, version: str = "v-test") -> None:
        self.n_features = n_features
        self.version = version
        self.calls: List[int] = []
        self.gate: Optional[threading.Event] = None
        self.entered = threading.Event()

    def predict_proba(self, rows: np.ndarray) -> np.ndarray:
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(10)
        self.calls.append(len(rows))
        if (rows[:, 0] < 0).any():
            raise ValueError("negative input")
        return rows[:, 0].astype(np.float64) / 100.0

    def labels(self, positive: np.ndarray) -> np.ndarray:
        return (positive > 0.5).astype(int)


def row(value: float, width: int = 3) -> np.ndarray:
    return np.full((1, width), value, dtype=np.float32)


@pytest.fixture
def model() -> FakeModel:
    return FakeModel()


@pytest.fixture
def batcher(model: FakeModel):
    b = MicroBatcher(lambda: model, max_batch_rows=8, max_queue_rows=16)
    b.start()
    yield b
    if model.gate is not None:
        model.gate.set()
    b.stop()


async def wait_until_busy(model: FakeModel) -> None:
    assert await asyncio.to_thread(model.entered.wait, 10)


async def test_each_request_gets_its_own_results_in_order(batcher, model):
    model.gate = threading.Event()
    first = asyncio.ensure_future(batcher.submit(row(1)))
    await wait_until_busy(model)
    values = list(range(2, 18))  # 16 rows: exactly the queue bound
    tasks = [asyncio.ensure_future(batcher.submit(row(v))) for v in values]
    model.gate.set()
    results = await asyncio.gather(first, *tasks)
    probabilities = [r.probabilities[0] for r in results]
    assert probabilities == pytest.approx([v / 100 for v in [1, *values]])
    assert [r.labels[0] for r in results] == [0] * len(results)
    assert all(r.model_version == "v-test" for r in results)


async def test_concurrent_requests_share_inference_calls_up_to_the_row_limit(batcher, model):
    model.gate = threading.Event()
    first = asyncio.ensure_future(batcher.submit(row(1)))
    await wait_until_busy(model)
    tasks = [asyncio.ensure_future(batcher.submit(row(2))) for _ in range(15)]
    await asyncio.sleep(0)
    model.gate.set()
    await asyncio.gather(first, *tasks)
    assert model.calls[0] == 1
    assert max(model.calls) == 8  # batched, never above max_batch_rows
    assert sum(model.calls) == 16


async def test_multi_row_request_keeps_row_order(batcher):
    rows = np.array([[10, 0, 0], [90, 0, 0], [30, 0, 0]], dtype=np.float32)
    result = await batcher.submit(rows)
    assert result.probabilities == pytest.approx([0.1, 0.9, 0.3])
    assert result.labels == [0, 1, 0]


async def test_a_failing_request_does_not_fail_its_batch_mates(batcher, model):
    model.gate = threading.Event()
    first = asyncio.ensure_future(batcher.submit(row(1)))
    await wait_until_busy(model)
    good = [asyncio.ensure_future(batcher.submit(row(v))) for v in (20, 30)]
    bad = asyncio.ensure_future(batcher.submit(row(-5)))
    more = asyncio.ensure_future(batcher.submit(row(60)))
    model.gate.set()
    results = await asyncio.gather(first, *good, more)
    assert [r.probabilities[0] for r in results] == pytest.approx([0.01, 0.2, 0.3, 0.6])
    with pytest.raises(ValueError, match="negative input"):
        await bad


async def test_a_row_of_the_wrong_width_fails_alone(batcher):
    wrong = asyncio.ensure_future(batcher.submit(row(1, width=2)))
    right = asyncio.ensure_future(batcher.submit(row(70)))
    assert (await right).labels == [1]
    with pytest.raises(WrongFeatureCount):
        await wrong


async def test_full_queue_sheds_with_overloaded_and_counts_it(batcher, model):
    model.gate = threading.Event()
    in_flight = asyncio.ensure_future(batcher.submit(row(1)))
    await wait_until_busy(model)
    queued = [asyncio.ensure_future(batcher.submit(row(2))) for _ in range(16)]
    await asyncio.sleep(0)
    shed_before = metrics.SHED._value.get()
    with pytest.raises(Overloaded) as refused:
        await batcher.submit(row(3))
    assert refused.value.status_code == 503
    assert refused.value.headers == {"Retry-After": "1"}
    assert metrics.SHED._value.get() == shed_before + 1
    model.gate.set()
    results = await asyncio.gather(in_flight, *queued)
    assert len(results) == 17  # everything accepted was answered


async def test_without_a_model_requests_get_model_unavailable():
    batcher = MicroBatcher(lambda: None)
    batcher.start()
    try:
        with pytest.raises(ModelUnavailable):
            await batcher.submit(row(1))
    finally:
        batcher.stop()


async def test_a_stopped_batcher_refuses_new_work(model):
    batcher = MicroBatcher(lambda: model)
    batcher.start()
    batcher.stop()
    with pytest.raises(ModelUnavailable):
        await batcher.submit(row(1))


async def test_results_follow_a_model_swap_between_batches(model):
    current = {"model": model}
    batcher = MicroBatcher(lambda: current["model"])
    batcher.start()
    try:
        assert (await batcher.submit(row(1))).model_version == "v-test"
        current["model"] = FakeModel(version="v-next")
        assert (await batcher.submit(row(1))).model_version == "v-next"
    finally:
        batcher.stop()


def rows_of(value: float, n: int, width: int = 3) -> np.ndarray:
    return np.full((n, width), value, dtype=np.float32)


async def test_a_request_that_does_not_fit_the_batch_goes_in_the_next_call(batcher, model):
    model.gate = threading.Event()
    first = asyncio.ensure_future(batcher.submit(row(1)))
    await wait_until_busy(model)
    five_a = asyncio.ensure_future(batcher.submit(rows_of(20, 5)))
    five_b = asyncio.ensure_future(batcher.submit(rows_of(30, 5)))
    await asyncio.sleep(0)
    model.gate.set()
    results = await asyncio.wait_for(asyncio.gather(first, five_a, five_b), 10)
    assert model.calls == [1, 5, 5]  # 5 + 5 > max_batch_rows=8: never merged, never lost
    assert results[1].probabilities == pytest.approx([0.2] * 5)
    assert results[2].probabilities == pytest.approx([0.3] * 5)


async def test_stop_answers_everything_already_queued(model):
    batcher = MicroBatcher(lambda: model, max_batch_rows=2)
    batcher.start()
    model.gate = threading.Event()
    first = asyncio.ensure_future(batcher.submit(row(1)))
    await wait_until_busy(model)
    queued = [asyncio.ensure_future(batcher.submit(row(v))) for v in (2, 3, 4, 5, 6)]
    await asyncio.sleep(0)
    stopping = asyncio.ensure_future(asyncio.to_thread(batcher.stop))
    await asyncio.sleep(0.05)
    model.gate.set()
    results = await asyncio.wait_for(asyncio.gather(first, *queued), 10)
    await stopping
    assert [r.probabilities[0] for r in results] == pytest.approx(
        [0.01, 0.02, 0.03, 0.04, 0.05, 0.06]
    )
    with pytest.raises(ModelUnavailable):
        await batcher.submit(row(1))


async def test_the_inference_thread_outlives_a_failure_outside_the_model(model):
    failures = [RuntimeError("registry gone")]

    def source() -> FakeModel:
        if failures:
            raise failures.pop()
        return model

    batcher = MicroBatcher(source)
    batcher.start()
    try:
        with pytest.raises(RuntimeError, match="registry gone"):
            await asyncio.wait_for(batcher.submit(row(1)), 10)
        assert (await asyncio.wait_for(batcher.submit(row(40)), 10)).probabilities == pytest.approx(
            [0.4]
        )
        assert batcher.is_running
    finally:
        batcher.stop()


async def test_a_batcher_serves_again_after_stop_and_start(model):
    batcher = MicroBatcher(lambda: model)
    batcher.start()
    batcher.stop()
    batcher.start()
    try:
        assert (await asyncio.wait_for(batcher.submit(row(70)), 10)).labels == [1]
        assert batcher.queued_rows == 0
    finally:
        batcher.stop()
