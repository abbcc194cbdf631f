"""The first hour: the start-up banner and ``keyless status``, one server per data dir, a dead server's
endpoints.json not trusted, a failed start leaving nothing behind, the CLI found from any subdirectory and
from any directory after ``eval "$(keyless env)"``, and ``keyless env --unset``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from pathlib import Path

from tests.conftest import KEYLESS, REPO, Server, start_server


def _env_without_keyless() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("KEYLESS_")}


def _keyless(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KEYLESS, *args], capture_output=True, text=True, timeout=60, cwd=cwd,
                          env=env if env is not None else _env_without_keyless())


def test_the_banner_names_every_listener_and_the_next_step(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "data", "--proxy-port", "0", "--metadata-port", "0")
    try:
        endpoints = json.loads((srv.data_dir / "endpoints.json").read_text())
        printed = (srv.data_dir / "server.log").read_text()
        status = _keyless("status", env=srv.env())
        assert status.returncode == 0, status.stderr
        for text in (printed, status.stdout):
            for expected in (endpoints["api"], endpoints["proxy"], endpoints["metadata"], str(srv.owner_file),
                             "no account attached", 'eval "$(keyless env)"'):
                assert expected in text, (expected, text)
        attached = srv.create_sa("banner-sa")
        assert _keyless("metadata", "attach", attached, env=srv.env()).returncode == 0
        assert f"(serves {attached})" in _keyless("status", env=srv.env()).stdout
        assert _keyless("metadata", "show", env=srv.env()).stdout.strip() == attached
        assert _keyless("metadata", "detach", env=srv.env()).returncode == 0
        assert "no account attached" in _keyless("status", env=srv.env()).stdout
        assert "no service account is attached" in _keyless("env", env=srv.env()).stderr
    finally:
        srv.stop()


def test_a_second_server_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "data")
    try:
        second = _keyless("serve", "--port", "0", "--data-dir", str(srv.data_dir))
        assert second.returncode != 0
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and f"another keyless server (pid {srv.process.pid}" in lines[0], second.stderr
        assert (srv.data_dir / "endpoints.json").exists()  # the first server is still announced
        assert _keyless("status", env=srv.env()).returncode == 0
    finally:
        srv.stop()


def test_endpoints_of_a_killed_server_are_not_trusted(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "data", "--proxy-port", "0")
    srv.process.send_signal(signal.SIGKILL)
    srv.process.wait(timeout=30)
    assert (srv.data_dir / "endpoints.json").exists()
    env = _keyless("env", env=srv.env())
    assert env.returncode == 1 and "HTTPS_PROXY" not in env.stdout
    assert "no longer running" in env.stderr
    # The lock died with the process: a new server starts on the same data dir.
    again = start_server(srv.data_dir)
    again.stop()


def test_a_failed_start_leaves_no_data_dir(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as held:
        result = _keyless("serve", "--data-dir", str(tmp_path / "new"), "--port", str(held.getsockname()[1]))
    assert result.returncode != 0 and "cannot listen" in result.stderr
    assert not (tmp_path / "new").exists()


def test_the_cli_finds_the_data_dir_from_a_subdirectory(tmp_path: Path) -> None:
    project = tmp_path / "project"
    srv = start_server(project / ".keyless")
    try:
        deep = project / "src" / "app"
        deep.mkdir(parents=True)
        listed = _keyless("iam", "service-accounts", "list", "--format", "json", cwd=deep)
        assert listed.returncode == 0, listed.stderr
        assert isinstance(json.loads(listed.stdout), list)
    finally:
        srv.stop()


def test_env_lets_the_cli_work_anywhere_and_unset_undoes_it(server: Server, tmp_path: Path) -> None:
    keyless = " ".join(KEYLESS)
    script = (f'eval "$({keyless} env)"; cd {tmp_path}; {keyless} status >/dev/null && echo STATUS-OK; '
              f'echo "url=$KEYLESS_URL"; echo "root=$GCE_METADATA_ROOT"; eval "$({keyless} env --unset)"; '
              'echo "after=${KEYLESS_URL:-}${HTTPS_PROXY:-}${GCE_METADATA_HOST:-}${GCE_METADATA_ROOT:-}"')
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60, env=server.env(),
                         cwd=REPO).stdout
    assert "STATUS-OK" in out
    assert f"url={server.url}" in out
    metadata = json.loads((server.data_dir / "endpoints.json").read_text())["metadata"]
    assert f"root={metadata.removeprefix('http://')}\n" in out  # gcloud finds the metadata server by this name
    assert "after=\n" in out


def test_the_quick_test_loop_runs_only_pytest_on_the_selection() -> None:
    env = {**_env_without_keyless(), "PATH": os.environ.get("PATH", "")}
    run = subprocess.run([str(REPO / "scripts" / "test"), "--quick", "tests/domain/test_names.py"],
                         capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "== pytest" in run.stdout and "== ruff" not in run.stdout and "== mypy" not in run.stdout
    assert "npm ci" not in run.stdout and "PostgreSQL" not in run.stdout
    assert " passed" in run.stdout


def test_help_reads_at_80_columns() -> None:
    env = {**_env_without_keyless(), "COLUMNS": "80"}
    serve = _keyless("serve", "--help", env=env).stdout
    import typer.main

    from keyless.cli.main import app

    options = [p.opts[0] for p in typer.main.get_command(app).commands["serve"].params]  # type: ignore[attr-defined]
    for option in options:
        assert option in serve, option  # every option name in full, never cut short
    for heading in ("Listening, broker and TLS:", "Emulator:", "Limits:", "Audit and logs:"):
        assert heading in serve
    assert "--data-dir" in serve and "KEYLESS_DATA_DIR" in serve and "KEYLESS_MASTER_KEY_FILE" in serve
    for command in ([], ["serve"], ["iam", "service-accounts", "create"], ["users", "add"], ["env"]):
        text = _keyless(*command, "--help", env=env).stdout
        assert text, command
        for line in text.splitlines():
            assert len(line) <= 80, (command, line)
            assert "…" not in line and "<str>" not in line and "<list[" not in line and "<bool>" not in line, line
