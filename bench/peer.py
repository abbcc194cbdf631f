"""The peer: moto's STS AssumeRole in server mode (``moto_server -p PORT``), from the separate bench/.venv-peer."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.common import PEER_VENV, Processes, free_port, http, wait_for
from bench.wrkrun import Load

ROLE_ARN = "arn:aws:iam::123456789012:role/x"
# moto does not verify SigV4 unless told to: a static header whose credential scope names STS routes the call.
STATIC_AUTH = ("Authorization: AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20250101/us-east-1/sts/aws4_request, "
               "SignedHeaders=content-type;host;x-amz-date, Signature=" + "0" * 64)


@dataclass
class Moto:
    url: str
    port: int
    pids: list[int]
    proc: subprocess.Popen[bytes]


def aws_env() -> dict[str, str]:
    """Dummy credentials and region; no instance-metadata lookups, no config files: loopback only."""
    env = dict(os.environ)
    env.update({"AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE", "AWS_SECRET_ACCESS_KEY": "bench-secret",
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
                "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null", "AWS_PAGER": ""})
    return env


def start_moto(procs: Processes, log_dir: Path) -> Moto:
    port = free_port()
    proc = procs.start([str(PEER_VENV / "bin" / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                       log_file=log_dir / "moto.log", env=aws_env())
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"moto_server exited: {(log_dir / 'moto.log').read_text()[-2000:]}")
        status, body = http("POST", f"{url}/", headers=dict([STATIC_AUTH.split(": ", 1)]), form=_form("probe"))
        return status == 200 and "AssumeRoleResult" in str(body)

    wait_for(ready, 60, "moto_server", interval=0.05)
    return Moto(url=url, port=port, pids=[proc.pid], proc=proc)


def _form(session: str) -> dict[str, str]:
    return {"Action": "AssumeRole", "Version": "2011-06-15", "RoleArn": ROLE_ARN, "RoleSessionName": session}


def assume_role_load(moto: Moto) -> Load:
    import urllib.parse

    bodies = [urllib.parse.urlencode(_form(f"bench-{i}")) for i in range(64)]
    return Load(f"{moto.url}/", "POST", [STATIC_AUTH, "Content-Type: application/x-www-form-urlencoded"], bodies)
