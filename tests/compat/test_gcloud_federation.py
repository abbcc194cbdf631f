"""The real, unchanged ``gcloud`` with workload identity federation against a real keyless (issue 18).

``gcloud iam workload-identity-pools`` manages pools and OIDC providers; ``create-cred-config`` writes the
``external_account`` file a workload uses; ``gcloud auth login --cred-file=FILE`` signs in with it (a projected
token from a stand-in Kubernetes issuer, no key anywhere), then ``auth print-access-token`` gives the federated
token, or with ``--impersonate-service-account`` (or a file naming an account) the account's token.

Both routes of tests/compat/test_gcloud.py: ``proxy`` (``keyless env``: Google's URLs, the interception proxy
brings ``iam``, ``sts`` and ``iamcredentials.googleapis.com`` to keyless) and ``api_endpoint_overrides``
(``keyless env --gcloud-overrides``). gcloud has no endpoint override for STS: it exchanges and introspects at the
``token_url`` and ``token_info_url`` the credential file names, and ``create-cred-config`` always writes Google's
URLs, so on that route the file names keyless's URLs instead (as docs/federation.md says). The resource commands
never poll an operation: keyless answers them done, and gcloud takes the resource from the answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.compat.federation_support import make_cluster
from tests.compat.gcloud_support import ROUTES, Gcloud, require_gcloud, sdk_version, tokeninfo
from tests.conftest import Server, start_server
from tests.federation.issuer import ISSUER, Issuer

GCLOUD_CLIENT = f"gcloud {sdk_version()}"
PROJECT = "keyless-dev"
POOLS = f"/v1/projects/{PROJECT}/locations/global/workloadIdentityPools"
WIF = "iam workload-identity-pools"


def both_routes(call: str) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("route", [
        pytest.param(r, marks=pytest.mark.compat(section="2.3", client=GCLOUD_CLIENT, call=call, route=ROUTES[r]),
                     id=r) for r in ROUTES])


@dataclass
class World:
    srv: Server
    base: Path
    issuer: Issuer
    number: str
    provider: str  # the full name of the cluster's provider
    account: str  # prod's workloads may impersonate it

    @property
    def audience(self) -> str:
        return f"//iam.googleapis.com/{self.provider}"

    def member(self, subject: str) -> str:
        return (f"principal://iam.googleapis.com/projects/{self.number}/locations/global/workloadIdentityPools/"
                f"cluster/subject/{subject}")

    def gcloud(self, route: str, tmp_path: Path) -> Gcloud:
        """A fresh gcloud configuration of the route (signed in as the owner) for one test."""
        return Gcloud.for_route(self.srv, route, tmp_path)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    require_gcloud()
    base = tmp_path_factory.mktemp("compat-gcloud-wif")
    srv = start_server(base / "data", "--proxy-port", "0")
    try:
        issuer = Issuer()
        number, provider, account = make_cluster(srv, issuer, "cluster", "Cluster", "wif-gcloud")
        yield World(srv, base, issuer, number, provider, account)
    finally:
        srv.stop()


def _rest(world: World, path: str, expect: int = 200) -> Any:
    return world.srv.owner("GET", path, expect=expect)


# ---------------------------------------------------------------- pools and providers


@both_routes("iam workload-identity-pools create / describe / list / update / delete / undelete")
def test_pool_lifecycle(world: World, route: str, tmp_path: Path) -> None:
    gc = world.gcloud(route, tmp_path)
    pool = f"pool-{route[:4]}"
    created = gc.run(*WIF.split(), "create", pool, "--location=global", "--display-name=Runners",
                     "--description=CI runners")
    assert created.returncode == 0, created.stderr
    assert f"Created workload identity pool [{pool}]." in created.stderr
    described = gc.json(*WIF.split(), "describe", pool, "--location=global")
    assert described == {"name": f"projects/{world.number}/locations/global/workloadIdentityPools/{pool}",
                         "displayName": "Runners", "description": "CI runners", "state": "ACTIVE"}
    listed = gc.json(*WIF.split(), "list", "--location=global")
    assert described["name"] in [p["name"] for p in listed]
    gc.ok(*WIF.split(), "update", pool, "--location=global", "--disabled", "--display-name=Old runners")
    got = _rest(world, f"{POOLS}/{pool}")
    assert (got["displayName"], got.get("disabled")) == ("Old runners", True)
    gc.ok(*WIF.split(), "delete", pool, "--location=global")
    assert _rest(world, f"{POOLS}/{pool}")["state"] == "DELETED"
    assert described["name"] not in [p["name"] for p in gc.json(*WIF.split(), "list", "--location=global")]
    assert described["name"] in [p["name"] for p in gc.json(*WIF.split(), "list", "--location=global",
                                                             "--show-deleted")]
    gc.ok(*WIF.split(), "undelete", pool, "--location=global")
    assert _rest(world, f"{POOLS}/{pool}")["state"] == "ACTIVE"
    refused = gc.run(*WIF.split(), "create", "gcp-reserved", "--location=global")
    assert refused.returncode == 1 and "INVALID_ARGUMENT" in refused.stderr


@both_routes("iam workload-identity-pools providers create-oidc / describe / list / update-oidc / delete / "
             "undelete")
def test_oidc_provider_lifecycle(world: World, route: str, tmp_path: Path) -> None:
    gc = world.gcloud(route, tmp_path)
    provider = f"gh-{route[:4]}"
    jwks = tmp_path / "jwks.json"
    jwks.write_text(world.issuer.jwks())
    where = ("--location=global", "--workload-identity-pool=cluster")
    created = gc.run(*WIF.split(), "providers", "create-oidc", provider, *where,
                     "--issuer-uri=https://token.actions.githubusercontent.com", f"--jwk-json-path={jwks}",
                     "--attribute-mapping=google.subject=assertion.sub,attribute.repository=assertion.repository",
                     "--attribute-condition=assertion.repository_owner == 'keyless'",
                     "--allowed-audiences=https://github.com/keyless", "--display-name=GitHub")
    assert created.returncode == 0, created.stderr
    assert f"Created workload identity pool provider [{provider}]." in created.stderr
    described = gc.json(*WIF.split(), "providers", "describe", provider, *where)
    assert described["oidc"] == {"issuerUri": "https://token.actions.githubusercontent.com",
                                 "allowedAudiences": ["https://github.com/keyless"],
                                 "jwksJson": world.issuer.jwks()}
    assert described["attributeMapping"] == {"google.subject": "assertion.sub",
                                             "attribute.repository": "assertion.repository"}
    assert described["attributeCondition"] == "assertion.repository_owner == 'keyless'"
    assert described["name"] in [p["name"] for p in gc.json(*WIF.split(), "providers", "list", *where)]
    gc.ok(*WIF.split(), "providers", "update-oidc", provider, *where, "--display-name=Actions",
          "--allowed-audiences=https://github.com/keyless,https://github.com/other")
    got = _rest(world, f"{POOLS}/cluster/providers/{provider}")
    assert got["displayName"] == "Actions"
    assert got["oidc"]["allowedAudiences"] == ["https://github.com/keyless", "https://github.com/other"]
    assert got["oidc"]["jwksJson"] == world.issuer.jwks()  # the mask's other fields are kept
    gc.ok(*WIF.split(), "providers", "delete", provider, *where)
    assert _rest(world, f"{POOLS}/cluster/providers/{provider}")["state"] == "DELETED"
    gc.ok(*WIF.split(), "providers", "undelete", provider, *where)
    assert _rest(world, f"{POOLS}/cluster/providers/{provider}")["state"] == "ACTIVE"
    # Without --jwk-json-path keyless discovers the issuer's keys when it needs them, as Google does
    # (tests/federation/test_discovery.py): the provider is kept without jwksJson. An issuer it may not fetch from
    # (plain http off loopback) is refused when the provider is written, saying why.
    provider = f"discovered-{route[:4]}"
    gc.ok(*WIF.split(), "providers", "create-oidc", provider, *where, f"--issuer-uri={ISSUER}",
          "--attribute-mapping=google.subject=assertion.sub")
    assert gc.json(*WIF.split(), "providers", "describe", provider, *where)["oidc"] == {"issuerUri": ISSUER}
    refused = gc.run(*WIF.split(), "providers", "create-oidc", f"plain-{route[:4]}", *where,
                     "--issuer-uri=http://issuer.example.com", "--attribute-mapping=google.subject=assertion.sub")
    assert refused.returncode == 1 and "https://" in refused.stderr, refused.stderr


# ---------------------------------------------------------------- the credential file, and signing in with it


@pytest.mark.compat(section="2.3", client=GCLOUD_CLIENT, call="iam workload-identity-pools create-cred-config "
                    "(file source, with and without --service-account)", route="local")
def test_create_cred_config_writes_google_urls(world: World, tmp_path: Path) -> None:
    gc = world.gcloud("proxy", tmp_path)
    token_file = tmp_path / "token"
    plain, impersonating = tmp_path / "plain.json", tmp_path / "impersonating.json"
    gc.ok(*WIF.split(), "create-cred-config", world.provider, f"--credential-source-file={token_file}",
          f"--output-file={plain}")
    gc.ok(*WIF.split(), "create-cred-config", world.provider, f"--credential-source-file={token_file}",
          f"--service-account={world.account}", f"--output-file={impersonating}")
    written = json.loads(plain.read_text())
    assert written == {"universe_domain": "googleapis.com", "type": "external_account", "audience": world.audience,
                       "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
                       "token_url": "https://sts.googleapis.com/v1/token",
                       "credential_source": {"file": str(token_file)},
                       "token_info_url": "https://sts.googleapis.com/v1/introspect"}
    assert json.loads(impersonating.read_text())["service_account_impersonation_url"] == (
        f"https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/{world.account}:generateAccessToken")


def _cred_files(world: World, gc: Gcloud, route: str, tmp_path: Path, token_file: Path) -> tuple[Path, Path]:
    """The files ``create-cred-config`` writes (without and with the account); on the override route, with
    keyless's URLs in place of Google's (gcloud has no STS endpoint override)."""
    files = []
    for name, extra in (("plain", ()), ("impersonating", (f"--service-account={world.account}",))):
        path = tmp_path / f"{name}.json"
        gc.ok(*WIF.split(), "create-cred-config", world.provider, f"--credential-source-file={token_file}",
              f"--output-file={path}", *extra)
        if route == "overrides":
            info = json.loads(path.read_text())
            for key, value in info.items():
                if isinstance(value, str) and value.startswith("https://sts.googleapis.com/"):
                    info[key] = world.srv.url + value[len("https://sts.googleapis.com"):]
                elif isinstance(value, str) and value.startswith("https://iamcredentials.googleapis.com/"):
                    info[key] = world.srv.url + value[len("https://iamcredentials.googleapis.com"):]
            path.write_text(json.dumps(info))
        files.append(path)
    return files[0], files[1]


@both_routes("auth login --cred-file=<external_account file> / auth print-access-token "
             "(and --impersonate-service-account, and a file naming the account)")
def test_login_with_a_credential_file(world: World, route: str, tmp_path: Path) -> None:
    gc = world.gcloud(route, tmp_path)
    token_file = tmp_path / "token"  # what the cluster projects into the pod
    token_file.write_text(world.issuer.token(world.audience))
    plain, impersonating = _cred_files(world, gc, route, tmp_path, token_file)
    member = world.member("system:serviceaccount:prod:builder")

    signed_in = gc.run("auth", "login", f"--cred-file={plain}")
    assert signed_in.returncode == 0, signed_in.stderr
    assert f"Authenticated with external account credentials for: [{member}]." in signed_in.stderr
    assert gc.ok("config", "get", "account").strip() == member
    federated = gc.ok("auth", "print-access-token").strip()
    assert tokeninfo(world.srv, federated)["sub"] == member
    impersonated = gc.ok("auth", "print-access-token", f"--impersonate-service-account={world.account}").strip()
    assert tokeninfo(world.srv, impersonated)["email"] == world.account
    # The federated principal acts where its bindings allow: prod's workloads may read the account.
    described = gc.json("iam", "service-accounts", "describe", world.account)
    assert described["email"] == world.account

    signed_in = gc.run("auth", "login", f"--cred-file={impersonating}")
    assert signed_in.returncode == 0, signed_in.stderr
    assert f"Authenticated with external account credentials for: [{world.account}]." in signed_in.stderr
    assert tokeninfo(world.srv, gc.ok("auth", "print-access-token").strip())["email"] == world.account

    # A workload of a namespace the provider's condition refuses gets nothing.
    token_file.write_text(world.issuer.token(world.audience, namespace="dev",
                                             subject="system:serviceaccount:dev:builder"))
    refused = gc.run("auth", "login", f"--cred-file={plain}")
    assert refused.returncode == 1
    assert "rejected by the attribute condition" in refused.stderr, refused.stderr
