"""The default `keel serve` worker count: CPUs in the affinity mask, lowered
to the cgroup CPU quota (read from fake cgroup trees here)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import pytest

from app.core.cpu_count import available_cpus, cgroup_cpu_quota

AFFINITY = len(os.sched_getaffinity(0))


def _v2(root: Path, cpu_max: Optional[str], path: str = "") -> Path:
    """A cgroup v2 tree with `cpu.max` in the process's cgroup at `path`;
    returns the fake /proc/self/cgroup."""
    group = root / path
    group.mkdir(parents=True, exist_ok=True)
    if cpu_max is not None:
        (group / "cpu.max").write_text(cpu_max + "\n")
    proc = root.parent / "proc-self-cgroup"
    proc.write_text(f"0::/{path}\n")
    return proc


@pytest.mark.parametrize(
    "cpu_max, quota",
    [("max 100000", None), ("200000 100000", 2.0), ("150000 100000", 1.5), ("50000 100000", 0.5)],
)
def test_v2_quota_is_quota_over_period(tmp_path: Path, cpu_max: str, quota: float) -> None:
    root = tmp_path / "cgroup"
    assert cgroup_cpu_quota(root, _v2(root, cpu_max)) == quota


def test_v2_quota_is_the_tightest_along_the_path(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    proc = _v2(root, "max 100000", "system.slice/keel.service")
    (root / "system.slice" / "cpu.max").write_text("300000 100000\n")
    assert cgroup_cpu_quota(root, proc) == 3.0


def test_v1_quota_from_cfs_files(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    cpu = root / "cpu,cpuacct"
    cpu.mkdir(parents=True)
    (cpu / "cpu.cfs_quota_us").write_text("100000\n")
    (cpu / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_quota(root, tmp_path / "missing") == 1.0
    (cpu / "cpu.cfs_quota_us").write_text("-1\n")  # v1's "no limit"
    assert cgroup_cpu_quota(root, tmp_path / "missing") is None


def test_no_cgroup_files_means_no_quota(tmp_path: Path) -> None:
    assert cgroup_cpu_quota(tmp_path / "none", tmp_path / "none-either") is None
    assert available_cpus(tmp_path / "none", tmp_path / "none-either") == AFFINITY


def test_workers_are_the_affinity_mask_lowered_to_the_quota_rounded_up(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    assert available_cpus(root, _v2(root, "50000 100000")) == 1  # at least one
    assert available_cpus(root, _v2(root, "1000000000 100000")) == AFFINITY  # never above it
    if AFFINITY >= 2:
        assert available_cpus(root, _v2(root, "150000 100000")) == 2


def test_malformed_cpu_max_is_ignored(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    assert cgroup_cpu_quota(root, _v2(root, "garbage")) is None
