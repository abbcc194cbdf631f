"""``keyless serve``'s options as one typed value, and the checks that refuse a start before anything is opened."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from keyless.service.limits import Limits

LOOPBACK = ("127.0.0.1", "::1", "localhost")
# Days of audit log kept on the embedded SQLite store unless told otherwise: Cloud Logging keeps Data Access logs
# 30 days by default. On PostgreSQL (a broker) the retention is the operator's explicit choice.
SQLITE_AUDIT_RETENTION_DAYS = 30.0


@dataclass(frozen=True)
class ServeOptions:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8093
    database: str | None = None
    project: str = "keyless-dev"
    master_key_file: Path | None = None
    issuer: str = "https://accounts.google.com"
    public_url: str | None = None
    key_rotation_days: float = 14.0
    allow_time_travel: bool = False
    enforce_services: bool = False
    log_level: str = "warning"
    # None: the API port + 1 / + 2, or a free port when the API port is 0; 0: a free port; -1: off.
    proxy_port: int | None = None
    metadata_port: int | None = None
    metadata_host: str = "127.0.0.1"
    # The gRPC listener (served by every process, on ``host``, TLS when the API is): None: off; 0: a free port.
    grpc_port: int | None = None
    # The proxy listens here whatever ``host`` is; off loopback it asks for the password in DATA_DIR/proxy.password.
    proxy_host: str = "127.0.0.1"
    attach: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # The mTLS listener (X.509 federation's token exchange; in the main process, on ``host``): None: off; 0: free.
    mtls_port: int | None = None
    insecure: bool = False
    universe_domains: tuple[str, ...] = ()
    universe_port: int | None = None
    universe_cert: Path | None = None
    universe_key: Path | None = None
    audit_log: str | None = None
    audit_retention_days: float | None = None  # None: the embedded store's default; 0: keep every entry
    seed: Path | None = None  # applied through keyless.cli.seed once listening, before endpoints.json
    access_log: bool = False
    workers: int = 1
    limits: Limits = field(default_factory=Limits)


def is_loopback(host: str) -> bool:
    return host in LOOPBACK or host.startswith("127.")


def is_wildcard(host: str) -> bool:
    return host in ("0.0.0.0", "::")  # noqa: S104 (comparing, not binding)


def side_port(explicit: int | None, api_port: int, offset: int) -> int:
    """A side listener's port: the one given, else the API port + ``offset`` (a free one when the API's is 0)."""
    if explicit is not None:
        return explicit
    return 0 if api_port == 0 else api_port + offset


def master_key_path(options: ServeOptions) -> Path:
    if options.master_key_file is not None:
        return options.master_key_file
    env = os.environ.get("KEYLESS_MASTER_KEY_FILE")
    return Path(env) if env else options.data_dir / "master.key"


def uses_postgresql(database: str | None) -> bool:
    return database is not None and database.startswith(("postgresql://", "postgres://"))


def audit_retention_days(options: ServeOptions) -> float:
    """``--audit-retention-days``, or the embedded store's default (0: keep every entry)."""
    if options.audit_retention_days is not None:
        return options.audit_retention_days
    if uses_postgresql(options.database):
        raise SystemExit("keyless serve: with a PostgreSQL --database, choose how long the audit log is kept: "
                         "--audit-retention-days N (0 keeps every entry).")
    return SQLITE_AUDIT_RETENTION_DAYS


def check(options: ServeOptions) -> None:
    """Refuse options that do not go together, or that would expose the server unsafely."""
    audit_retention_days(options)
    if not is_loopback(options.host) and options.tls_cert is None and not options.insecure:
        raise SystemExit(f"Refusing to serve plain HTTP on {options.host}: give --tls-cert and --tls-key, "
                         "or --insecure if a TLS terminator stands in front.")
    if options.allow_time_travel and options.database and not options.database.startswith("sqlite"):
        raise SystemExit("--allow-time-travel is for tests on the embedded SQLite store; replicas sharing a "
                         "database must share one clock.")
    if options.workers > 1 and options.allow_time_travel:
        raise SystemExit("--allow-time-travel needs one process (--workers 1): the clock it moves is in memory.")
    if options.workers < 1:
        raise SystemExit("--workers must be at least 1.")
    if (options.tls_cert is None) != (options.tls_key is None):
        raise SystemExit("--tls-cert and --tls-key go together.")
