"""The README's walkthrough runs as written against a fresh server (curl and Python blocks)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, Server

DEFAULT_URL = "http://127.0.0.1:8093"


def _block(lang: str) -> str:
    readme = (REPO / "README.md").read_text()
    walkthrough = readme.split("## Walkthrough", 1)[1]
    match = re.search(rf"```{lang}\n(.*?)```", walkthrough, re.S)
    assert match, f"no {lang} block in the walkthrough"
    return match.group(1).replace(DEFAULT_URL, "{URL}")


def _workdir(tmp_path: Path, srv: Server) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    (work / ".keyless").symlink_to(srv.data_dir)
    return work


def test_readme_walkthrough_shell_then_python(fresh_server: Server, tmp_path: Path) -> None:
    work = _workdir(tmp_path, fresh_server)
    shell = _block("sh").replace("{URL}", fresh_server.url)
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", shell], cwd=work, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert '"accessToken":"ya29.' in out
    assert '"token":"ey' in out
    assert '"signedBlob":' in out and '"signedJwt":"ey' in out
    assert "INVALID_ARGUMENT" in out  # the 43200s request before the constraint
    assert "iam.allowServiceAccountCredentialLifetimeExtension" in out

    python = _block("python").replace("{URL}", fresh_server.url)
    proc = subprocess.run([sys.executable, "-c", python], cwd=work, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "target-sa@keyless-dev.iam.gserviceaccount.com" in proc.stdout
