"""Profiles of a server under load: py-spy's raw (collapsed) stacks, summarised by self and inclusive time.

``bench/run --profile`` records one keyless process for each method while wrk loads it (a separate wrk run,
not the measured one) and writes ``bench/results/profile/METHOD.txt`` (the summary) and ``METHOD.raw``.
"""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from pathlib import Path

from bench.common import REPO

PY_SPY = REPO / ".venv" / "bin" / "py-spy"
_FRAME = re.compile(r"^(?P<func>.+?) \((?P<file>[^:()]+)(?::\d+)?\)$")

# Where time goes, first match wins (from the leaf up): the categories the performance notes talk about.
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("RSA sign (OpenSSL)", ("sign_pkcs1_sha256", "key.sign")),
    ("RSA verify", ("verify_rs256", "pyjwt", "jwt/api_jws", "jwt/algorithms")),
    ("SQLite", ("storage/sqlite.py", "sqlite3")),
    ("PostgreSQL client", ("storage/postgres.py", "asyncpg")),
    ("audit log", ("service/audit.py", "http/audit.py")),
    ("policy evaluation", ("domain/policy.py", "domain/conditions.py", "celpy")),
    ("token mint / HMAC", ("crypto/tokens.py",)),
    ("keyless service + http", ("keyless/service", "keyless/http", "keyless/metadata", "keyless/crypto")),
    ("Starlette", ("starlette/",)),
    ("uvicorn + httptools", ("uvicorn/", "httptools")),
    ("asyncio / uvloop", ("asyncio/", "uvloop")),
)


# Frames every sample of the server's main thread goes through: left out of the inclusive list.
_OUTER = ("typer/", "runpy", "keyless/cli/", "keyless/server/", "keyless/__main__.py", "asyncio/runners.py",
          "uvloop/__init__.py", "threading.py", "concurrent/futures/thread.py")


def record(pid: int, seconds: float, out: Path) -> None:
    """``py-spy record -p PID -d SECONDS -f raw``; waits for it."""
    subprocess.run([str(PY_SPY), "record", "-p", str(pid), "-d", str(int(seconds)), "-f", "raw", "-o", str(out),
                    "--nonblocking"], check=True, capture_output=True, timeout=seconds + 60)


def _frames(stack: str) -> list[tuple[str, str]]:
    out = []
    for raw in stack.split(";"):
        m = _FRAME.match(raw.strip())
        out.append((m["func"], m["file"]) if m else (raw.strip(), ""))
    return out


def summarise(raw: Path, top: int = 15) -> str:
    """Self time by function, inclusive time by function, and the category table."""
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    categories: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = _frames(stack)
        if not frames:
            continue
        func, file = frames[-1]
        self_time[f"{func} ({_short(file)})"] += count
        for name in {f"{f} ({_short(p)})" for f, p in frames if not any(o in p for o in _OUTER)}:
            inclusive[name] += count
        categories[_category(frames)] += count
    if total == 0:
        return "no samples\n"
    lines = [f"{total} samples (100 Hz, one process, idle time excluded)", "", "where the time goes (leaf-up):"]
    for name, count in categories.most_common():
        lines.append(f"  {100 * count / total:5.1f}%  {name}")
    lines += ["", "self time:"]
    lines += [f"  {100 * c / total:5.1f}%  {n}" for n, c in self_time.most_common(top)]
    lines += ["", "inclusive time (below the server's start-up frames):"]
    lines += [f"  {100 * c / total:5.1f}%  {n}" for n, c in inclusive.most_common(top * 2)]
    return "\n".join(lines) + "\n"


def category_shares(raw: Path) -> dict[str, float]:
    counts: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if stack and count_text.isdigit():
            counts[_category(_frames(stack))] += int(count_text)
            total += int(count_text)
    return {k: round(100 * v / total, 1) for k, v in counts.most_common()} if total else {}


def _category(frames: list[tuple[str, str]]) -> str:
    for func, file in reversed(frames):
        text = f"{func} {file}"
        for name, needles in CATEGORIES:
            if any(n in text for n in needles):
                return name
    return "other"


def _short(path: str) -> str:
    for marker in ("site-packages/", "src/", "lib/python3"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path
