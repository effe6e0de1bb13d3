"""The multi-host deployment, built and broken on purpose: deploy/cluster.sh
up, drill (the seven fault drills under load through HAProxy), down.

Needs root and `ip netns` (network namespaces and bridges); the engines
(HAProxy, PgBouncer, PostgreSQL, Redis) are installed by `up` from the
distribution's packages when missing. The cluster's addresses exist only
inside the namespaces it creates; nothing reaches the machine's own servers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

import pytest

from app.core.config import REPO_ROOT

SCRIPT = REPO_ROOT / "deploy" / "cluster.sh"
STATE = REPO_ROOT / ".keel" / "cluster"
DRILLS = range(1, 8)


def _missing() -> Optional[str]:
    if sys.platform != "linux":
        return "network namespaces are Linux only"
    if os.geteuid() != 0:
        return "needs root to create network namespaces and bridges"
    if shutil.which("ip") is None:
        return "needs `ip` (iproute2)"
    if subprocess.run(["ip", "netns", "list"], capture_output=True).returncode != 0:
        return "`ip netns` is not available here"
    return None


pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(_missing() is not None, reason=str(_missing())),
]


def cluster(*args: str, timeout: float) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT
    )
    print(f"$ deploy/cluster.sh {' '.join(args)}  -> {result.returncode}")
    print(result.stdout[-20_000:], result.stderr[-5_000:], sep="\n")
    return result


def leftovers() -> List[str]:
    """Namespaces, links and processes of this checkout's cluster still around."""
    found: List[str] = []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    found += [f"netns {line.split()[0]}" for line in netns.splitlines() if line.startswith("keel-")]
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    for line in links.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name in ("keelfront0", "keelback0") or name.startswith(("kf-", "kb-")):
            found.append(f"link {name}")
    marker = str(STATE).encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if marker in cmdline or marker in environ:
            command = cmdline.replace(b"\0", b" ")[:120].decode(errors="replace")
            found.append(f"process {proc.name}: {command}")
    if STATE.exists():
        found += [f"file {p}" for p in STATE.iterdir() if p.name != "logs"]
    return found


def server_errors() -> str:
    """The API hosts' error lines (a 500's traceback), for a failed drill."""
    lines: List[str] = []
    for log in sorted((STATE / "logs").glob("api*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if '"level": "ERROR"' in line or "Traceback" in line:
                lines.append(f"{log.name}: {line[:3000]}")
    return "\n".join(lines[-20:])


def test_cluster_up_drill_down() -> None:
    try:
        up = cluster("up", timeout=600)
        assert up.returncode == 0, "deploy/cluster.sh up failed"
        drill = cluster("drill", timeout=600)
        for n in DRILLS:
            assert f"drill {n} PASS" in drill.stdout, f"drill {n} did not pass\n{server_errors()}"
        assert "drill 0 PASS" in drill.stdout, "jobs or ledger wrong after the load stopped"
        assert drill.returncode == 0
    finally:
        down = cluster("down", timeout=180)
    assert down.returncode == 0
    assert leftovers() == []
    # Idempotent: a second `down` finds nothing and succeeds.
    assert cluster("down", timeout=60).returncode == 0
