"""Files that hold secrets are mode 0600 whatever was at their path before (an existing 0644 file does not keep its
mode), and are written whole (a temporary file in the same directory, then renamed)."""

from __future__ import annotations

import json
import os
import secrets
import stat
from pathlib import Path

import pytest

from keyless.crypto.keys import MasterKey
from keyless.private_files import write_private
from tests.cli.support import create_sa, grant, kl
from tests.conftest import Server, start_server


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def world_readable(path: Path, text: str = "old\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o644)
    return path


def no_leftovers(directory: Path) -> None:
    assert not [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]


def test_users_add_output(server: Server, tmp_path: Path) -> None:
    out = world_readable(tmp_path / "user.json")
    kl(server, "users", "add", f"u-{secrets.token_hex(3)}@example.com", "--output", str(out))
    assert mode(out) == 0o600
    assert json.loads(out.read_text())["type"] == "authorized_user"
    no_leftovers(tmp_path)


def test_a_key_file(server: Server, tmp_path: Path) -> None:
    email = create_sa(server, "secret-file")
    out = world_readable(tmp_path / "key.json")
    kl(server, "iam", "service-accounts", "keys", "create", str(out), "--iam-account", email)
    assert mode(out) == 0o600
    assert json.loads(out.read_text())["type"] == "service_account"
    no_leftovers(tmp_path)


def test_a_signed_jwt(server: Server, tmp_path: Path) -> None:
    # A self-signed JWT is a bearer credential (keyless and Google accept one in place of an access token).
    email = create_sa(server, "secret-jwt")
    grant(server, email, "user:owner@keyless.local")
    claims = tmp_path / "claims.json"
    claims.write_text(json.dumps({"sub": email, "aud": "https://example.com"}))
    out = world_readable(tmp_path / "signed.jwt")
    kl(server, "iam", "service-accounts", "sign-jwt", str(claims), str(out), "--iam-account", email)
    assert mode(out) == 0o600 and out.read_text().count(".") == 2


def test_an_adc_file(server: Server, tmp_path: Path) -> None:
    email = create_sa(server, "secret-adc")
    out = world_readable(tmp_path / "adc.json")
    kl(server, "adc", "impersonate", email, "--output", str(out))
    assert mode(out) == 0o600
    assert json.loads(out.read_text())["type"] == "impersonated_service_account"
    no_leftovers(tmp_path)


def test_seed_apply_credentials(server: Server, tmp_path: Path) -> None:
    user = f"seed-{secrets.token_hex(3)}@example.com"
    account = f"seed-key-{secrets.token_hex(3)}"
    email = f"{account}@keyless-dev.iam.gserviceaccount.com"
    creds = tmp_path / "creds"
    creds.mkdir(mode=0o700)
    user_file = world_readable(creds / f"{user}.json")
    key_file = world_readable(creds / f"{email}.json")
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps({"users": [{"email": user}], "projects": [
        {"projectId": "keyless-dev", "serviceAccounts": [{"accountId": account, "key": True}]}]}))
    kl(server, "apply", str(seed), "--credentials-dir", str(creds))
    assert mode(user_file) == 0o600 and json.loads(user_file.read_text())["type"] == "authorized_user"
    assert mode(key_file) == 0o600 and json.loads(key_file.read_text())["type"] == "service_account"
    no_leftovers(creds)


def test_owner_file_and_master_key(tmp_path: Path) -> None:
    data = tmp_path / "data"
    owner = world_readable(data / "owner.json")
    srv = start_server(data)
    try:
        assert mode(owner) == 0o600 and json.loads(owner.read_text())["type"] == "authorized_user"
        assert mode(data / "master.key") == 0o600
    finally:
        srv.stop()
    no_leftovers(data)


def test_a_master_key_is_created_whole_and_never_replaced(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "master.key"
    created = MasterKey.load_or_create(path)
    assert mode(path) == 0o600
    assert MasterKey.load_or_create(path).token_mac_key == created.token_mac_key
    no_leftovers(path.parent)


def test_write_private(tmp_path: Path) -> None:
    old_umask = os.umask(0)  # the mode does not depend on the umask either
    try:
        path = world_readable(tmp_path / "secret.json")
        write_private(path, b"new\n")
        assert mode(path) == 0o600 and path.read_bytes() == b"new\n"
        write_private(path, "text\n")
        assert path.read_text() == "text\n"
        fresh = tmp_path / "fresh"
        write_private(fresh, b"x", exclusive=True)
        assert mode(fresh) == 0o600
        with pytest.raises(FileExistsError):
            write_private(fresh, b"y", exclusive=True)
        assert fresh.read_bytes() == b"x"
        no_leftovers(tmp_path)
    finally:
        os.umask(old_umask)


def test_write_private_replaces_a_symlink_rather_than_writing_through_it(tmp_path: Path) -> None:
    target = world_readable(tmp_path / "elsewhere.txt", "untouched\n")
    link = tmp_path / "key.json"
    link.symlink_to(target)
    write_private(link, b"secret")
    assert not link.is_symlink() and mode(link) == 0o600
    assert target.read_text() == "untouched\n" and mode(target) == 0o644
