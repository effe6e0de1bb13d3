"""Prometheus metrics of model serving (default registry; /metrics exposes them)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

BATCH_ROWS = Histogram(
    "keel_prediction_batch_rows",
    "Rows per inference call made by the micro-batcher",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
BATCH_REQUESTS = Histogram(
    "keel_prediction_batch_requests",
    "Requests served by one inference call",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
QUEUE_WAIT = Histogram(
    "keel_prediction_queue_wait_seconds",
    "Time the longest-waiting request of each batch spent queued before the batch started",
    buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1),
)
INFERENCE_SECONDS = Histogram(
    "keel_prediction_inference_seconds",
    "Duration of one inference call",
    buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05),
)
SHED = Counter(
    "keel_prediction_shed_total", "Prediction requests refused because the queue was full"
)
ERRORS = Counter("keel_prediction_errors_total", "Prediction requests that failed in inference")
MODEL_SWAPS = Counter("keel_model_swaps_total", "Serving model changes", ["outcome"])
QUEUE_ROWS = Gauge("keel_prediction_queue_rows", "Rows waiting for inference")
