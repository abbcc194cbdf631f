"""First start and every restart: the organization, the default project, the ID-token keys and the owner."""

from __future__ import annotations

import hmac
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from keyless.private_files import write_private
from keyless.service.admin import OWNER_CREDENTIAL_META, authorized_user_file, owner_delta, secret_hash
from keyless.service.app import Keyless
from keyless.service.core import project_resource
from keyless.service.keyring import ISSUER, ISSUER_NAME


@dataclass(frozen=True, slots=True)
class Bootstrapped:
    owner_file: Path
    project_id: str


def write_private_json(path: Path, data: Mapping[str, object]) -> None:
    """Write a credentials file readable by its owner only (mode 0600), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, json.dumps(data, indent=2) + "\n")


async def bootstrap(keyless: Keyless, data_dir: Path) -> Bootstrapped:
    # Replicas starting together on one database must not create two owners or two issuer keys.
    async with keyless.store.lock("bootstrap"):
        return await _bootstrap(keyless, data_dir)


async def _bootstrap(keyless: Keyless, data_dir: Path) -> Bootstrapped:
    core = keyless.core
    settings = keyless.settings
    await core.store.init_meta("organization_number", str(secrets.randbelow(9 * 10**11) + 10**11))
    project = await keyless.admin.ensure_project(settings.default_project)
    await core.store.init_meta("default_project", project.project_id)
    await core.keyring.current_key_id(ISSUER, ISSUER_NAME)

    owner = await core.store.find_user(settings.owner_email)
    if owner is None:
        owner, client_secret, refresh_token = await keyless.admin.create_user(settings.owner_email)
        await core.store.init_meta(OWNER_CREDENTIAL_META,
                                   keyless.admin.seal_owner_credential(client_secret, refresh_token))
        await keyless.admin.grant(project_resource(project.project_id), "roles/owner", f"user:{owner.email}")
        await keyless.audit.commit_system_change("keyless.CreateUser", f"users/{owner.email}",
                                                 policyDelta=owner_delta(f"user:{owner.email}"))
    stored = await core.store.get_meta(OWNER_CREDENTIAL_META)
    assert stored is not None
    # Any replica holding the master key can write the owner's file, so a fresh data dir joins an installation.
    client_secret, refresh_token = keyless.admin.open_owner_credential(stored)
    if not (hmac.compare_digest(secret_hash(client_secret), owner.client_secret_hash)
            and hmac.compare_digest(secret_hash(refresh_token), owner.refresh_token_hash)):
        # The owner's refresh token was revoked (POST /revoke): whoever holds the master key gets new ones.
        owner, client_secret, refresh_token = await keyless.admin.renew_credentials(owner)
        await keyless.audit.commit_system_change("keyless.ResetUserSecret", f"users/{owner.email}")
    owner_file = data_dir / "owner.json"
    write_private_json(owner_file, authorized_user_file(owner, client_secret, refresh_token, settings.token_uri,
                                                        project.project_id))
    return Bootstrapped(owner_file, project.project_id)
