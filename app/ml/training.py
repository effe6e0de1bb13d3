"""Train a classifier on scikit-learn's bundled breast-cancer data, export it to
ONNX, check parity and register it. Imports scikit-learn and skl2onnx, so the
serving path never imports this module."""

from __future__ import annotations

import logging
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Tuple

import numpy as np

from app.ml.registry import Artifact, Registry

logger = logging.getLogger(__name__)

KINDS = ("logreg", "forest")
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}  # what onnxruntime 1.19 accepts
TEST_SIZE = 0.2


def build_estimator(kind: str, seed: int, n_estimators: int = 100) -> Any:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "logreg":
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))
    if kind == "forest":
        return RandomForestClassifier(n_estimators=n_estimators, random_state=seed, n_jobs=1)
    raise ValueError(f"unknown model kind {kind!r}; expected one of {KINDS}")


def load_data(seed: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list]:
    """The bundled breast-cancer set (no download), split stratified."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    data = load_breast_cancer()
    x_train, x_test, y_train, y_test = train_test_split(
        data.data.astype(np.float32),
        data.target,
        test_size=TEST_SIZE,
        random_state=seed,
        stratify=data.target,
    )
    return x_train, x_test, y_train, y_test, [str(n) for n in data.feature_names]


def evaluate(y_true: np.ndarray, probability: np.ndarray) -> Dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score

    predicted = (probability > 0.5).astype(int)
    return {
        "accuracy": round(float(accuracy_score(y_true, predicted)), 6),
        "f1": round(float(f1_score(y_true, predicted)), 6),
        "roc_auc": round(float(roc_auc_score(y_true, probability)), 6),
        "log_loss": round(float(log_loss(y_true, probability, labels=[0, 1])), 6),
        "n_test": int(len(y_true)),
    }


def export_onnx(estimator: Any, n_features: int) -> bytes:
    from skl2onnx import to_onnx

    # Plain probability arrays (no ZipMap) for the final classifier.
    final = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
    onx = to_onnx(
        estimator,
        np.zeros((1, n_features), dtype=np.float32),
        target_opset=TARGET_OPSET,
        options={id(final): {"zipmap": False}},
    )
    return onx.SerializeToString()


def framework_versions() -> Dict[str, str]:
    import onnx
    import onnxruntime
    import skl2onnx
    import sklearn

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "skl2onnx": skl2onnx.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def train_model(
    model_dir: Path,
    *,
    kind: str = "logreg",
    seed: int = 42,
    n_estimators: int = 100,
    activate: bool = False,
) -> Dict[str, Any]:
    """Train, evaluate on the held-out split, export to ONNX, check that the ONNX
    model reproduces scikit-learn's probabilities on that split, and register
    it. The first model registered becomes active; `activate` makes this one
    active. Raises ArtifactError (nothing registered) when parity fails."""
    from app.ml.runtime import load_model

    x_train, x_test, y_train, y_test, feature_names = load_data(seed)
    estimator = build_estimator(kind, seed, n_estimators)
    estimator.fit(x_train, y_train)
    probability = estimator.predict_proba(x_test)[:, list(estimator.classes_).index(1)]
    model_bytes = export_onnx(estimator, x_train.shape[1])

    name = f"breast-cancer-{kind}"
    manifest: Dict[str, Any] = {
        "name": name,
        "kind": kind,
        "created_at": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
        "n_features": int(x_train.shape[1]),
        "feature_names": feature_names,
        "classes": [int(c) for c in estimator.classes_],
        "metrics": evaluate(y_test, probability),
        "params": {"seed": seed, **({"n_estimators": n_estimators} if kind == "forest" else {})},
        "framework": framework_versions(),
        "format": "onnx",
        "target_opset": TARGET_OPSET,
    }
    parity = {"inputs": x_test.tolist(), "probabilities": probability.tolist()}
    # Parity before registering: the exact bytes we are about to store.
    load_model(
        Artifact(
            manifest={**manifest, "version": "candidate"}, model_bytes=model_bytes, parity=parity
        )
    )
    registry = Registry(model_dir)
    first = not registry.versions()
    stored = registry.register(model_bytes, manifest, parity)
    if activate or first:
        registry.set_active(stored["version"])
    logger.info("registered %s (%s) metrics=%s", stored["version"], name, stored["metrics"])
    return stored
