"""Training, the artifact registry and the train-model command (files in tmp dirs)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.cli import main
from app.ml import runtime
from app.ml.errors import ArtifactError, ModelNotFound
from app.ml.registry import Registry
from app.ml.runtime import load_model
from app.ml.training import train_model


def test_training_registers_a_verified_onnx_version_with_a_full_manifest(tmp_path: Path):
    manifest = train_model(tmp_path, kind="logreg")
    assert manifest["version"] == "v1"
    folder = tmp_path / "v1"
    files = sorted(p.name for p in folder.iterdir())
    assert files == ["manifest.json", "model.onnx", "parity.json"]
    stored = json.loads((folder / "manifest.json").read_text())
    assert stored == manifest
    for key in ("created_at", "n_features", "feature_names", "classes", "metrics", "framework"):
        assert key in stored
    assert stored["n_features"] == 30 and stored["classes"] == [0, 1]
    assert stored["metrics"]["accuracy"] > 0.9 and stored["metrics"]["n_test"] == 114
    assert stored["framework"]["scikit-learn"]
    assert not list(tmp_path.glob("*.pkl")) and not list(tmp_path.glob("**/*.joblib"))
    model = load_model(Registry(tmp_path).read_artifact("v1"))
    assert model.version == "v1"


def test_first_version_becomes_active_later_ones_only_on_request(tmp_path: Path):
    train_model(tmp_path, kind="logreg")
    train_model(tmp_path, kind="forest", n_estimators=5)
    registry = Registry(tmp_path)
    assert registry.versions() == ["v1", "v2"]
    assert registry.active_version() == "v1"
    train_model(tmp_path, kind="logreg", activate=True)
    assert registry.active_version() == "v3"


def test_without_a_pointer_the_newest_version_is_active(tmp_path: Path):
    train_model(tmp_path, kind="logreg")
    train_model(tmp_path, kind="logreg")
    (tmp_path / "active").unlink()
    assert Registry(tmp_path).active_version() == "v2"


def test_tampered_files_fail_the_checksum_before_loading(tmp_path: Path):
    train_model(tmp_path, kind="logreg")
    registry = Registry(tmp_path)
    model_file = tmp_path / "v1" / "model.onnx"
    model_file.write_bytes(model_file.read_bytes().replace(b"Scaler", b"Scalex"))
    with pytest.raises(ArtifactError, match="checksum"):
        registry.read_artifact("v1")


def test_parity_data_is_checksummed_too(tmp_path: Path):
    train_model(tmp_path, kind="logreg")
    parity = tmp_path / "v1" / "parity.json"
    parity.write_text(parity.read_text().replace("0.", "0.9", 1))
    with pytest.raises(ArtifactError, match="checksum"):
        Registry(tmp_path).read_artifact("v1")


def test_a_model_that_misses_parity_is_not_registered(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(runtime, "PARITY_ATOL", -1.0)
    with pytest.raises(ArtifactError, match="parity"):
        train_model(tmp_path, kind="logreg")
    assert Registry(tmp_path).versions() == []


@pytest.mark.parametrize("version", ["v9", "../v1", "v1/..", "", "V1", "v01"])
def test_unknown_or_malformed_versions_are_not_found(tmp_path: Path, version: str):
    train_model(tmp_path, kind="logreg")
    with pytest.raises(ModelNotFound):
        Registry(tmp_path).read_artifact(version)
    with pytest.raises(ModelNotFound):
        Registry(tmp_path).set_active(version)


def test_train_model_command_registers_and_activates(tmp_path: Path, capsys):
    assert main(["train-model", "--model-dir", str(tmp_path), "--kind", "logreg"]) == 0
    again = ["train-model", "--model-dir", str(tmp_path), "--kind", "logreg", "--activate"]
    assert main(again) == 0
    assert "registered v2" in capsys.readouterr().out
    assert Registry(tmp_path).active_version() == "v2"
