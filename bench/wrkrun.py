"""Runs wrk (with ``bench/lua/pool.lua``) against a loopback server and measures the server's CPU per request."""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.common import BENCH, cpu_seconds, log, machine_busy_seconds

POOL_LUA = BENCH / "lua" / "pool.lua"


@dataclass
class WrkResult:
    """One wrk run: throughput, latency percentiles (ms), errors and server CPU per request (ms)."""

    rps: float
    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    non_2xx: int
    cpu_ms_per_req: float | None
    connections: int
    threads: int
    target_rps: float | None = None
    # Cores kept busy during the run by everything but the server and wrk (other engineers' tests): noise.
    other_cores: float | None = None
    # CPU of the database server's processes per request (PostgreSQL rows), apart from the server's own.
    db_cpu_ms_per_req: float | None = None
    # With repeats: every run's req/s and p99; the fields above are the best run's (see ``pick``).
    runs_rps: list[float] | None = None
    runs_p99_ms: list[float] | None = None
    runs_cpu_ms_per_req: list[float | None] | None = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class Load:
    """What to send: a URL, a method, headers, and a pool of bodies that requests cycle through."""

    url: str
    method: str = "GET"
    headers: Sequence[str] = ()
    bodies: Sequence[str] = ()


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def pick(runs: list[WrkResult], *, by: str) -> WrkResult:
    """The least disturbed of repeated runs: highest req/s (``by="rps"``) or lowest p99 (``by="p99"``).

    On a shared machine other work only ever slows a run down, so the best run is the closest to the truth.
    """
    best = max(runs, key=lambda r: r.rps) if by == "rps" else min(runs, key=lambda r: r.p99_ms)
    return dataclasses.replace(best, runs_rps=[round(r.rps, 1) for r in runs], runs_p99_ms=[r.p99_ms for r in runs],
                               runs_cpu_ms_per_req=[r.cpu_ms_per_req for r in runs])


class Wrk:
    def __init__(self, *, duration: float, threads: int, connections: int, work_dir: Path, repeat: int = 1) -> None:
        self.repeat = repeat
        self.duration = duration
        self.threads = threads
        self.connections = connections
        self.work_dir = work_dir

    def run(self, load: Load, server_pids: Sequence[int], *, rate: float | None = None,
            connections: int | None = None, duration: float | None = None, label: str = "",
            extra_pids: Callable[[], list[int]] | None = None) -> WrkResult:
        conns = connections or self.connections
        threads = min(self.threads, conns)
        secs = duration or self.duration
        from bench.h2loadrun import GrpcLoad, run_h2load  # h2load drives the gRPC loads (it imports this module)
        if isinstance(load, GrpcLoad):
            return run_h2load(load, server_pids, threads=self.threads, connections=conns, duration=secs,
                              work_dir=self.work_dir, rate=rate, label=label)
        pool = "-"
        if load.bodies:
            if any("\n" in b for b in load.bodies):
                raise ValueError("bodies are one per line")
            fd, name = tempfile.mkstemp(prefix="pool-", suffix=".txt", dir=self.work_dir)
            with os.fdopen(fd, "w") as fh:
                fh.write("\n".join(load.bodies) + "\n")
            pool = name
        path = "/" + load.url.split("/", 3)[3] if load.url.count("/") >= 3 else "/"
        base = "/".join(load.url.split("/", 3)[:3])
        if not base.startswith("http://127.0.0.1:"):
            raise ValueError(f"loopback only: {load.url}")
        argv = ["wrk", "-t", str(threads), "-c", str(conns), "-d", f"{secs:g}s", "--latency", "--timeout", "10s"]
        for header in load.headers:
            argv += ["-H", header]
        argv += ["-s", str(POOL_LUA), base + path, "--", pool, load.method, path, str(threads)]
        env = dict(os.environ)
        env.pop("BENCH_RATE", None)
        if rate:
            env["BENCH_RATE"] = f"{rate:.1f}"
        db_before = {pid: cpu_seconds([pid]) for pid in extra_pids()} if extra_pids else {}
        cpu_before, busy_before = cpu_seconds(server_pids), machine_busy_seconds()
        wrk_before = _children_cpu()
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=secs + 60)
        cpu_after, busy_after = cpu_seconds(server_pids), machine_busy_seconds()
        wrk_cpu = _children_cpu() - wrk_before
        # Backends started during the run count whole; those that ended during it are lost (rare: pooled).
        db_cpu = sum(cpu_seconds([pid]) - db_before.get(pid, 0.0) for pid in extra_pids()) if extra_pids else None
        if pool != "-":
            Path(pool).unlink(missing_ok=True)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("WRK_JSON ")), None)
        if proc.returncode != 0 or line is None:
            raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stdout[-2000:]} {proc.stderr[-2000:]}")
        raw = json.loads(line[len("WRK_JSON "):])
        seconds = raw["duration_us"] / 1e6
        requests = int(raw["requests"])
        errors = int(raw["connect_errors"] + raw["read_errors"] + raw["write_errors"] + raw["timeouts"])
        result = WrkResult(
            rps=requests / seconds if seconds else 0.0, requests=requests, seconds=seconds,
            p50_ms=raw["p50_us"] / 1000, p90_ms=raw["p90_us"] / 1000, p99_ms=raw["p99_us"] / 1000,
            max_ms=raw["lat_max_us"] / 1000, errors=errors, non_2xx=int(raw["status_errors"]),
            cpu_ms_per_req=(cpu_after - cpu_before) * 1000 / requests if requests and server_pids else None,
            connections=conns, threads=threads, target_rps=rate,
            other_cores=max(0.0, (busy_after - busy_before) - (cpu_after - cpu_before) - wrk_cpu - (db_cpu or 0.0))
            / seconds if seconds else None,
            db_cpu_ms_per_req=db_cpu * 1000 / requests if db_cpu is not None and requests else None)
        log(f"  {label or load.url}: {result.rps:,.0f} req/s p50 {result.p50_ms:.2f} ms p99 {result.p99_ms:.2f} ms"
            + (f" (target {rate:,.0f}/s)" if rate else "")
            + (f" cpu {result.cpu_ms_per_req:.3f} ms/req" if result.cpu_ms_per_req is not None else "")
            + (f" db cpu {result.db_cpu_ms_per_req:.3f} ms/req" if result.db_cpu_ms_per_req is not None else "")
            + (f" other load {result.other_cores:.2f} cores" if result.other_cores else "")
            + (f" ERRORS {errors} non-2xx {result.non_2xx}" if errors or result.non_2xx else ""))
        return result

    def warm_up(self, load: Load, seconds: float = 1.0) -> None:
        """A short unreported run first: lazily created keys, caches and connection pools are ready after it."""
        self.run(load, [], duration=seconds, label="(warm-up)")

    def best(self, load: Load, server_pids: Sequence[int], *, label: str, rate: float | None = None,
             extra_pids: Callable[[], list[int]] | None = None) -> WrkResult:
        """``repeat`` runs; the best by req/s at max rate, by p99 at a fixed rate."""
        runs = [self.run(load, server_pids, rate=rate, label=label, extra_pids=extra_pids)
                for _ in range(self.repeat)]
        return pick(runs, by="p99" if rate else "rps")

    def max_and_half(self, load: Load, server_pids: Sequence[int], label: str) -> dict[str, object]:
        """Max throughput, then the same load limited to half of it (p99 at half of max rate)."""
        self.warm_up(load)
        peak = self.best(load, server_pids, label=label)
        half = self.best(load, server_pids, rate=peak.rps / 2, label=f"{label} @ half")
        return {"max": peak.as_dict(), "half": half.as_dict()}
