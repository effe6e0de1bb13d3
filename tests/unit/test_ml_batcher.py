"""The micro-batcher with fake models: ordering, isolation, shedding, batch bounds.

Requests submitted in the same turn of the event loop (tasks created before
the test awaits) share inference calls; asyncio runs ready callbacks in the
order they were scheduled, so which requests share a call is deterministic."""

from __future__ import annotations

import asyncio
from typing import List

import numpy as np
import pytest

from app.ml import metrics
from app.ml.batcher import MicroBatcher
from app.ml.errors import ModelUnavailable, Overloaded, WrongFeatureCount


class FakeModel:
    """p(class 1) = first feature / 100; rows whose first feature is negative fail."""

    def __init__(self, n_features: int = 3, version: str = "v-test") -> None:
        self.n_features = n_features
        self.version = version
        self.calls: List[int] = []

    def predict_proba(self, rows: np.ndarray) -> np.ndarray:
        self.calls.append(len(rows))
        if (rows[:, 0] < 0).any():
            raise ValueError("negative input")
        return rows[:, 0].astype(np.float64) / 100.0

    def labels(self, positive: np.ndarray) -> np.ndarray:
        return (positive > 0.5).astype(int)


def row(value: float, width: int = 3) -> np.ndarray:
    return np.full((1, width), value, dtype=np.float32)


def rows_of(value: float, n: int, width: int = 3) -> np.ndarray:
    return np.full((n, width), value, dtype=np.float32)


@pytest.fixture
def model() -> FakeModel:
    return FakeModel()


@pytest.fixture
def batcher(model: FakeModel):
    b = MicroBatcher(lambda: model, max_batch_rows=8, max_queue_rows=16)
    b.start()
    yield b
    b.stop()


def submit_all(batcher: MicroBatcher, arrays: List[np.ndarray]) -> List[asyncio.Future]:
    return [asyncio.ensure_future(batcher.submit(a)) for a in arrays]


async def test_each_request_gets_its_own_results_in_order(batcher, model):
    values = list(range(1, 17))  # 16 rows: exactly the queue bound
    results = await asyncio.gather(*submit_all(batcher, [row(v) for v in values]))
    assert [r.probabilities[0] for r in results] == pytest.approx([v / 100 for v in values])
    assert [r.labels[0] for r in results] == [0] * len(results)
    assert all(r.model_version == "v-test" for r in results)


async def test_concurrent_requests_share_inference_calls_up_to_the_row_limit(batcher, model):
    await asyncio.gather(*submit_all(batcher, [row(2) for _ in range(16)]))
    assert model.calls == [8, 8]  # batched, never above max_batch_rows
    assert batcher.queued_rows == 0


async def test_a_lone_request_is_answered_without_waiting_for_company(batcher, model):
    assert (await batcher.submit(row(70))).labels == [1]
    assert model.calls == [1]


async def test_multi_row_request_keeps_row_order(batcher):
    rows = np.array([[10, 0, 0], [90, 0, 0], [30, 0, 0]], dtype=np.float32)
    result = await batcher.submit(rows)
    assert result.probabilities == pytest.approx([0.1, 0.9, 0.3])
    assert result.labels == [0, 1, 0]


async def test_a_failing_request_does_not_fail_its_batch_mates(batcher, model):
    tasks = submit_all(batcher, [row(v) for v in (1, 20, 30, -5, 60)])
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert model.calls[0] == 5  # one batch, then each request alone
    good = [done[i].probabilities[0] for i in (0, 1, 2, 4)]
    assert good == pytest.approx([0.01, 0.2, 0.3, 0.6])
    assert isinstance(done[3], ValueError) and "negative input" in str(done[3])


async def test_a_row_of_the_wrong_width_fails_alone(batcher):
    wrong, right = submit_all(batcher, [row(1, width=2), row(70)])
    assert (await right).labels == [1]
    with pytest.raises(WrongFeatureCount):
        await wrong


async def test_full_queue_sheds_with_overloaded_and_counts_it(batcher, model):
    queued = submit_all(batcher, [row(2) for _ in range(16)])
    await asyncio.sleep(0)  # the 16 are queued; their inference has not run yet
    assert batcher.queued_rows == 16
    shed_before = metrics.SHED._value.get()
    with pytest.raises(Overloaded) as refused:
        await batcher.submit(row(3))
    assert refused.value.status_code == 503
    assert refused.value.headers == {"Retry-After": "1"}
    assert metrics.SHED._value.get() == shed_before + 1
    results = await asyncio.gather(*queued)
    assert len(results) == 16  # everything accepted was answered


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


async def test_a_request_that_does_not_fit_the_batch_goes_in_the_next_call(batcher, model):
    tasks = submit_all(batcher, [row(1), rows_of(20, 5), rows_of(30, 5)])
    results = await asyncio.gather(*tasks)
    assert model.calls == [6, 5]  # 1 + 5 fit in 8, the next 5 do not: never merged, never lost
    assert results[1].probabilities == pytest.approx([0.2] * 5)
    assert results[2].probabilities == pytest.approx([0.3] * 5)


async def test_a_request_larger_than_a_batch_goes_alone(batcher, model):
    big, small = submit_all(batcher, [rows_of(40, 9), row(1)])
    assert (await big).probabilities == pytest.approx([0.4] * 9)
    assert (await small).probabilities == pytest.approx([0.01])
    assert model.calls == [9, 1]


async def test_stop_answers_everything_already_queued(model):
    batcher = MicroBatcher(lambda: model, max_batch_rows=2)
    batcher.start()
    queued = submit_all(batcher, [row(v) for v in (1, 2, 3, 4, 5, 6)])
    await asyncio.sleep(0)  # queued, not yet run
    batcher.stop()
    assert all(task.done() or not task.cancelled() for task in queued)
    results = await asyncio.gather(*queued)
    assert [r.probabilities[0] for r in results] == pytest.approx(
        [0.01, 0.02, 0.03, 0.04, 0.05, 0.06]
    )
    assert model.calls == [2, 2, 2]
    with pytest.raises(ModelUnavailable):
        await batcher.submit(row(1))


async def test_the_batcher_outlives_a_failure_outside_the_model(model):
    failures = [RuntimeError("registry gone")]

    def source() -> FakeModel:
        if failures:
            raise failures.pop()
        return model

    batcher = MicroBatcher(source)
    batcher.start()
    try:
        with pytest.raises(RuntimeError, match="registry gone"):
            await batcher.submit(row(1))
        assert (await batcher.submit(row(40))).probabilities == pytest.approx([0.4])
        assert batcher.is_running
    finally:
        batcher.stop()


async def test_a_cancelled_request_leaves_its_batch_mates_answered(batcher, model):
    first, second = submit_all(batcher, [row(10), row(20)])
    await asyncio.sleep(0)
    first.cancel()
    assert (await second).probabilities == pytest.approx([0.2])
    assert first.cancelled()


async def test_a_batcher_serves_again_after_stop_and_start(model):
    batcher = MicroBatcher(lambda: model)
    batcher.start()
    batcher.stop()
    batcher.start()
    try:
        assert (await batcher.submit(row(70))).labels == [1]
        assert batcher.queued_rows == 0
    finally:
        batcher.stop()
