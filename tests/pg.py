"""Throwaway PostgreSQL clusters for tests: Debian's server binaries, a temp dir, loopback only. ``PostgresCluster``
is one server; ``ReplicatedCluster`` a primary with a synchronous streaming-replication standby, for failover."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def _bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise RuntimeError("PostgreSQL server binaries not found: scripts/test installs Debian's postgresql")
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresCluster:
    """``initdb`` + ``pg_ctl start`` in a temp dir; as root, the server runs as the ``postgres`` user."""

    def __init__(self) -> None:
        self.bin = _bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="keyless-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self._as_root = os.geteuid() == 0
        self._counter = 0

    def _run(self, *args: str) -> None:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if self._as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def start(self) -> PostgresCluster:
        if self._as_root:
            shutil.chown(self.root, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.root} "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "server.log"), "-w", "start")
        return self

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, prefix: str = "t") -> str:
        self._counter += 1
        name = f"{prefix}{os.getpid()}_{self._counter}"
        subprocess.run([str(self.bin.parent / "bin" / "psql") if (self.bin / "psql").exists() else "psql",
                        "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-c",
                        f'CREATE DATABASE "{name}"'], check=True, capture_output=True, timeout=60)
        return self.dsn(name)

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)


class ReplicatedCluster:
    """A primary and one standby replicating from it synchronously (``synchronous_standby_names = '*'``,
    ``synchronous_commit = on``: a commit returns once the standby has flushed it), each on its own port; as
    root, both run as the ``postgres`` user. ``kill_primary`` and ``promote_standby`` are a failover."""

    def __init__(self) -> None:
        self.bin = _bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="keyless-pgha-"))
        self.primary_data = self.root / "primary"
        self.standby_data = self.root / "standby"
        self.primary_port = _free_port()
        self.standby_port = _free_port()
        self._as_root = os.geteuid() == 0
        self._stalled = False

    def _run(self, *args: str) -> str:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if self._as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120).stdout

    def _options(self, port: int) -> str:
        # fsync=off only skips flushing to disk: killing the server with -9 loses nothing the kernel holds.
        return (f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={self.root} "
                "-c fsync=off -c full_page_writes=off -c max_connections=100 -c wal_level=replica")

    def start(self) -> ReplicatedCluster:
        if self._as_root:
            shutil.chown(self.root, "postgres", "postgres")
        self._run("initdb", "-D", str(self.primary_data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--no-sync")
        # Only the primary waits for a standby (given on its command line, so the base backup does not copy it):
        # once promoted, the standby has no standby of its own to wait for.
        primary = (f"{self._options(self.primary_port)} -c synchronous_commit=on "
                   "-c synchronous_standby_names='*'")
        self._run("pg_ctl", "-D", str(self.primary_data), "-o", primary, "-l", str(self.root / "primary.log"),
                  "-w", "start")
        self._run("pg_basebackup", "-D", str(self.standby_data), "-h", "127.0.0.1", "-p", str(self.primary_port),
                  "-U", "postgres", "-R", "-X", "stream", "--checkpoint=fast", "--no-sync")
        self._run("pg_ctl", "-D", str(self.standby_data), "-o", self._options(self.standby_port),
                  "-l", str(self.root / "standby.log"), "-w", "start")
        deadline = time.monotonic() + 60
        while self.sql(self.primary_port, "SELECT sync_state FROM pg_stat_replication") != "sync":
            if time.monotonic() > deadline:
                raise RuntimeError("the standby did not become synchronous")
            time.sleep(0.05)
        return self

    def sql(self, port: int, query: str, database: str = "postgres") -> str:
        """Run ``query`` with psql; its rows, one a line, columns separated by ``|``."""
        return subprocess.run([str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
                               "-d", database, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", query],
                              check=True, capture_output=True, text=True, timeout=60).stdout.strip()

    def create_database(self, name: str) -> None:
        self.sql(self.primary_port, f'CREATE DATABASE "{name}"')

    def dsn(self, database: str) -> str:
        """Both servers, as keyless is configured for a failover: whichever one accepts writes."""
        return (f"postgresql://postgres@127.0.0.1:{self.primary_port},127.0.0.1:{self.standby_port}/{database}"
                "?target_session_attrs=read-write")

    def _primary_processes(self) -> list[int]:
        """The primary's postmaster, then its children (each backend is a session of its own: no process group
        holds them all)."""
        postmaster = int((self.primary_data / "postmaster.pid").read_text().split()[0])
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # ended meanwhile
            if int(fields[1]) == postmaster:
                children.append(int(stat.parent.name))
        return [postmaster, *children]

    def kill_primary(self) -> None:
        """``kill -9`` the primary: the postmaster first (it forks nothing more), then every backend."""
        for pid in self._primary_processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._stalled = False

    def stall_primary(self) -> None:
        """Freeze the primary (SIGSTOP): its connections stay open and answer nothing, as when the network to
        it is cut; ``kill_primary`` ends it."""
        self._stalled = True
        for pid in self._primary_processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def promote_standby(self) -> None:
        self._run("pg_ctl", "-D", str(self.standby_data), "-w", "promote")

    def stop(self) -> None:
        if self._stalled:
            self.kill_primary()  # a stopped server would not hear pg_ctl stop
        for data in (self.primary_data, self.standby_data):
            try:
                self._run("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
                pass
        shutil.rmtree(self.root, ignore_errors=True)
