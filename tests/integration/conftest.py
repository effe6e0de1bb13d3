"""Fixtures of the model-serving integration tests: real ONNX models trained
once per session into a temporary MODEL_DIR."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Dict

import pytest

from app.ml.registry import Registry
from app.ml.serving import model_server
from app.ml.training import train_model


@pytest.fixture(scope="session")
def trained_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """v1 logistic regression (active), v2 small forest, v3 a tampered copy of v1."""
    root = tmp_path_factory.mktemp("models")
    train_model(root, kind="logreg")
    train_model(root, kind="forest", n_estimators=10)
    shutil.copytree(root / "v1", root / "v3")
    manifest = json.loads((root / "v3" / "manifest.json").read_text())
    (root / "v3" / "manifest.json").write_text(json.dumps({**manifest, "version": "v3"}))
    with open(root / "v3" / "model.onnx", "ab") as handle:
        handle.write(b"\x00")
    return root


@pytest.fixture
async def model_dir(trained_dir: Path, tmp_path: Path) -> Path:
    root = tmp_path / "models"
    shutil.copytree(trained_dir, root)
    Registry(root).set_active("v1")
    return root


@pytest.fixture
async def serving(model_dir: Path):
    await model_server.start(model_dir, watch_interval=0)
    yield model_server
    await model_server.stop()


@pytest.fixture
def parity(trained_dir: Path) -> Dict[str, Any]:
    return json.loads((trained_dir / "v1" / "parity.json").read_text())
