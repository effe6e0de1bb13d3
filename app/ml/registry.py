"""The model registry: versioned artifact folders and the active pointer.

Layout under the model directory (`settings.resolved_model_dir`)::

    v1/model.onnx       the serving artifact (ONNX: data, not code)
    v1/manifest.json    what the model is, its metrics, the files' SHA-256
    v1/parity.json      held-out inputs and scikit-learn's probabilities for them
    active              the version being served (one line)

Version folders are renamed into place and the pointer replaced atomically,
so readers never see half an artifact; without a pointer the newest version
is served. Nothing is unpickled: artifacts are ONNX and JSON, each file
checked against the manifest's SHA-256 before use.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from app.ml.errors import ArtifactError, ModelNotFound

MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
PARITY_FILE = "parity.json"
ACTIVE_FILE = "active"
_VERSION = re.compile(r"^v([1-9][0-9]{0,8})$")

PointerStamp = Optional[Tuple[int, int, int]]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def version_number(version: str) -> Optional[int]:
    match = _VERSION.match(version)
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class Artifact:
    """A version's files, read once and verified against the manifest."""

    manifest: Dict[str, Any]
    model_bytes: bytes
    parity: Dict[str, Any]

    @property
    def version(self) -> str:
        return str(self.manifest["version"])


class Registry:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # ------------------------------------------------------------ versions
    def versions(self) -> List[str]:
        """Registered versions, oldest first."""
        if not self.root.is_dir():
            return []
        found = []
        for entry in self.root.iterdir():
            number = version_number(entry.name)
            if number is not None and (entry / MANIFEST_FILE).is_file():
                found.append((number, entry.name))
        return [name for _, name in sorted(found)]

    def _folder(self, version: str) -> Path:
        if version_number(version) is None:
            raise ModelNotFound()
        folder = self.root / version
        if not (folder / MANIFEST_FILE).is_file():
            raise ModelNotFound()
        return folder

    def read_manifest(self, version: str) -> Dict[str, Any]:
        path = self._folder(version) / MANIFEST_FILE
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"unreadable manifest for {version}: {exc}") from exc
        if not isinstance(manifest, dict) or manifest.get("version") != version:
            raise ArtifactError(f"manifest of {version} does not describe {version}")
        return manifest

    def manifests(self) -> List[Dict[str, Any]]:
        """Manifests of every readable version, newest first."""
        result = []
        for version in reversed(self.versions()):
            try:
                result.append(self.read_manifest(version))
            except ArtifactError:
                continue  # a damaged folder is not listed; activation reports it
        return result

    def read_artifact(self, version: str) -> Artifact:
        """A version's files, verified against the manifest. Raises
        ModelNotFound, or ArtifactError when a file is missing, unreadable or
        does not match its checksum."""
        manifest = self.read_manifest(version)
        folder = self.root / version
        try:
            model_bytes = (folder / MODEL_FILE).read_bytes()
            parity_bytes = (folder / PARITY_FILE).read_bytes()
        except OSError as exc:
            raise ArtifactError(f"missing file in {version}: {exc}") from exc
        if sha256_bytes(model_bytes) != manifest.get("sha256"):
            raise ArtifactError(f"checksum mismatch for {version}/{MODEL_FILE}")
        if sha256_bytes(parity_bytes) != manifest.get("parity_sha256"):
            raise ArtifactError(f"checksum mismatch for {version}/{PARITY_FILE}")
        try:
            parity = json.loads(parity_bytes)
        except ValueError as exc:
            raise ArtifactError(f"unreadable parity data for {version}") from exc
        return Artifact(manifest=manifest, model_bytes=model_bytes, parity=parity)

    def register(
        self, model_bytes: bytes, manifest: Dict[str, Any], parity: Dict[str, Any]
    ) -> Dict[str, Any]:
        """Store a new version atomically and return its manifest (with the
        version, checksums and path filled in). Concurrent registrations get
        distinct versions."""
        self.root.mkdir(parents=True, exist_ok=True)
        parity_bytes = json.dumps(parity).encode()
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.root))
        staging.chmod(0o755)
        try:
            (staging / MODEL_FILE).write_bytes(model_bytes)
            (staging / PARITY_FILE).write_bytes(parity_bytes)
            for _ in range(100):
                numbers = [version_number(v) or 0 for v in self.versions()]
                version = f"v{max(numbers, default=0) + 1}"
                full = {
                    **manifest,
                    "version": version,
                    "sha256": sha256_bytes(model_bytes),
                    "parity_sha256": sha256_bytes(parity_bytes),
                }
                (staging / MANIFEST_FILE).write_text(json.dumps(full, indent=2))
                for child in staging.iterdir():
                    _fsync_path(child)
                _fsync_path(staging)
                try:
                    # Fails if another process took this version in the meantime.
                    os.rename(staging, self.root / version)
                except OSError:
                    continue
                _fsync_path(self.root)
                return full
            raise ArtifactError("could not allocate a version number")
        finally:
            if staging.exists():
                shutil.rmtree(staging)

    # ------------------------------------------------------------ active pointer
    @property
    def pointer_path(self) -> Path:
        return self.root / ACTIVE_FILE

    def pointer_stamp(self) -> PointerStamp:
        """Cheap change detector for the pointer (inode, mtime, size)."""
        try:
            st = os.stat(self.pointer_path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def active_version(self) -> Optional[str]:
        """The version named by the pointer; without one, the newest version."""
        try:
            named = self.pointer_path.read_text().strip()
        except FileNotFoundError:
            named = ""
        if named and version_number(named) is not None:
            return named
        versions = self.versions()
        return versions[-1] if versions else None

    def set_active(self, version: str) -> None:
        """Point every process at `version` (atomic replace, durable)."""
        self._folder(version)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".active-{uuid.uuid4().hex}"
        with open(tmp, "w") as handle:
            handle.write(version + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.pointer_path)
        _fsync_path(self.root)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
