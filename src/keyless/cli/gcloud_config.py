"""DATA_DIR/gcloud: a gcloud configuration directory of keyless's own, signed in as the owner.

``keyless env`` exports ``CLOUDSDK_CONFIG`` pointing here, so the unchanged ``gcloud`` (and gsutil, and every
google-auth that looks for Application Default Credentials under ``CLOUDSDK_CONFIG``) uses this directory and
never the user's own ``~/.config/gcloud``: the user's Google credentials are not read, and none is sent to
keyless. ``prepare`` creates the directory or refreshes it, in the formats gcloud itself writes after
``gcloud auth login`` (read from the Cloud SDK's ``googlecloudsdk/core/credentials/creds.py`` and ``store.py``):

* ``credentials.db``: SQLite, table ``credentials(account_id TEXT PRIMARY KEY, value BLOB)``, one row per
  account holding the ``authorized_user`` JSON gcloud's ``ToJsonGoogleAuth`` writes. The owner's row has the
  owner's client id, secret and refresh token, and Google's token URI: gcloud refreshes it at
  ``https://oauth2.googleapis.com/token``, which the interception proxy hands to keyless (the endpoint-override
  route sets ``auth/token_host`` to keyless's ``/token`` instead). ``gcloud auth login --cred-file`` takes
  service-account and external-account files only, so the store is the one way to give gcloud a user's
  refresh token without a browser.
* ``legacy_credentials/ACCOUNT/.boto`` and ``adc.json``: what gcloud hands gsutil (and bq) for that account.
* ``boto.cfg``, for ``BOTO_CONFIG``: gcloud's gsutil wrapper then reads it instead of the user's ``~/.boto`` and
  ``/etc/boto.cfg`` (their credentials would clash with the owner's), and gsutil keeps its state here.
  ``boto-overrides.cfg`` is the endpoint-override route's, rewritten by each ``keyless env --gcloud-overrides``
  (the API's URL may have changed): gsutil's own endpoint options (``write_override_boto``).
* ``configurations/config_default`` and ``active_config``: the properties. ``core/account`` and
  ``core/project`` are set only when absent (``gcloud auth activate-service-account`` or ``gcloud config set``
  may have changed them since); ``core/custom_ca_certs_file`` is the CA bundle that trusts the proxy; update
  checks, usage reporting and surveys are off, so gcloud calls no Google host on its own.

No ``application_default_credentials.json`` is written: with none there, google-auth's ADC goes on to the
metadata server, as ``keyless env`` documents; ``gcloud auth application-default login`` writes one here.
"""

from __future__ import annotations

import configparser
import contextlib
import json
import os
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from keyless.private_files import write_private

DIRECTORY = "gcloud"
BOTO = "boto.cfg"
OVERRIDE_BOTO = "boto-overrides.cfg"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
GOOGLE_REVOKE_URI = "https://oauth2.googleapis.com/revoke"
UNIVERSE = "googleapis.com"
CONFIGURATION = "default"
# Set when the configuration has no value of its own: gcloud then starts no network call keyless cannot serve.
QUIET_DEFAULTS = {("core", "disable_usage_reporting"): "true",
                  ("component_manager", "disable_update_check"): "true",
                  ("survey", "disable_prompts"): "true"}


def config_dir(data_dir: Path) -> Path:
    return data_dir / DIRECTORY


def prepare(data_dir: Path, *, project: str | None, ca_bundle: str | None) -> Path:
    """Create or refresh DATA_DIR/gcloud, signed in as the owner of ``DATA_DIR/owner.json``; return its path."""
    root = config_dir(data_dir).resolve()
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    owner = _read_owner(data_dir / "owner.json")
    account = str(owner["account"]) if owner else None
    if owner and account:
        _store_user(root, account, owner)
    _write_properties(root, account=account, project=project, ca_bundle=ca_bundle)
    boto = root / BOTO
    if not boto.exists():
        boto.write_text(f"[GSUtil]\nstate_dir = {root / 'gsutil'}\n")
    return root


def boto_config(data_dir: Path) -> Path:
    return config_dir(data_dir).resolve() / BOTO


def write_override_boto(data_dir: Path, api_url: str, *, ca_bundle: str | None) -> Path:
    """DATA_DIR/gcloud/boto-overrides.cfg: gsutil's endpoint options naming keyless's API (no proxy).

    What gsutil (platform/gsutil/gslib in the Cloud SDK) lets a boto file move: the token URI of the owner's
    refresh token and of key files (``[OAuth2] provider_token_uri``, gcs_json_credentials.py) and the IAM
    Credentials host of ``gsutil -i`` (``[Credentials] gs_iamcredentials_host`` and, spelt so,
    ``gs_iamcredentails_port``, iamcredentials_api.py). The latter is always reached over HTTPS (its
    ``http_base`` is fixed to ``https://``), so it is written only when the API serves HTTPS."""
    root = config_dir(data_dir).resolve()
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    api = urlsplit(api_url)
    lines = ["[GSUtil]", f"state_dir = {root / 'gsutil'}", "", "[OAuth2]",
             f"provider_token_uri = {api_url.rstrip('/')}/token", ""]
    if api.scheme == "https" and api.hostname:
        host = f"[{api.hostname}]" if ":" in api.hostname else api.hostname  # gsutil pastes it into a URL
        lines += ["[Credentials]", f"gs_iamcredentials_host = {host}"]
        if api.port:
            lines.append(f"gs_iamcredentails_port = {api.port}")
        lines.append("")
    if ca_bundle:
        lines += ["[Boto]", f"ca_certificates_file = {ca_bundle}", ""]
    path = root / OVERRIDE_BOTO
    write_private(path, "\n".join(lines))
    return path


def _read_owner(path: Path) -> dict[str, Any] | None:
    """The owner's ``authorized_user`` file, or None when this data dir has none (another replica's dir)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    needed = ("account", "client_id", "client_secret", "refresh_token")
    if not isinstance(data, dict) or not all(isinstance(data.get(k), str) and data[k] for k in needed):
        return None
    return data


def stored_user(owner: dict[str, Any]) -> str:
    """The credential row gcloud's ``ToJsonGoogleAuth`` writes for a user account (same keys, same layout)."""
    row = {"client_id": owner["client_id"], "client_secret": owner["client_secret"],
           "refresh_token": owner["refresh_token"], "revoke_uri": GOOGLE_REVOKE_URI, "scopes": None,
           "token_uri": GOOGLE_TOKEN_URI, "type": "authorized_user", "universe_domain": UNIVERSE}
    return json.dumps(row, sort_keys=True, indent=2, separators=(",", ": "))


def _store_user(root: Path, account: str, owner: dict[str, Any]) -> None:
    value = stored_user(owner)
    database = root / "credentials.db"
    _ensure_private(database)
    with contextlib.closing(sqlite3.connect(database, timeout=10)) as db, db:
        db.execute('CREATE TABLE IF NOT EXISTS "credentials" (account_id TEXT PRIMARY KEY, value BLOB)')
        previous = db.execute('SELECT value FROM "credentials" WHERE account_id = ?', (account,)).fetchone()
        if previous is not None and previous[0] == value:
            changed = False
        else:
            db.execute('REPLACE INTO "credentials" (account_id, value) VALUES (?, ?)', (account, value))
            changed = True
    if changed:
        _forget_access_token(root, account)
    legacy = root / "legacy_credentials" / account
    legacy.mkdir(mode=0o700, parents=True, exist_ok=True)
    adc = {"client_id": owner["client_id"], "client_secret": owner["client_secret"],
           "refresh_token": owner["refresh_token"], "type": "authorized_user", "universe_domain": UNIVERSE}
    write_private(legacy / "adc.json", json.dumps(adc, indent=2))
    write_private(legacy / ".boto", "\n".join([
        "[OAuth2]", f"client_id = {owner['client_id']}", f"client_secret = {owner['client_secret']}", "",
        "[Credentials]", f"gs_oauth2_refresh_token = {owner['refresh_token']}"]))


def _forget_access_token(root: Path, account: str) -> None:
    """A new refresh token (the owner's was revoked and renewed) must not be shadowed by a cached access token."""
    cache = root / "access_tokens.db"
    if not cache.exists():
        return
    with contextlib.closing(sqlite3.connect(cache, timeout=10)) as db, db:
        with contextlib.suppress(sqlite3.OperationalError):  # no such table: nothing cached
            db.execute('DELETE FROM "access_tokens" WHERE account_id = ?', (account,))


def _ensure_private(path: Path) -> None:
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    os.chmod(path, 0o600)


def _write_properties(root: Path, *, account: str | None, project: str | None, ca_bundle: str | None) -> None:
    active = root / "active_config"
    if not active.exists():
        active.write_text(CONFIGURATION)
    name = active.read_text().strip() or CONFIGURATION
    path = root / "configurations" / f"config_{name}"
    path.parent.mkdir(mode=0o700, exist_ok=True)
    properties = configparser.ConfigParser(interpolation=None)
    if path.exists():
        properties.read(path)
    wanted: dict[tuple[str, str], str | None] = {("core", "account"): account, ("core", "project"): project,
                                                  **QUIET_DEFAULTS}
    for (section, key), value in wanted.items():
        if value and not properties.has_option(section, key):
            _set(properties, section, key, value)
    if ca_bundle:
        _set(properties, "core", "custom_ca_certs_file", ca_bundle)
    text = []
    for section in properties.sections():
        text.append(f"[{section}]")
        text.extend(f"{key} = {value}" for key, value in properties.items(section))
        text.append("")
    write_private(path, "\n".join(text))


def _set(properties: configparser.ConfigParser, section: str, key: str, value: str) -> None:
    if not properties.has_section(section):
        properties.add_section(section)
    properties.set(section, key, value)
