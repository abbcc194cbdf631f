"""``keyless serve`` start-up: data dir, restarts, servers side by side, global CLI options."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import subprocess
from pathlib import Path

import pytest
import requests

from tests.conftest import KEYLESS, start_server


def test_restart_keeps_owner_accounts_and_keys(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = start_server(data)
    try:
        owner_before = json.loads(first.owner_file.read_text())
        email = first.create_sa("keeps-me")
        certs_before = requests.get(f"{first.url}/oauth2/v1/certs", timeout=5).json()
    finally:
        first.stop()
    assert not (data / "endpoints.json").exists(), "endpoints.json must be removed on exit"
    second = start_server(data)
    try:
        owner_after = json.loads(second.owner_file.read_text())
        assert owner_after["refresh_token"] == owner_before["refresh_token"]
        assert owner_after["client_secret"] == owner_before["client_secret"]
        got = second.owner("GET", f"/v1/projects/keyless-dev/serviceAccounts/{email}")
        assert got["email"] == email
        assert requests.get(f"{second.url}/oauth2/v1/certs", timeout=5).json() == certs_before
    finally:
        second.stop()


def test_servers_side_by_side_do_not_clash(tmp_path: Path) -> None:
    a = start_server(tmp_path / "a")
    b = start_server(tmp_path / "b")
    try:
        assert a.url != b.url
        a.create_sa("only-in-a")
        r = requests.get(f"{b.url}/v1/projects/keyless-dev/serviceAccounts/only-in-a@keyless-dev.iam.gserviceaccount.com",
                         headers={"Authorization": f"Bearer {b.owner_token}"}, timeout=5)
        assert r.status_code == 404
        # A token of one server means nothing to the other (different master keys).
        r = requests.get(f"{b.url}/v1/projects/keyless-dev/serviceAccounts",
                         headers={"Authorization": f"Bearer {a.owner_token}"}, timeout=5)
        assert r.status_code == 401
    finally:
        a.stop()
        b.stop()


def test_master_key_file_option_keeps_key_out_of_data_dir(tmp_path: Path) -> None:
    key_file = tmp_path / "secrets" / "master.key"
    srv = start_server(tmp_path / "data", "--master-key-file", str(key_file))
    try:
        assert key_file.exists()
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert not (tmp_path / "data" / "master.key").exists()
        db = (tmp_path / "data" / "keyless.db").read_bytes()
        assert key_file.read_text().strip().encode() not in db
    finally:
        srv.stop()


def test_users_add_with_global_options_before_and_after_verb(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "data")
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEYLESS_")}
        out1 = tmp_path / "alice.json"
        subprocess.run([*KEYLESS, "--data-dir", str(srv.data_dir), "users", "add", "alice@example.com",
                        "--output", str(out1)], check=True, env=env, capture_output=True, timeout=60)
        out2 = tmp_path / "bob.json"
        subprocess.run([*KEYLESS, "users", "add", "bob@example.com", "--output", str(out2), "--url", srv.url,
                        "--credential-file", str(srv.owner_file)], check=True, env=env, capture_output=True,
                       timeout=60)
        for path, email in ((out1, "alice@example.com"), (out2, "bob@example.com")):
            info = json.loads(path.read_text())
            assert info["type"] == "authorized_user" and info["account"] == email
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            srv.user_token(path)
        # A non-owner cannot register users.
        proc = subprocess.run([*KEYLESS, "users", "add", "eve@example.com", "--url", srv.url,
                               "--credential-file", str(out1)], env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0
        assert "PERMISSION_DENIED" in proc.stderr
    finally:
        srv.stop()


def test_cli_without_server_says_how_to_start_one(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYLESS_")}
    proc = subprocess.run([*KEYLESS, "--data-dir", str(tmp_path / "none"), "users", "list"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "keyless serve" in proc.stderr


def test_the_cel_runtime_is_loaded_only_when_a_condition_needs_it() -> None:
    """Importing celpy and building its parser took half of ``keyless serve``'s start-up (the issue asks for
    ready in under 1 s): a server whose policies have no condition never loads it."""
    code = ("import sys, keyless.server, keyless.http.app\n"
            "assert 'celpy' not in sys.modules, 'celpy imported at start-up'\n"
            "from keyless.domain.conditions import compile_condition\n"
            "compile_condition('request.time < timestamp(\"2030-01-01T00:00:00Z\")')\n"
            "assert 'celpy' in sys.modules\n")
    result = subprocess.run([KEYLESS[0], "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def _serving_pid(conn: socket.socket, pids: list[int]) -> int | None:
    """Which of ``pids`` holds the server's side of the open connection ``conn`` (read from /proc: the socket whose
    peer is this client's port, and the process that has it among its file descriptors)."""
    client_port, server_port = conn.getsockname()[1], conn.getpeername()[1]
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            local, remote, inode = (row.split()[i] for i in (1, 2, 9))
            if int(local.rsplit(":", 1)[1], 16) == server_port and int(remote.rsplit(":", 1)[1], 16) == client_port:
                inodes.add(f"socket:[{inode}]")
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd) in inodes:
                    return pid
    return None


def test_every_worker_knows_the_universe_domains(tmp_path: Path) -> None:
    """``--workers 2 --universe-domain D``: a request for ``iam.D`` is IAM v1's signBlob on every process (the
    workers used to be started without the universe domains, so the answer depended on which took the
    connection). Fresh connections until both processes have answered, each answer checked, and which process
    answered read from /proc while the connection is still open."""
    import http.client

    srv = start_server(tmp_path / "data", "--workers", "2", "--universe-domain", "example.internal")
    try:
        email = srv.create_sa("universe-worker")
        srv.grant(email, "user:owner@keyless.local")
        host, port = srv.url.removeprefix("http://").rsplit(":", 1)
        body = json.dumps({"payload": "aGVsbG8="})
        endpoints = json.loads((srv.data_dir / "endpoints.json").read_text())
        pids = [endpoints["pid"], *endpoints["workers"]]
        assert len(pids) == 2
        answered_by: dict[int, int] = {}
        for _ in range(200):  # a new connection each time: SO_REUSEPORT spreads them over both processes
            conn = http.client.HTTPConnection(host, int(port), timeout=30)
            conn.request("POST", f"/v1/projects/-/serviceAccounts/{email}:signBlob", body=body,
                         headers={"Host": "iam.example.internal", "Authorization": f"Bearer {srv.owner_token}",
                                  "Content-Type": "application/json"})
            response = conn.getresponse()
            answer = json.loads(response.read())
            # IAM v1's signBlob wants bytesToSign (the IAM Credentials API's would have signed the payload).
            assert response.status == 400 and "bytesToSign" in answer["error"]["message"], answer
            assert conn.sock is not None  # kept alive: the server's side is still open
            pid = _serving_pid(conn.sock, pids)
            assert pid is not None
            answered_by[pid] = answered_by.get(pid, 0) + 1
            conn.close()
            if len(answered_by) == len(pids):
                break
        assert sorted(answered_by) == sorted(pids), answered_by
    finally:
        srv.stop()


def test_the_runtime_reaches_a_worker_whole(tmp_path: Path) -> None:
    """What a worker receives is the supervisor's resolved runtime itself (pickled), equal field for field, and
    frozen: a worker cannot resolve an option on its own or change one."""
    import dataclasses
    import pickle

    from keyless.server import ServeOptions
    from keyless.server.runtime import resolve

    options = ServeOptions(data_dir=tmp_path, port=0, universe_domains=("Example.Internal.",), workers=2,
                           public_url="https://iam.example.internal")
    runtime = resolve(options, 8093)
    received = pickle.loads(pickle.dumps(runtime))
    assert received == runtime
    assert received.settings.universe_domains == ("example.internal",)
    assert received.settings.public_url == "https://iam.example.internal" and received.port == 8093
    assert received.master_key_file.is_absolute()
    with pytest.raises(dataclasses.FrozenInstanceError):
        received.port = 1  # type: ignore[misc]
