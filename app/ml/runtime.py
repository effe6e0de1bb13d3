"""A verified ONNX model ready to serve (onnxruntime; no scikit-learn import)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from app.ml.errors import ArtifactError
from app.ml.registry import Artifact

# Probabilities must match scikit-learn's on the held-out split to this much.
PARITY_ATOL = 1e-4
WARMUP_BATCH_SIZES = (1, 8, 64)
# What onnxruntime raises for a bad graph or a failed run (none derive from RuntimeError).
ORT_ERRORS = tuple(
    getattr(ort_state, name)
    for name in "Fail InvalidArgument InvalidGraph InvalidProtobuf NoSuchFile NoModel "
    "NotImplemented RuntimeException EPFail".split()
)


def session_options(intra_op_threads: int = 1) -> ort.SessionOptions:
    """Small, quiet thread pools: the API runs one worker per core, and the
    batcher already turns concurrency into batch size."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


@dataclass
class OnnxModel:
    """One loaded version. `predict_proba` is thread-safe (onnxruntime's
    `run` is) and releases the GIL while it computes."""

    manifest: Dict[str, Any]
    session: ort.InferenceSession
    input_name: str
    proba_output: str
    positive_index: int
    classes: List[int] = field(default_factory=list)

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def n_features(self) -> int:
        return int(self.manifest["n_features"])

    def predict_proba(self, rows: np.ndarray) -> np.ndarray:
        """Probability of class 1 for each row of a float32 (n, n_features) array."""
        probabilities = self.session.run([self.proba_output], {self.input_name: rows})[0]
        return probabilities[:, self.positive_index]

    def labels(self, positive: np.ndarray) -> np.ndarray:
        """Labels from the same probabilities (argmax, ties to the first class)."""
        index = self.positive_index
        return np.where(positive > 0.5, self.classes[index], self.classes[1 - index])


def load_model(artifact: Artifact, intra_op_threads: int = 1) -> OnnxModel:
    """Build a session from verified bytes, warm it up and check parity with the
    probabilities scikit-learn produced at training time. Raises ArtifactError."""
    manifest = artifact.manifest
    try:
        classes = [int(c) for c in manifest["classes"]]
        n_features = int(manifest["n_features"])
        if len(classes) != 2 or 1 not in classes:
            raise ArtifactError("only binary models with a class 1 are served")
        session = ort.InferenceSession(
            artifact.model_bytes,
            sess_options=session_options(intra_op_threads),
            providers=["CPUExecutionProvider"],
        )
        inputs = session.get_inputs()
        outputs = [o.name for o in session.get_outputs()]
        if len(inputs) != 1 or "probabilities" not in outputs:
            raise ArtifactError("unexpected model signature")
        model = OnnxModel(
            manifest=manifest,
            session=session,
            input_name=inputs[0].name,
            proba_output="probabilities",
            positive_index=classes.index(1),
            classes=classes,
        )
        for size in WARMUP_BATCH_SIZES:
            model.predict_proba(np.zeros((size, n_features), dtype=np.float32))
        check_parity(model, artifact.parity)
    except ArtifactError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError, *ORT_ERRORS) as exc:
        raise ArtifactError(f"cannot load {manifest.get('version')}: {exc}") from exc
    return model


def check_parity(model: OnnxModel, parity: Dict[str, Any]) -> None:
    inputs = np.asarray(parity["inputs"], dtype=np.float32)
    expected = np.asarray(parity["probabilities"], dtype=np.float64)
    if inputs.ndim != 2 or inputs.shape[1] != model.n_features or len(expected) != len(inputs):
        raise ArtifactError("parity data does not fit the model")
    got = model.predict_proba(inputs).astype(np.float64)
    worst = float(np.max(np.abs(got - expected))) if len(got) else 0.0
    if not worst <= PARITY_ATOL:
        raise ArtifactError(f"parity check failed: max |Δp| = {worst:.3g}")
