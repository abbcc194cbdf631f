"""Wall time of CLI commands (hyperfine when installed, else a loop of runs) and ``keyless serve`` readiness."""

from __future__ import annotations

import json
import shlex
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench.common import Processes, log
from bench.keylessctl import start_keyless


def time_command(argv: Sequence[str], env: dict[str, str], *, runs: int, warmup: int = 2) -> dict[str, object]:
    """Median, mean, min and max wall time (ms) of ``argv``; each run must exit 0."""
    check = subprocess.run(list(argv), env=env, capture_output=True, text=True, timeout=120)
    if check.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)} failed ({check.returncode}): {check.stderr[-1500:]}")
    hyperfine = shutil.which("hyperfine")
    if hyperfine:
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            subprocess.run([hyperfine, "--style", "none", "-N", "--warmup", str(warmup), "--runs", str(runs),
                            "--export-json", out.name, shlex.join(argv)],
                           env=env, check=True, capture_output=True, timeout=600)
            result = json.loads(Path(out.name).read_text())["results"][0]
        times = [t * 1000 for t in result["times"]]
        tool = "hyperfine"
    else:
        for _ in range(warmup):
            subprocess.run(list(argv), env=env, capture_output=True, check=True, timeout=120)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            subprocess.run(list(argv), env=env, capture_output=True, check=True, timeout=120)
            times.append((time.perf_counter() - t0) * 1000)
        tool = "perf_counter loop"
    summary = {"median_ms": statistics.median(times), "mean_ms": statistics.fmean(times), "min_ms": min(times),
               "max_ms": max(times), "runs": runs, "tool": tool, "command": shlex.join(argv)}
    log(f"  {shlex.join(argv)[:90]}: median {summary['median_ms']:.0f} ms ({tool}, {runs} runs)")
    return summary


def serve_ready_times(procs: Processes, work: Path, *, runs: int) -> dict[str, object]:
    """``keyless serve --port 0 --data-dir D`` (default options otherwise) until endpoints.json and /healthz:
    on a new data dir (first start: creates the master key, database, owner, CA) and on a restart."""
    first: list[float] = []
    restart: list[float] = []
    for i in range(runs):
        data_dir = work / f"ready-{i}"
        shutil.rmtree(data_dir, ignore_errors=True)
        server = start_keyless(procs, data_dir, workers=1)
        first.append(server.ready_s * 1000)
        procs.stop(server.proc)
        server = start_keyless(procs, data_dir, workers=1)
        restart.append(server.ready_s * 1000)
        procs.stop(server.proc)
        shutil.rmtree(data_dir, ignore_errors=True)
    out = {"first_start_median_ms": statistics.median(first), "restart_median_ms": statistics.median(restart),
           "first_start_ms": first, "restart_ms": restart, "runs": runs}
    log(f"  keyless serve ready: first start {out['first_start_median_ms']:.0f} ms, "
        f"restart {out['restart_median_ms']:.0f} ms (median of {runs})")
    return out
