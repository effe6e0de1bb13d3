"""schemathesis against the running server's /openapi.json, authenticated.

Every check (no 5xx, documented status codes and schemas, invalid input
rejected, valid input accepted) with a bounded example budget and a fixed
seed, so CI runs are repeatable.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from tests.e2e.conftest import start_server, stop_process

CONFIG = Path(__file__).with_name("schemathesis.toml")
MAX_EXAMPLES = os.environ.get("KEEL_FUZZ_EXAMPLES", "25")


@pytest.fixture
def fuzz_server(committed_db: Any) -> Iterator[str]:
    # Fuzzed logins must meet 401s, not the throttle's 429s.
    proc, base_url = start_server({"LOGIN_MAX_FAILURES": "1000000"})
    try:
        yield base_url
    finally:
        stop_process(proc)


def test_openapi_fuzzing_finds_no_server_errors_or_schema_violations(
    fuzz_server: str, tmp_path: Path
) -> None:
    live_server = fuzz_server
    out = Path(os.environ.get("KEEL_FUZZ_REPORT", str(tmp_path / "schemathesis.txt")))
    with httpx.Client(base_url=live_server, timeout=10) as http:
        http.post(
            "/api/users", json={"email": "fuzz@example.com", "password": "password-1", "name": "F"}
        )
        token = http.post(
            "/token", data={"username": "fuzz@example.com", "password": "password-1"}
        ).json()["access_token"]
        http.post(
            "/api/posts", json={"title": "seed"}, headers={"Authorization": f"Bearer {token}"}
        )
    st = Path(sys.executable).with_name("st")
    result = subprocess.run(
        [
            str(st),
            "--config-file",
            str(CONFIG),
            "run",
            f"{live_server}/openapi.json",
            "-H",
            f"Authorization: Bearer {token}",
            "--checks",
            "all",
            "--max-examples",
            MAX_EXAMPLES,
            "--seed",
            "20261125",
            "--workers",
            "2",
            "--suppress-health-check",
            "all",
            "--request-timeout",
            "20",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        # Newer schemathesis keeps a cache of past failures in ./.schemathesis
        # and replays it first: each run starts from none, outside the repo.
        cwd=str(tmp_path),
    )
    out.write_text(result.stdout)
    summary = result.stdout[-6000:]
    print(summary)
    assert result.returncode == 0, summary
