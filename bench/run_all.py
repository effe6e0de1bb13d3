"""Run every benchmark under bench/, one after another (what `make bench` calls).

    .venv/bin/python bench/run_all.py [--full] [--only NAME ...] [--timeout 1200]

Each benchmark runs in its own process with short settings (below) unless
--full is given, in which case each runs with its own defaults (mixed_load:
60 s). A failing or timed-out benchmark does not stop the others; the exit
status is 1 if any failed. Any bench/*.py not listed here (except the shared
modules) is run too, without arguments.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent

# name -> arguments for a short run (see each script's --help).
SHORT: Dict[str, List[str]] = {
    "foundation": [],  # takes no flags
    "transfers": ["--seconds", "5", "--warmup", "1"],
    "emails": ["--emails", "1000", "--noops", "2000"],
    "csv_upload": ["--sizes", "10", "--repeat", "2", "--huge-mb", "200"],
    "predict": ["--duration", "5"],
    "mixed_load": ["--quick"],
}
NOT_BENCHMARKS = {"common", "run_all"}


def benchmarks() -> List[str]:
    found = sorted(p.stem for p in BENCH.glob("*.py") if p.stem not in NOT_BENCHMARKS)
    ordered = [name for name in SHORT if name in found]
    return ordered + [name for name in found if name not in SHORT]


def stop_group(proc: subprocess.Popen) -> None:  # type: ignore[type-arg]
    """Stop the benchmark and everything it started (its own process group)."""
    for sig, wait in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run(command: List[str], timeout: float) -> Optional[int]:
    """Exit code, or None on timeout. The benchmark runs in its own session so
    a timeout or Ctrl-C also stops the servers it started."""
    proc = subprocess.Popen(command, cwd=ROOT, start_new_session=True)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_group(proc)
        return None
    except KeyboardInterrupt:
        stop_group(proc)
        raise


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="each benchmark's own defaults")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these")
    parser.add_argument(
        "--timeout", type=float, default=1200.0, help="seconds allowed per benchmark"
    )
    args = parser.parse_args()

    names = benchmarks()
    if args.only:
        unknown = sorted(set(args.only) - set(names))
        if unknown:
            parser.error(f"unknown benchmark(s): {', '.join(unknown)}; have: {', '.join(names)}")
        names = [name for name in names if name in args.only]

    results: List[Tuple[str, str, float]] = []
    for name in names:
        extra = [] if args.full else SHORT.get(name, [])
        command = [sys.executable, str(BENCH / f"{name}.py"), *extra]
        print(f"\n{'=' * 78}\n# bench/{name}.py {' '.join(extra)}\n{'=' * 78}", flush=True)
        started = time.monotonic()
        code = run(command, args.timeout)
        if code is None:
            outcome = f"FAILED (timeout after {args.timeout:.0f} s)"
        else:
            outcome = "ok" if code == 0 else f"FAILED (exit {code})"
        elapsed = time.monotonic() - started
        print(f"# bench/{name}.py: {outcome} in {elapsed:.0f} s", flush=True)
        results.append((name, outcome, elapsed))

    print(f"\n{'=' * 78}\n## summary")
    print("| benchmark | result | seconds |\n|---|---|---|")
    for name, outcome, elapsed in results:
        print(f"| {name} | {outcome} | {elapsed:.0f} |")
    failed = [name for name, outcome, _ in results if outcome != "ok"]
    if failed:
        print(f"\n{len(failed)} of {len(results)} benchmarks failed: {', '.join(failed)}")
        return 1
    print(f"\nall {len(results)} benchmarks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
