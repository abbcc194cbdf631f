"""What the HTTP sections load: the bare reference apps, and ``Subject`` (one server under one load, with every
run of it), shared by the benchmark's run (``bench/main.py``) and its comparison of revisions
(``bench/compare.py``)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import BENCH, Processes, children_of, wait_for
from bench.wrkrun import Load, WrkResult, pick


def start_bare_app(procs: Processes, app: str, workers: int, work: Path) -> tuple[int, list[int], Any]:
    ready = work / f"bare-{app}.json"
    ready.unlink(missing_ok=True)
    proc = procs.start([sys.executable, "-m", "bench.bareapps", "--app", app, "--workers", str(workers),
                        "--ready-file", str(ready)], log_file=work / f"bare-{app}.log", cwd=BENCH.parent)

    def is_ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"bare {app} app exited: {(work / f'bare-{app}.log').read_text()[-2000:]}")
        return ready.exists()

    wait_for(is_ready, 60, f"bare {app} app", interval=0.02)
    info = json.loads(ready.read_text())
    return int(info["port"]), [int(p) for p in info["pids"]], proc


def bare_sign_load(port: int) -> Load:
    """The bare signing app's load: a pool of small JSON claims to sign."""
    bodies = [json.dumps({"sub": f"user-{i}", "aud": f"https://svc-{i % 16}.example.com"}) for i in range(64)]
    return Load(f"http://127.0.0.1:{port}/", "POST", ["Content-Type: application/json"], bodies)


@dataclass
class Subject:
    """One server loaded in an HTTP section: a reference app, a keyless method or the peer."""

    name: str
    load: Load
    pids: list[int]
    runs: list[WrkResult] = field(default_factory=list)
    half_runs: list[WrkResult] = field(default_factory=list)
    # RSA-bound methods: (this method's run, the bare signing app's run) back to back.
    pairs: list[tuple[WrkResult, WrkResult]] = field(default_factory=list)
    # The database server's processes, when it has one (PostgreSQL): their CPU is measured apart.
    db_pids: Callable[[], list[int]] | None = None

    def result(self) -> dict[str, Any]:
        out: dict[str, Any] = {"max": pick(self.runs, by="rps").as_dict()}
        if self.half_runs:
            out["half"] = pick(self.half_runs, by="p99").as_dict()
        if self.pairs:
            out["pairs"] = [{"rps": run.rps, "cpu_ms_per_req": run.cpu_ms_per_req,
                             "bare_rps": bare.rps, "bare_cpu_ms_per_req": bare.cpu_ms_per_req}
                            for run, bare in self.pairs]
        return out


class PostgresPids:
    """The postmaster and its backends, listed afresh at each measurement (backends come and go)."""

    def __init__(self, data_dir: Path) -> None:
        self.pidfile = data_dir / "postmaster.pid"

    def __call__(self) -> list[int]:
        try:
            master = int(self.pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return []
        return [master, *children_of(master)]
