"""gRPC loads, driven by ``h2load`` (nghttp2-client, from Debian's packages): one prepared request (a gRPC
length-prefixed protobuf message) sent over HTTP/2 with gRPC's headers, on ``--workers``' connection count, with
the server's CPU per request measured as for wrk (``bench/wrkrun.py``). h2load prints no percentiles: they are
computed from its per-request log (``--log-file``). h2load counts HTTP statuses only (a gRPC error is HTTP 200 with
``grpc-status`` in the trailers), so each load is checked with a real gRPC call before it is measured."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.common import cpu_seconds, log, machine_busy_seconds
from bench.wrkrun import Load, WrkResult


@dataclass
class GrpcLoad(Load):
    """A unary gRPC method's load: ``url`` is ``http://host:port/package.Service/Method``, ``message`` the
    serialized request (every call sends the same one), ``headers`` the metadata (``authorization: Bearer ...``)."""

    message: bytes = b""

    def framed(self) -> bytes:
        """The request body on the wire: uncompressed flag, 4-byte length, the message."""
        return b"\x00" + len(self.message).to_bytes(4, "big") + self.message


def check_grpc_load(load: GrpcLoad) -> None:
    """One real call of the load's method, which must succeed (h2load sees only HTTP 200)."""
    import grpc

    target, _, method = load.url.removeprefix("http://").partition("/")
    if not target.startswith("127.0.0.1:"):
        raise ValueError(f"loopback only: {load.url}")
    metadata = [tuple(h.split(": ", 1)) for h in load.headers if not h.lower().startswith(("content-type", "te:"))]
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(f"/{method}", request_serializer=None, response_deserializer=None)
        call(load.message, metadata=metadata, timeout=30)


def _percentile(sorted_values: Sequence[float], fraction: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


def run_h2load(load: GrpcLoad, server_pids: Sequence[int], *, threads: int, connections: int, duration: float,
               work_dir: Path, rate: float | None = None, label: str = "") -> WrkResult:
    """One h2load run of ``load``: ``connections`` clients with one call in flight each (as wrk's connections),
    for ``duration`` seconds; at ``rate`` calls per second in total when given."""
    if not load.url.startswith("http://127.0.0.1:"):
        raise ValueError(f"loopback only: {load.url}")
    threads = min(threads, connections)
    fd, body = tempfile.mkstemp(prefix="grpc-", suffix=".bin", dir=work_dir)
    with os.fdopen(fd, "wb") as fh:
        fh.write(load.framed())
    log_file = Path(body).with_suffix(".log")
    argv = ["h2load", "-c", str(connections), "-t", str(threads), "-m", "1", "-D", f"{duration:g}",
            "-d", body, "--log-file", str(log_file), "-H", "content-type: application/grpc", "-H", "te: trailers"]
    for header in load.headers:
        argv += ["-H", header]
    if rate:
        argv.append(f"--rps={max(rate / connections, 0.1):.2f}")
    argv.append(load.url)
    cpu_before, busy_before = cpu_seconds(server_pids), machine_busy_seconds()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    cpu_after, busy_after = cpu_seconds(server_pids), machine_busy_seconds()
    Path(body).unlink(missing_ok=True)
    latencies: list[float] = []
    non_2xx = 0
    if log_file.exists():
        for line in log_file.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3:
                latencies.append(int(parts[2]) / 1000)
                non_2xx += not parts[1].startswith("2")
        log_file.unlink()
    finished = re.search(r"finished in ([\d.]+)(m?s)", proc.stdout)
    counts = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                       r"(\d+) errored, (\d+) timeout", proc.stdout)
    if proc.returncode != 0 or finished is None or counts is None:
        raise RuntimeError(f"h2load failed ({proc.returncode}): {proc.stdout[-2000:]} {proc.stderr[-2000:]}")
    seconds = float(finished.group(1)) / (1000 if finished.group(2) == "ms" else 1)
    requests = int(counts.group(2))
    errors = int(counts.group(4)) + int(counts.group(5)) + int(counts.group(6))
    latencies.sort()
    result = WrkResult(
        rps=requests / seconds if seconds else 0.0, requests=requests, seconds=seconds,
        p50_ms=_percentile(latencies, 0.5), p90_ms=_percentile(latencies, 0.9), p99_ms=_percentile(latencies, 0.99),
        max_ms=latencies[-1] if latencies else 0.0, errors=errors, non_2xx=non_2xx,
        cpu_ms_per_req=(cpu_after - cpu_before) * 1000 / requests if requests and server_pids else None,
        connections=connections, threads=threads, target_rps=rate,
        # h2load's own CPU is not told apart from other processes' here: an upper bound of the noise.
        other_cores=max(0.0, (busy_after - busy_before) - (cpu_after - cpu_before)) / seconds if seconds else None)
    log(f"  {label or load.url}: {result.rps:,.0f} req/s p50 {result.p50_ms:.2f} ms p99 {result.p99_ms:.2f} ms"
        + (f" (target {rate:,.0f}/s)" if rate else "")
        + (f" cpu {result.cpu_ms_per_req:.3f} ms/req" if result.cpu_ms_per_req is not None else "")
        + (f" ERRORS {errors} non-2xx {non_2xx}" if errors or non_2xx else ""))
    return result

