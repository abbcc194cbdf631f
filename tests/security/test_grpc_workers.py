"""The gRPC listener with ``--workers N``: every process serves gRPC on the one port (SO_REUSEPORT among the
processes of one ``keyless serve``, as the API's port), so gRPC scales with the workers as REST does; and the port is
still not shared with anything else: a second server asking for it is refused at start."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from google.cloud.iam_credentials_v1 import types

from tests.conftest import CLOUD, KEYLESS, start_server
from tests.e2e.test_serve import _serving_pid
from tests.security.grpc_wire import RawConnection, grpc_message

GENERATE_ACCESS_TOKEN = "/google.iam.credentials.v1.IAMCredentials/GenerateAccessToken"
OK = 0


def test_every_worker_answers_grpc(tmp_path: Path) -> None:
    """``--workers 2 --grpc-port 0``: fresh connections until both processes have answered a GenerateAccessToken
    (each answer OK), which process answered read from /proc while the connection is still open. Before, only the
    main process held the gRPC port, and every connection landed there."""
    srv = start_server(tmp_path / "data", "--workers", "2", "--grpc-port", "0", "--proxy-port", "-1",
                       "--metadata-port", "-1")
    try:
        email = srv.create_sa("grpc-worker")
        srv.grant(email, "user:owner@keyless.local")
        endpoints = json.loads((srv.data_dir / "endpoints.json").read_text())
        pids = [endpoints["pid"], *endpoints["workers"]]
        assert len(pids) == 2
        message = types.GenerateAccessTokenRequest.pb()(name=f"projects/-/serviceAccounts/{email}", scope=[CLOUD])
        metadata = [(b"authorization", f"Bearer {srv.owner_token}".encode())]
        answered_by: dict[int, int] = {}
        for _ in range(200):  # a new connection each time: SO_REUSEPORT spreads them over the processes
            conn = RawConnection(endpoints["grpc"], timeout=30)
            try:
                conn.open()
                conn.start_call(1, GENERATE_ACCESS_TOKEN, metadata, grpc_message(message.SerializeToString()))
                assert conn.wait_for_end(1) == "trailers"
                assert conn.status == OK
                pid = _serving_pid(conn.sock, pids)  # the connection is still open: its server side too
            finally:
                conn.close()
            assert pid is not None
            answered_by[pid] = answered_by.get(pid, 0) + 1
            if len(answered_by) == len(pids):
                break
        assert sorted(answered_by) == sorted(pids), answered_by
    finally:
        srv.stop()


def test_a_second_server_cannot_share_the_grpc_port_of_workers(tmp_path: Path) -> None:
    """The processes of one server share the gRPC port; another ``keyless serve`` (with workers too) asking for it
    is refused in one line naming ``--grpc-port``, rather than silently taking a share of the connections."""
    first = start_server(tmp_path / "first", "--workers", "2", "--grpc-port", "0", "--proxy-port", "-1",
                         "--metadata-port", "-1")
    try:
        port = json.loads((first.data_dir / "endpoints.json").read_text())["grpc"].rsplit(":", 1)[1]
        proc = subprocess.run([*KEYLESS, "serve", "--port", "0", "--data-dir", str(tmp_path / "second"),
                               "--workers", "2", "--grpc-port", port, "--proxy-port", "-1", "--metadata-port", "-1"],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0
        assert "Traceback" not in proc.stderr, proc.stderr
        assert f"the gRPC listener cannot listen on 127.0.0.1:{port}" in proc.stderr, proc.stderr
        assert "Choose another port with --grpc-port" in proc.stderr
    finally:
        first.stop()
