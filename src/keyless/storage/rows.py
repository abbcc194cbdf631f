"""What both SQL backends share: each table's columns, the records its rows map to and from, and the statements
whose text is the same in SQLite and PostgreSQL but for the placeholders.

A new column goes into its ``*_COLUMNS``, its record's mapper and ``*_row``, and both backends' migrations (the
column types differ); every statement below follows. What is genuinely a backend's own (transactions, locking,
SQL only one dialect has, how it binds booleans) stays in sqlite.py and postgres.py.

Statements are written with PostgreSQL's numbered placeholders (``$1``); ``SQLITE`` has them as SQLite's numbered
ones (``?1``), which bind the same positions of the same parameters.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import orjson

from keyless.storage.base import (
    AuditEntry,
    AuthorizationCode,
    KeyRecord,
    OrgPolicy,
    Project,
    ServiceAccount,
    SignInGrant,
    User,
    WorkloadPool,
    WorkloadProvider,
)

Row = Sequence[Any]  # a sqlite3 row (tuple) or an asyncpg Record, indexed by position

PROJECT_COLUMNS = "project_id, number, created_at"
SERVICE_ACCOUNT_COLUMNS = ("unique_id, project_id, account_id, email, display_name, description, disabled, deleted_at, "
                           "created_at, tokens_valid_after")
KEY_COLUMNS = ("key_id, owner, key_type, key_origin, certificate_pem, private_key_enc, valid_after, valid_before, "
               "created_at, disabled, retired_at, deleted_at")
USER_COLUMNS = "user_id, email, client_id, client_secret_hash, refresh_token_hash, created_at, disabled, password_hash"
CODE_COLUMNS = ("code_hash, client_id, redirect_uri, code_challenge, user_id, scopes, created_at, expires_at, offline, "
                "nonce, redemptions, grant_id, token_hash")
GRANT_COLUMNS = "grant_id, user_id, client_id, scopes, refresh_token_hash, created_at"
POLICY_COLUMNS = "resource, body, etag"
ORG_POLICY_COLUMNS = "resource, constraint_name, spec, etag, updated_at"
WORKLOAD_POOL_COLUMNS = "name, project_number, display_name, description, disabled, deleted_at, created_at"
WORKLOAD_PROVIDER_COLUMNS = ("name, pool, display_name, description, disabled, deleted_at, created_at, "
                             "attribute_mapping, attribute_condition, oidc, x509")
AUDIT_COLUMNS = "insert_id, timestamp, method, principal, resource, denied, body"  # and seq, which the store assigns


# Rows to records. SQLite returns booleans as 0/1, PostgreSQL as bool: ``bool()`` makes both a bool.

def as_project(row: Row) -> Project:
    return Project(row[0], row[1], row[2])


def as_service_account(row: Row) -> ServiceAccount:
    return ServiceAccount(row[0], row[1], row[2], row[3], row[4], row[5], bool(row[6]), row[7], row[8], row[9])


def as_key(row: Row) -> KeyRecord:
    return KeyRecord(row[0], row[1], row[2], row[3], bytes(row[4]), bytes(row[5]) if row[5] is not None else None,
                     row[6], row[7], row[8], bool(row[9]), row[10], row[11])


def as_user(row: Row) -> User:
    return User(row[0], row[1], row[2], row[3], row[4], row[5], bool(row[6]), row[7])


def as_code(row: Row) -> AuthorizationCode:
    return AuthorizationCode(row[0], row[1], row[2], row[3], row[4], tuple(row[5].split()), row[6], row[7],
                             bool(row[8]), row[9], row[10], row[11], row[12])


def as_grant(row: Row) -> SignInGrant:
    return SignInGrant(row[0], row[1], row[2], tuple(row[3].split()), row[4], row[5])


def as_org_policy(row: Row) -> OrgPolicy:
    return OrgPolicy(row[0], row[1], orjson.loads(row[2]), row[3], row[4])


def as_workload_pool(row: Row) -> WorkloadPool:
    return WorkloadPool(row[0], row[1], row[2], row[3], bool(row[4]), row[5], row[6])


def as_workload_provider(row: Row) -> WorkloadProvider:
    return WorkloadProvider(row[0], row[1], row[2], row[3], bool(row[4]), row[5], row[6], orjson.loads(row[7]),
                            row[8], orjson.loads(row[9]), orjson.loads(row[10]))


def as_audit_entry(row: Row) -> AuditEntry:
    """A row of ``seq, AUDIT_COLUMNS``."""
    return AuditEntry(row[1], row[2], row[3], row[4], row[5], bool(row[6]), orjson.loads(row[7]), row[0])


# Records to rows, in their columns' order, booleans as bool (asyncpg requires it; sqlite3 stores 1/0).

def project_row(project: Project) -> tuple[Any, ...]:
    return project.project_id, project.number, project.created_at


def service_account_row(a: ServiceAccount) -> tuple[Any, ...]:
    return (a.unique_id, a.project_id, a.account_id, a.email, a.display_name, a.description, a.disabled, a.deleted_at,
            a.created_at, a.tokens_valid_after)


def key_row(k: KeyRecord) -> tuple[Any, ...]:
    return (k.key_id, k.owner, k.key_type, k.key_origin, k.certificate_pem, k.private_key_enc, k.valid_after,
            k.valid_before, k.created_at, k.disabled, k.retired_at, k.deleted_at)


def user_row(u: User) -> tuple[Any, ...]:
    return (u.user_id, u.email, u.client_id, u.client_secret_hash, u.refresh_token_hash, u.created_at, u.disabled,
            u.password_hash)


def code_row(c: AuthorizationCode) -> tuple[Any, ...]:
    return (c.code_hash, c.client_id, c.redirect_uri, c.code_challenge, c.user_id, " ".join(c.scopes), c.created_at,
            c.expires_at, c.offline, c.nonce, c.redemptions, c.grant_id, c.token_hash)


def grant_row(g: SignInGrant) -> tuple[Any, ...]:
    return g.grant_id, g.user_id, g.client_id, " ".join(g.scopes), g.refresh_token_hash, g.created_at


def org_policy_row(p: OrgPolicy) -> tuple[Any, ...]:
    return p.resource, p.constraint, orjson.dumps(p.spec).decode(), p.etag, p.updated_at


def workload_pool_row(p: WorkloadPool) -> tuple[Any, ...]:
    return p.name, p.project_number, p.display_name, p.description, p.disabled, p.deleted_at, p.created_at


def workload_provider_row(p: WorkloadProvider) -> tuple[Any, ...]:
    return (p.name, p.pool, p.display_name, p.description, p.disabled, p.deleted_at, p.created_at,
            orjson.dumps(p.attribute_mapping).decode(), p.attribute_condition, orjson.dumps(p.oidc).decode(),
            orjson.dumps(p.x509).decode())


def stored_changes(changes: dict[str, Any]) -> dict[str, Any]:
    """Changes to a row as its columns hold them: mappings (a provider's attribute mapping, its OIDC settings)
    as JSON text."""
    return {column: orjson.dumps(value).decode() if isinstance(value, dict) else value
            for column, value in changes.items()}


def _insert(table: str, columns: str) -> str:
    count = columns.count(",") + 1
    return f"INSERT INTO {table} ({columns}) VALUES ({', '.join(f'${i}' for i in range(1, count + 1))})"


@dataclass(frozen=True, slots=True)
class Statements:
    """The statements both backends run, each named for what it does; ``mark`` begins a numbered placeholder."""

    mark: str = "$"
    # meta
    get_meta: str = "SELECT value FROM meta WHERE key=$1"
    set_meta: str = "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value=excluded.value"
    init_meta: str = "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING"
    # projects
    create_project: str = _insert("projects", PROJECT_COLUMNS)
    get_project: str = f"SELECT {PROJECT_COLUMNS} FROM projects WHERE project_id=$1 OR number=$1"
    list_projects: str = f"SELECT {PROJECT_COLUMNS} FROM projects ORDER BY project_id"
    # service accounts
    create_service_account: str = _insert("service_accounts", SERVICE_ACCOUNT_COLUMNS)
    get_service_account: str = f"SELECT {SERVICE_ACCOUNT_COLUMNS} FROM service_accounts WHERE unique_id=$1"
    find_service_account: str = (f"SELECT {SERVICE_ACCOUNT_COLUMNS} FROM service_accounts "
                                 "WHERE email=$1 AND deleted_at IS NULL")
    list_service_accounts: str = (f"SELECT {SERVICE_ACCOUNT_COLUMNS} FROM service_accounts "
                                  "WHERE project_id=$1 AND deleted_at IS NULL AND email>$2 ORDER BY email LIMIT $3")
    # keys
    create_key: str = _insert("keys", KEY_COLUMNS)
    get_key: str = f"SELECT {KEY_COLUMNS} FROM keys WHERE key_id=$1 AND deleted_at IS NULL"
    list_keys: str = f"SELECT {KEY_COLUMNS} FROM keys WHERE owner=$1 AND deleted_at IS NULL ORDER BY created_at, key_id"
    count_keys: str = "SELECT count(*) FROM keys WHERE owner=$1 AND key_type=$2 AND deleted_at IS NULL"
    current_system_keys: str = ("SELECT key_id FROM keys WHERE owner=$1 AND key_type='SYSTEM_MANAGED' "
                                "AND retired_at IS NULL AND deleted_at IS NULL")
    retire_system_keys: str = ("UPDATE keys SET retired_at=$1 WHERE owner=$2 AND key_type='SYSTEM_MANAGED' "
                               "AND retired_at IS NULL")
    # policies
    get_policy: str = "SELECT body, etag FROM policies WHERE resource=$1"
    put_policy: str = ("INSERT INTO policies (resource, body, etag) VALUES ($1, $2, $3) "
                       "ON CONFLICT (resource) DO UPDATE SET body=excluded.body, etag=excluded.etag")
    create_policy_if_absent: str = ("INSERT INTO policies (resource, body, etag) VALUES ($1, $2, $3) "
                                    "ON CONFLICT (resource) DO NOTHING")
    replace_policy_if_etag: str = "UPDATE policies SET body=$2, etag=$3 WHERE resource=$1 AND etag=$4"
    # users
    create_user: str = _insert("users", USER_COLUMNS)
    get_user: str = f"SELECT {USER_COLUMNS} FROM users WHERE user_id=$1"
    find_user: str = f"SELECT {USER_COLUMNS} FROM users WHERE email=$1"
    find_user_by_refresh_hash: str = f"SELECT {USER_COLUMNS} FROM users WHERE refresh_token_hash=$1"
    list_users: str = f"SELECT {USER_COLUMNS} FROM users ORDER BY email"
    delete_user: str = "DELETE FROM users WHERE user_id=$1"
    delete_codes_of_user: str = "DELETE FROM authorization_codes WHERE user_id=$1"
    # authorization codes and sign-in grants
    delete_expired_codes: str = "DELETE FROM authorization_codes WHERE expires_at < $1"
    create_code: str = _insert("authorization_codes", CODE_COLUMNS)
    # a code stays until it expires: taking it counts one presentation (RFC 6749 §4.1.2: a second revokes the first's
    # tokens, which the first exchange records unless a second presentation came meanwhile)
    take_code: str = ("UPDATE authorization_codes SET redemptions = redemptions + 1 WHERE code_hash=$1 "
                      f"RETURNING {CODE_COLUMNS}")
    record_code_exchange: str = ("UPDATE authorization_codes SET grant_id=$2, token_hash=$3 "
                                 "WHERE code_hash=$1 AND redemptions=1")
    create_grant: str = _insert("sign_in_grants", GRANT_COLUMNS)
    get_grant: str = f"SELECT {GRANT_COLUMNS} FROM sign_in_grants WHERE grant_id=$1"
    find_grant: str = f"SELECT {GRANT_COLUMNS} FROM sign_in_grants WHERE refresh_token_hash=$1"
    delete_grant: str = "DELETE FROM sign_in_grants WHERE grant_id=$1"
    delete_grants_of_user: str = "DELETE FROM sign_in_grants WHERE user_id=$1"
    # groups
    create_group: str = "INSERT INTO groups (grp) VALUES ($1) ON CONFLICT DO NOTHING"
    group_exists: str = "SELECT 1 FROM groups WHERE grp=$1"
    add_group_member: str = "INSERT INTO group_members (grp, member) VALUES ($1, $2) ON CONFLICT DO NOTHING"
    delete_group_members: str = "DELETE FROM group_members WHERE grp=$1"
    group_members: str = "SELECT member FROM group_members WHERE grp=$1 ORDER BY member"
    list_groups: str = "SELECT grp FROM groups ORDER BY grp"
    list_group_members: str = "SELECT grp, member FROM group_members ORDER BY grp, member"
    delete_group: str = "DELETE FROM groups WHERE grp=$1"
    groups_of: str = "SELECT grp FROM group_members WHERE member=$1"
    # org policies: parameters in ORG_POLICY_COLUMNS' order (org_policy_row), then the expected etag
    get_org_policy: str = f"SELECT {ORG_POLICY_COLUMNS} FROM org_policies WHERE resource=$1 AND constraint_name=$2"
    create_org_policy_if_absent: str = (_insert("org_policies", ORG_POLICY_COLUMNS)
                                        + " ON CONFLICT (resource, constraint_name) DO NOTHING")
    replace_org_policy_if_etag: str = ("UPDATE org_policies SET spec=$3, etag=$4, updated_at=$5 "
                                       "WHERE resource=$1 AND constraint_name=$2 AND etag=$6")
    put_org_policy: str = (_insert("org_policies", ORG_POLICY_COLUMNS)
                           + " ON CONFLICT (resource, constraint_name) DO UPDATE SET spec=excluded.spec, "
                           "etag=excluded.etag, updated_at=excluded.updated_at")
    delete_org_policy: str = "DELETE FROM org_policies WHERE resource=$1 AND constraint_name=$2"
    list_org_policies: str = (f"SELECT {ORG_POLICY_COLUMNS} FROM org_policies WHERE resource=$1 "
                              "ORDER BY constraint_name")
    # services
    enable_service: str = "INSERT INTO project_services (project_id, service) VALUES ($1, $2) ON CONFLICT DO NOTHING"
    disable_service: str = "DELETE FROM project_services WHERE project_id=$1 AND service=$2"
    # workload identity pools and providers
    create_workload_pool: str = _insert("workload_pools", WORKLOAD_POOL_COLUMNS)
    get_workload_pool: str = f"SELECT {WORKLOAD_POOL_COLUMNS} FROM workload_pools WHERE name=$1"
    list_workload_pools: str = (f"SELECT {WORKLOAD_POOL_COLUMNS} FROM workload_pools WHERE project_number=$1 "
                                "ORDER BY name")
    create_workload_provider: str = _insert("workload_providers", WORKLOAD_PROVIDER_COLUMNS)
    get_workload_provider: str = f"SELECT {WORKLOAD_PROVIDER_COLUMNS} FROM workload_providers WHERE name=$1"
    list_workload_providers: str = (f"SELECT {WORKLOAD_PROVIDER_COLUMNS} FROM workload_providers WHERE pool=$1 "
                                    "ORDER BY name")
    list_x509_providers: str = (f"SELECT {WORKLOAD_PROVIDER_COLUMNS} FROM workload_providers WHERE x509 <> '{{}}' "
                                "ORDER BY name")
    # audit
    append_audit: str = _insert("audit_log", AUDIT_COLUMNS)
    # revocation
    revoke_token: str = "INSERT INTO revoked_tokens (token_hash, expires_at) VALUES ($1, $2) ON CONFLICT DO NOTHING"
    is_token_revoked: str = "SELECT 1 FROM revoked_tokens WHERE token_hash=$1"

    def with_mark(self, mark: str) -> Statements:
        """These statements with numbered placeholders that begin with ``mark`` (``?`` for SQLite)."""
        return Statements(mark, *(re.sub(r"\$(?=\d)", mark, getattr(self, f.name)) for f in fields(self)[1:]))

    def update(self, table: str, key_column: str, columns: Iterable[str]) -> str:
        """``UPDATE table SET column=... WHERE key_column=...``: the key is the first parameter, then the new
        values in ``columns``' order (columns the caller checked with ``check_updatable``)."""
        sets = ", ".join(f"{column}={self.mark}{i}" for i, column in enumerate(columns, start=2))
        return f"UPDATE {table} SET {sets} WHERE {key_column}={self.mark}1"


POSTGRES = Statements()
SQLITE = POSTGRES.with_mark("?")
