"""A test run leaves nothing behind: what it creates (embedded servers' data,
the session's model, tmp_path folders) lives under the repo's .keel/ and is
removed when the run ends; and the run ends without asyncio complaining
about a task that outlived its event loop."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from app.core.config import REPO_ROOT

INNER_TEST = """
import os
from pathlib import Path


def test_report_where_files_go(tmp_path: Path) -> None:
    (tmp_path / "scratch.txt").write_text("x")
    Path(os.environ["KEEL_INNER_REPORT"]).write_text(
        os.environ["DATA_DIR"] + "\\n" + str(tmp_path)
    )
"""


def test_a_test_run_keeps_its_files_under_keel_and_removes_them_at_exit(tmp_path: Path) -> None:
    inner = tmp_path / "inner"
    inner.mkdir()
    (inner / "test_inner.py").write_text(INNER_TEST)
    report = tmp_path / "report.txt"
    env = {k: v for k, v in os.environ.items() if k != "KEEL_TEST_DATA_DIR"}
    env["KEEL_INNER_REPORT"] = str(report)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "tests.conftest",  # this suite's fixtures and set-up, for a file outside it
            "--rootdir",
            str(REPO_ROOT),
            "-c",
            str(REPO_ROOT / "pyproject.toml"),
            str(inner / "test_inner.py"),
        ],
        cwd=str(REPO_ROOT),
        env=env,
        capture_output=True,
        text=True,
        timeout=600,  # hang guard
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    data_dir, inner_tmp = (Path(line) for line in report.read_text().splitlines())
    keel_dir = (REPO_ROOT / ".keel").resolve()
    assert keel_dir in data_dir.resolve().parents, data_dir
    assert data_dir.resolve() in Path(inner_tmp).resolve().parents, inner_tmp
    assert not data_dir.exists()  # removed at exit (models, embedded servers' data, tmp_path)
    assert "Exception ignored" not in done.stderr, done.stderr[-3000:]
