"""The data dir as every process sees it: finding it, the one server that may use it (a lock), and
``endpoints.json``, which that server writes while it runs and the CLI trusts only while its process lives."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Any

DEFAULT_NAME = ".keyless"
ENDPOINTS = "endpoints.json"
LOCK = "serve.lock"


def find_data_dir() -> Path:
    """``./.keyless``, or else ``.keyless`` in the nearest parent directory that has one (so the CLI works from
    anywhere in a project), or else ``./.keyless`` (where ``keyless serve`` will create it)."""
    here = Path(DEFAULT_NAME)
    if here.is_dir():
        return here
    for directory in Path.cwd().resolve().parents:
        if (directory / DEFAULT_NAME).is_dir():
            return directory / DEFAULT_NAME
    return here


def pid_alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, run by someone else
        return True
    return True


def read_endpoints(data_dir: Path) -> dict[str, Any] | None:
    """What the server on ``data_dir`` announced, or None when none runs (no file, or its process is gone:
    a server killed with SIGKILL leaves the file behind)."""
    try:
        data = json.loads((data_dir / ENDPOINTS).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not pid_alive(data.get("pid")):
        return None
    return data


def write_endpoints(data_dir: Path, endpoints: dict[str, object]) -> Path:
    path = data_dir / ENDPOINTS
    tmp = data_dir / f".endpoints.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(endpoints, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def remove_endpoints(data_dir: Path) -> None:
    path = data_dir / ENDPOINTS
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


class DataDirInUse(SystemExit):
    """Another server holds the data dir: one line saying which."""


class DataDirLock:
    """Held by the one ``keyless serve`` using a data dir, for as long as its process lives (the kernel drops
    an flock when the process dies, however it dies)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK
        self.fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            other = read_endpoints(self.path.parent)
            who = f"pid {other['pid']}, {other.get('api')}" if other else "still starting"
            raise DataDirInUse(f"keyless serve: another keyless server ({who}) is using the data dir "
                               f"{self.path.parent}; stop it, or give this one its own --data-dir.") from None
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None


def describe(endpoints: dict[str, object], attached: str | None) -> str:
    """What ``keyless serve`` prints once it is ready, and ``keyless status`` prints for a running server.
    ``attached`` is the metadata server's account: '' for none, None when unknown."""
    data_dir = Path(str(endpoints["dataDir"]))
    lines = [f"keyless is serving (pid {endpoints['pid']}, project {endpoints.get('project')})",
             f"  API               {endpoints['api']}",
             f"  console           {str(endpoints['api']).rstrip('/')}/console/"]
    if "grpc" in endpoints:
        lines.append(f"  gRPC              {endpoints['grpc']}")
    if "proxy" in endpoints:
        lines.append(f"  proxy             {endpoints['proxy']}"
                     + ("  (password in " + str(endpoints["proxyPasswordFile"]) + ")"
                        if "proxyPasswordFile" in endpoints else ""))
    if "metadata" in endpoints:
        serves = ("" if attached is None else f"  (serves {attached})" if attached
                  else "  (no account attached: keyless metadata attach EMAIL)")
        lines.append(f"  metadata server   {endpoints['metadata']}{serves}")
    universe = endpoints.get("universe")
    if isinstance(universe, dict):
        lines.append(f"  universe domains  {universe['url']}  ({', '.join(universe['domains'])})")
    if "workers" in endpoints:
        lines.append(f"  workers           {endpoints['workers']}")
    lines += [f"  data dir          {data_dir}",
              f"  owner credential  {data_dir / 'owner.json'}",
              "next: eval \"$(keyless env)\"   # point Google's clients, gcloud and keyless's CLI at this server"]
    return "\n".join(lines)
