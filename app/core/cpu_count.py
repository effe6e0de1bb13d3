"""How many CPUs this process may actually use (the default `keel serve`
worker count): the smaller of its affinity mask and its cgroup CPU quota,
which the standard library does not report. One worker per host CPU under a
smaller quota throttles them all.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterator, Optional

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")


def available_cpus(
    cgroup_root: Path = CGROUP_ROOT, proc_self_cgroup: Path = PROC_SELF_CGROUP
) -> int:
    """CPUs in the affinity mask, lowered to the cgroup CPU quota (rounded
    up: a quota of 1.5 CPUs keeps two workers busy); at least 1."""
    if hasattr(os, "sched_getaffinity"):
        cpus = len(os.sched_getaffinity(0))
    else:  # not Linux: no affinity, no cgroups
        return os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup_root, proc_self_cgroup)
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)


def cgroup_cpu_quota(
    cgroup_root: Path = CGROUP_ROOT, proc_self_cgroup: Path = PROC_SELF_CGROUP
) -> Optional[float]:
    """The CPU quota of this process's cgroup in CPUs (quota / period), the
    tightest along its path up to the root; None when there is none."""
    quotas = [q for q in (_v2_quota(d) for d in _v2_dirs(cgroup_root, proc_self_cgroup)) if q]
    if not quotas:
        quotas = [q for q in (_v1_quota(d) for d in _v1_dirs(cgroup_root)) if q]
    return min(quotas) if quotas else None


def _v2_dirs(cgroup_root: Path, proc_self_cgroup: Path) -> Iterator[Path]:
    """The process's cgroup v2 directory and its ancestors. Inside a container
    with its own cgroup namespace the path is `/` and the root is its own."""
    path = "/"
    try:
        for line in proc_self_cgroup.read_text().splitlines():
            if line.startswith("0::"):
                path = line[3:] or "/"
    except OSError:
        pass
    current = cgroup_root / path.lstrip("/")
    while True:
        yield current
        if current == cgroup_root or cgroup_root not in current.parents:
            return
        current = current.parent


def _v2_quota(directory: Path) -> Optional[float]:
    try:
        quota, period = (directory / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return _ratio(quota, period)


def _v1_dirs(cgroup_root: Path) -> Iterator[Path]:
    for name in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        yield cgroup_root / name


def _v1_quota(directory: Path) -> Optional[float]:
    try:
        quota = (directory / "cpu.cfs_quota_us").read_text().strip()
        period = (directory / "cpu.cfs_period_us").read_text().strip()
    except OSError:
        return None
    return _ratio(quota, period)


def _ratio(quota: str, period: str) -> Optional[float]:
    """quota/period in CPUs; None for "max" (v2) or -1 (v1): no limit."""
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None
