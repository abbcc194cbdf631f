"""Start-up: a port in use is one line naming the listener, the port and the option; ``--port 0`` gives every
listener a free port; keyless leaves the mode of a data dir it did not create alone."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from keyless.pytest_plugin import stop_process
from tests.conftest import KEYLESS, start_server


@contextmanager
def _taken_port() -> Iterator[int]:
    with socket.create_server(("127.0.0.1", 0)) as held:
        yield held.getsockname()[1]


def _serve_fails(tmp_path: Path, *args: str) -> str:
    proc = subprocess.run([*KEYLESS, "serve", "--data-dir", str(tmp_path / "data"), *args],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_each_listener_names_itself_when_its_port_is_taken(tmp_path: Path) -> None:
    with _taken_port() as port:
        cases = {("--port", str(port)): ("API", "--port"),
                 ("--port", "0", "--metadata-port", str(port)): ("metadata server", "--metadata-port"),
                 ("--port", "0", "--proxy-port", str(port)): ("interception proxy", "--proxy-port"),
                 ("--port", "0", "--grpc-port", str(port)): ("gRPC listener", "--grpc-port")}
        for args, (name, option) in cases.items():
            line = _serve_fails(tmp_path, *args)
            assert f"the {name} cannot listen on 127.0.0.1:{port}" in line, line
            assert "in use" in line and f"Choose another port with {option}" in line, line


def test_the_default_side_ports_collide_with_one_line(tmp_path: Path) -> None:
    """``--port P`` puts the proxy on P+1: when something else has P+1, say so rather than a traceback."""
    for _ in range(20):
        with _taken_port() as taken:
            try:
                socket.create_server(("127.0.0.1", taken - 1)).close()
            except OSError:
                continue
            line = _serve_fails(tmp_path, "--port", str(taken - 1))
            assert f"the interception proxy cannot listen on 127.0.0.1:{taken}" in line, line
            assert "--proxy-port" in line
            return
    raise AssertionError("no free port below a taken one in 20 tries")


def test_port_zero_gives_every_listener_a_free_port(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "data", "--universe-domain", "example.internal")
    try:
        endpoints = json.loads((srv.data_dir / "endpoints.json").read_text())
        urls = [endpoints["api"], endpoints["proxy"], endpoints["metadata"], endpoints["universe"]["url"]]
        ports = {int(url.rsplit(":", 1)[1]) for url in urls}
        assert len(ports) == 4 and 0 not in ports
    finally:
        srv.stop()


def test_an_existing_data_dir_keeps_its_mode(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o750)
    os.chmod(shared, 0o750)
    srv = start_server(shared)
    srv.stop()
    assert stat.S_IMODE(shared.stat().st_mode) == 0o750
    assert stat.S_IMODE((shared / "master.key").stat().st_mode) == 0o600


def test_a_data_dir_keyless_creates_is_private(tmp_path: Path) -> None:
    new = tmp_path / "parent" / "new-data"
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([*KEYLESS, "serve", "--port", "0", "--data-dir", str(new)], stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not (new / "endpoints.json").exists():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "keyless serve did not become ready"
            time.sleep(0.02)
        assert stat.S_IMODE(new.stat().st_mode) == 0o700
    finally:
        stop_process(proc)


def test_ports_out_of_range_are_a_usage_error(tmp_path: Path) -> None:
    for args in (("--port", "-5"), ("--port", "70000"), ("--proxy-port", "-2"), ("--metadata-port", "65536")):
        proc = subprocess.run([*KEYLESS, "serve", "--data-dir", str(tmp_path / "data"), *args],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert f"Invalid value for '{args[0]}'" in proc.stderr.splitlines()[0], proc.stderr
