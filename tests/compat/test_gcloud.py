"""The real, unchanged ``gcloud`` (wire.md section 2.3) against a real keyless: every flow of the seed documents.

Each test is one flow of several gcloud commands, run on both routes: ``proxy`` (exactly what
``eval "$(keyless env)"`` sets: gcloud keeps Google's URLs and the interception proxy brings them to keyless)
and ``api_endpoint_overrides`` (``keyless env --gcloud-overrides``: gcloud's ``api_endpoint_overrides/*`` and
``auth/token_host`` name keyless's API URL, no proxy). Both start from the configuration ``keyless env`` writes
(DATA_DIR/gcloud, signed in as the owner), each with its own copy, and share one server and its accounts.
What gcloud prints is checked against keyless: tokens through tokeninfo, ID tokens, signatures and signed
URLs with the accounts' published keys, state changes through keyless's REST API.

gcloud is slow to start (about a second a command), so the flows are grouped and the fixtures make accounts
and grants through REST. Without gcloud on PATH the module is skipped, except under CI=true where that fails.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.compat.gcloud_support import (
    GSUTIL,
    OWNER,
    ROUTES,
    TOKEN_CREATOR,
    Gcloud,
    check_id_token,
    require_gcloud,
    sdk_version,
    storage_stand_in,
    tokeninfo,
    verify_signature,
    verify_signed_url,
)
from tests.conftest import KEYLESS, Server, start_server

GCLOUD_CLIENT = f"gcloud {sdk_version()}"
PROJECT = "keyless-dev"
AUDIENCE = "https://gcloud-compat.keyless.test"
CONDITION = 'expression=request.time < timestamp("2030-01-01T00:00:00Z"),title=until-2030'
LIFETIME_CONSTRAINT = "iam.allowServiceAccountCredentialLifetimeExtension"


def row(call: str, route: str, client: str = GCLOUD_CLIENT) -> pytest.MarkDecorator:
    return pytest.mark.compat(section="2.3", client=client, call=call, route=ROUTES[route])


def both_routes(call: str) -> pytest.MarkDecorator:
    """One row per route for the flow ``call``."""
    return pytest.mark.parametrize("route", [pytest.param(r, marks=row(call, r), id=r) for r in ROUTES])


@dataclass
class World:
    srv: Server
    base: Path
    target: str  # the owner, mid and caller hold Token Creator on it
    mid: str  # the owner holds Token Creator on it: the chain mid,target
    caller: str  # has a key file from keyless
    caller_key: Path
    denied: str  # nobody holds a role on it
    routes: dict[str, Gcloud]

    def email(self, account_id: str) -> str:
        return f"{account_id}@{PROJECT}.iam.gserviceaccount.com"

    def account(self, email: str, expect: int = 200) -> Any:
        return self.srv.owner("GET", f"/v1/projects/{PROJECT}/serviceAccounts/{email}", expect=expect)

    def new_account(self, account_id: str, *, owner_may_impersonate: bool = False) -> str:
        email = self.srv.create_sa(account_id)
        if owner_may_impersonate:
            self.srv.grant(email, f"user:{OWNER}")
        return email


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    require_gcloud()
    base = tmp_path_factory.mktemp("compat-gcloud")
    srv = start_server(base / "data", "--proxy-port", "0", "--metadata-port", "0")
    try:
        target, mid, caller, denied = (srv.create_sa(f"gc-{name}") for name in ("target", "mid", "caller", "denied"))
        for email, member in ((target, f"user:{OWNER}"), (mid, f"user:{OWNER}"), (target, f"serviceAccount:{mid}"),
                              (target, f"serviceAccount:{caller}")):
            srv.grant(email, member)
        key = srv.key_file(caller, base / "caller.json")
        routes = {route: Gcloud.for_route(srv, route, base) for route in ROUTES}
        yield World(srv, base, target, mid, caller, key, denied, routes)
    finally:
        srv.stop()


# ---------------------------------------------------------------- done when: a new shell, nothing else done


@pytest.mark.compat(section="2.3", client=GCLOUD_CLIENT, call='eval "$(keyless env)"; gcloud iam service-accounts list',
                    route="proxy")
def test_eval_keyless_env_then_gcloud_works_in_a_new_shell(world: World, tmp_path: Path) -> None:
    # A user's new shell: their environment as it is (here the machine's CA variables, gcloud's among them) with
    # a HOME whose own gcloud configuration is signed in elsewhere; no CLOUDSDK_* quieting, no setup but the eval.
    home = tmp_path / "home"
    (home / ".config" / "gcloud" / "configurations").mkdir(parents=True)
    (home / ".config" / "gcloud" / "configurations" / "config_default").write_text(
        "[core]\naccount = someone@gmail.example\nproject = a-real-project\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYLESS_", "GOOGLE_", "BOTO_"))
           and k not in ("CLOUDSDK_CONFIG", "HTTPS_PROXY", "https_proxy")}
    env.update(HOME=str(home), KEYLESS_DATA_DIR=str(world.srv.data_dir))
    script = f'eval "$({" ".join(KEYLESS)} env)"; gcloud iam service-accounts list --format="value(email)"'
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=120, cwd=home)
    assert proc.returncode == 0, proc.stderr
    assert {world.target, world.mid, world.caller, world.denied} <= set(proc.stdout.split())
    assert sorted(p.name for p in (home / ".config" / "gcloud").iterdir()) == ["configurations"]


# ---------------------------------------------------------------- setting up


@both_routes("init (pick the configuration, the account, a project from projects.list) / projects list")
def test_init_and_projects_list(world: World, route: str) -> None:
    gc = world.routes[route]
    # `gcloud init` asks; the answers pick: re-initialize [default], owner@keyless.local, the first project.
    proc = gc.run("init", "--console-only", "--skip-diagnostics", stdin="1\n1\n1\n",
                  extra_env={"CLOUDSDK_CORE_DISABLE_PROMPTS": "0"})
    assert proc.returncode == 0, proc.stderr
    assert "Listing available projects failed" not in proc.stderr
    assert f" [1] {PROJECT}\n" in proc.stderr  # offered from projects.list
    assert f"You are signed in as: [{OWNER}]." in proc.stderr
    assert f"Your current project has been set to: [{PROJECT}]." in proc.stderr
    listed = gc.json("projects", "list")
    assert [(p["projectId"], p["lifecycleState"]) for p in listed] == [(PROJECT, "ACTIVE")]


# ---------------------------------------------------------------- service accounts


@both_routes("iam service-accounts create / list / describe / update / disable / enable / delete / undelete")
def test_service_account_lifecycle(world: World, route: str) -> None:
    gc = world.routes[route]
    name = f"gc-life-{route}"
    email = world.email(name)
    created = gc.run("iam", "service-accounts", "create", name, "--display-name=Lifecycle",
                     "--description=made by gcloud")
    assert created.returncode == 0, created.stderr
    assert f"Created service account [{name}]." in created.stderr
    assert email in gc.ok("iam", "service-accounts", "list", "--format=value(email)").split()
    described = gc.json("iam", "service-accounts", "describe", email)
    assert (described["displayName"], described["description"]) == ("Lifecycle", "made by gcloud")
    updated = gc.json("iam", "service-accounts", "update", email, "--display-name=Renamed")
    assert updated["displayName"] == "Renamed" == world.account(email)["displayName"]
    gc.ok("iam", "service-accounts", "disable", email)
    assert world.account(email).get("disabled") is True
    gc.ok("iam", "service-accounts", "enable", email)
    assert not world.account(email).get("disabled")
    gc.ok("iam", "service-accounts", "delete", email)
    world.account(email, expect=404)
    restored = gc.json("iam", "service-accounts", "undelete", described["uniqueId"])
    assert restored["restoredAccount"]["email"] == email
    assert world.account(email)["uniqueId"] == described["uniqueId"]


@both_routes("iam service-accounts add-iam-policy-binding (and --condition) / get-iam-policy / "
             "remove-iam-policy-binding / set-iam-policy")
def test_account_policy_bindings(world: World, route: str) -> None:
    gc = world.routes[route]
    email = world.new_account(f"gc-pol-{route}")
    member = f"serviceAccount:{world.caller}"
    policy = gc.json("iam", "service-accounts", "add-iam-policy-binding", email, f"--member={member}",
                     f"--role={TOKEN_CREATOR}")
    assert {"role": TOKEN_CREATOR, "members": [member]} in policy["bindings"]
    policy = gc.json("iam", "service-accounts", "add-iam-policy-binding", email, f"--member=user:{OWNER}",
                     "--role=roles/iam.serviceAccountUser", f"--condition={CONDITION}")
    assert policy["version"] == 3
    conditional = {"role": "roles/iam.serviceAccountUser", "members": [f"user:{OWNER}"],
                   "condition": {"expression": 'request.time < timestamp("2030-01-01T00:00:00Z")',
                                 "title": "until-2030"}}
    assert conditional in policy["bindings"]
    read = gc.json("iam", "service-accounts", "get-iam-policy", email)
    assert read["version"] == 3 and conditional in read["bindings"] and read["etag"] == policy["etag"]
    policy = gc.json("iam", "service-accounts", "remove-iam-policy-binding", email, f"--member=user:{OWNER}",
                     "--role=roles/iam.serviceAccountUser", f"--condition={CONDITION}")
    assert conditional not in policy["bindings"]
    # set-iam-policy with the etag just read: the caller loses Token Creator, the owner gains it.
    policy["bindings"] = [{"role": TOKEN_CREATOR, "members": [f"user:{OWNER}"]}]
    policy_file = gc.workdir / f"policy-{route}.json"
    policy_file.write_text(json.dumps(policy))
    written = gc.json("iam", "service-accounts", "set-iam-policy", email, str(policy_file))
    assert written["bindings"] == policy["bindings"] and written["etag"] != policy["etag"]
    stored = world.srv.owner("POST", f"/v1/projects/-/serviceAccounts/{email}:getIamPolicy")
    assert stored["bindings"] == policy["bindings"]


@both_routes("projects add-iam-policy-binding (and --condition) / get-iam-policy --flatten / "
             "remove-iam-policy-binding / set-iam-policy")
def test_project_policy_bindings(world: World, route: str) -> None:
    gc = world.routes[route]
    email = world.new_account(f"gc-proj-{route}")
    member = f"serviceAccount:{email}"
    # Both routes share the project's policy; once it holds a condition, gcloud (no prompts) wants --condition.
    policy = gc.json("projects", "add-iam-policy-binding", PROJECT, f"--member={member}", f"--role={TOKEN_CREATOR}",
                     "--condition=None")
    assert any(b["role"] == TOKEN_CREATOR and member in b["members"] and "condition" not in b
               for b in policy["bindings"])
    policy = gc.json("projects", "add-iam-policy-binding", PROJECT, f"--member={member}",
                     "--role=roles/iam.serviceAccountUser", f"--condition={CONDITION}")  # no basic role: gcloud
    assert policy["version"] == 3
    assert any(b["role"] == "roles/iam.serviceAccountUser" and member in b["members"] and b["condition"]["title"] == "until-2030"
               for b in policy["bindings"])
    table = gc.ok("projects", "get-iam-policy", PROJECT, "--flatten=bindings[].members",
                  "--format=table(bindings.role, bindings.members)")
    rows = [line.split() for line in table.splitlines()]
    assert rows[0] == ["ROLE", "MEMBERS"]
    assert [TOKEN_CREATOR, member] in rows and ["roles/owner", f"user:{OWNER}"] in rows
    policy = gc.json("projects", "remove-iam-policy-binding", PROJECT, f"--member={member}",
                     f"--role={TOKEN_CREATOR}", "--condition=None")
    assert not any(b["role"] == TOKEN_CREATOR and member in b["members"] for b in policy["bindings"])
    policy["bindings"] = [b for b in policy["bindings"] if member not in b["members"]]
    policy_file = gc.workdir / f"project-policy-{route}.json"
    policy_file.write_text(json.dumps(policy))
    written = gc.json("projects", "set-iam-policy", PROJECT, str(policy_file))
    assert not any(member in b["members"] for b in written["bindings"])
    assert {"role": "roles/owner", "members": [f"user:{OWNER}"]} in written["bindings"]


def _certificate_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "uploaded by gcloud")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=30)).sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


@both_routes("iam service-accounts keys create / list / disable / upload / delete")
def test_keys(world: World, route: str) -> None:
    gc = world.routes[route]
    email = world.new_account(f"gc-keys-{route}")
    key_file = gc.workdir / f"key-{route}.json"
    created = gc.run("iam", "service-accounts", "keys", "create", str(key_file), f"--iam-account={email}")
    assert created.returncode == 0, created.stderr
    info = json.loads(key_file.read_text())
    key_id = info["private_key_id"]
    assert (info["type"], info["client_email"]) == ("service_account", email)
    assert f"created key [{key_id}] of type [json] as [{key_file}] for [{email}]" in created.stderr
    listed = gc.json("iam", "service-accounts", "keys", "list", f"--iam-account={email}", "--managed-by=user")
    assert [k["name"].rsplit("/", 1)[1] for k in listed] == [key_id]
    gc.ok("iam", "service-accounts", "keys", "disable", key_id, f"--iam-account={email}")
    keys_path = f"/v1/projects/-/serviceAccounts/{email}/keys"
    assert world.srv.owner("GET", f"{keys_path}/{key_id}").get("disabled") is True
    pem = gc.workdir / f"cert-{route}.pem"
    pem.write_bytes(_certificate_pem())
    uploaded = gc.json("iam", "service-accounts", "keys", "upload", str(pem), f"--iam-account={email}")
    assert uploaded["keyOrigin"] == "USER_PROVIDED"
    gc.ok("iam", "service-accounts", "keys", "delete", key_id, f"--iam-account={email}")
    remaining = world.srv.owner("GET", f"{keys_path}?keyTypes=USER_MANAGED")["keys"]
    assert [k["name"] for k in remaining] == [uploaded["name"]]


# ---------------------------------------------------------------- tokens, signatures, signed URLs


@both_routes("auth print-access-token / print-identity-token --audiences --include-email "
             "--impersonate-service-account=A and =B,A")
def test_impersonated_tokens(world: World, route: str) -> None:
    gc = world.routes[route]
    for chain in (world.target, f"{world.mid},{world.target}"):
        proc = gc.run("auth", "print-access-token", f"--impersonate-service-account={chain}")
        assert proc.returncode == 0, proc.stderr
        assert ("WARNING: This command is using service account impersonation. All API calls will be executed as "
                f"[{world.target}].") in proc.stderr
        assert tokeninfo(world.srv, proc.stdout)["email"] == world.target
        token = gc.ok("auth", "print-identity-token", f"--impersonate-service-account={chain}",
                      f"--audiences={AUDIENCE}", "--include-email")
        check_id_token(world.srv, token, world.target, AUDIENCE)


@both_routes("auth/impersonate_service_account property: auth print-access-token and API calls run as the account")
def test_impersonation_property(world: World, route: str) -> None:
    gc = world.routes[route]
    gc.ok("config", "set", "auth/impersonate_service_account", world.target)
    try:
        assert tokeninfo(world.srv, gc.ok("auth", "print-access-token"))["email"] == world.target
        # The owner may read any account; the impersonated target may not read this one.
        stderr = gc.denied("iam", "service-accounts", "describe", world.denied)
        assert f"Impersonation is used to impersonate {world.target}" in stderr
    finally:
        gc.ok("config", "unset", "auth/impersonate_service_account")
    # (gcloud's print-identity-token impersonates only with the flag, never with the property.)


@both_routes("auth print-access-token --lifetime=2h refused, allowed once the lifetime constraint lists the account")
def test_lifetime_extension(world: World, route: str) -> None:
    gc = world.routes[route]
    email = world.new_account(f"gc-long-{route}", owner_may_impersonate=True)
    refused = gc.run("auth", "print-access-token", f"--impersonate-service-account={email}", "--lifetime=7200")
    assert refused.returncode == 1, refused.stderr
    assert "Lifetime 7200s exceeds the maximum of 3600s" in refused.stderr
    assert f"constraints/{LIFETIME_CONSTRAINT}" in refused.stderr
    # The constraint is set through keyless's own CLI (gcloud's org-policy commands: see docs/gcloud.md).
    world.srv.cli("resource-manager", "org-policies", "allow", LIFETIME_CONSTRAINT, email, f"--project={PROJECT}")
    token = gc.ok("auth", "print-access-token", f"--impersonate-service-account={email}", "--lifetime=7200")
    info = tokeninfo(world.srv, token)
    assert info["email"] == email and 3600 < int(info["expires_in"]) <= 7200


@both_routes("iam service-accounts sign-blob / sign-jwt")
def test_sign_blob_and_jwt(world: World, route: str) -> None:
    gc = world.routes[route]
    blob_in, blob_out = gc.workdir / "blob.txt", gc.workdir / "blob.sig"
    blob_in.write_bytes(b"signed by gcloud through keyless\n")
    proc = gc.run("iam", "service-accounts", "sign-blob", str(blob_in), str(blob_out), f"--iam-account={world.target}")
    assert proc.returncode == 0, proc.stderr
    key_id = verify_signature(world.srv, world.target, blob_in.read_bytes(), blob_out.read_bytes())
    assert f"using key [{key_id}]" in proc.stderr
    claims_in, jwt_out = gc.workdir / "claims.json", gc.workdir / "claims.jwt"
    claims_in.write_text(json.dumps({"sub": world.target, "aud": AUDIENCE}))
    gc.ok("iam", "service-accounts", "sign-jwt", str(claims_in), str(jwt_out), f"--iam-account={world.target}")
    token = jwt_out.read_text().strip()
    header = jwt.get_unverified_header(token)
    r = requests.get(f"{world.srv.url}/service_accounts/v1/metadata/x509/{world.target}", timeout=10)
    public = x509.load_pem_x509_certificate(r.json()[header["kid"]].encode()).public_key()
    claims = jwt.decode(token, public, algorithms=["RS256"], audience=AUDIENCE)  # type: ignore[arg-type]
    assert claims["sub"] == world.target and claims["exp"] > claims.get("iat", 0)


@both_routes("storage sign-url --impersonate-service-account --region (signBlob)")
def test_storage_sign_url(world: World, route: str) -> None:
    gc = world.routes[route]
    # The URL is signed through keyless; gcloud then HEADs it on Cloud Storage's XML API, which keyless does not
    # serve: a stand-in answers there (storage/gs_xml_endpoint_url, the host the URL names).
    with storage_stand_in() as storage:
        url = gc.ok("storage", "sign-url", "gs://my-bucket/my_path/my_file.txt", "--duration=1h",
                    f"--impersonate-service-account={world.target}", "--region=us-central1",
                    "--format=value(signed_url)", extra_env={"CLOUDSDK_STORAGE_GS_XML_ENDPOINT_URL": storage})
    assert url.startswith(f"{storage}/my-bucket/my_path/my_file.txt?"), url
    params = verify_signed_url(world.srv, url, world.target)
    assert params["x-goog-expires"] == "3600"
    assert params["x-goog-credential"].endswith("/us-central1/storage/goog4_request")


# ---------------------------------------------------------------- other credentials


@both_routes("auth activate-service-account --key-file (a keyless key), then print-access-token / "
             "print-identity-token / --impersonate-service-account")
def test_activate_service_account(world: World, route: str) -> None:
    gc = world.routes[route]
    proc = gc.run("auth", "activate-service-account", f"--key-file={world.caller_key}")
    assert proc.returncode == 0, proc.stderr
    assert f"Activated service account credentials for: [{world.caller}]" in proc.stderr
    try:
        assert tokeninfo(world.srv, gc.ok("auth", "print-access-token"))["email"] == world.caller
        token = gc.ok("auth", "print-identity-token", f"--audiences={AUDIENCE}")
        assert check_id_token(world.srv, token, world.caller, AUDIENCE)["sub"] == \
            world.account(world.caller)["uniqueId"]
        impersonated = gc.ok("auth", "print-access-token", f"--impersonate-service-account={world.target}")
        assert tokeninfo(world.srv, impersonated)["email"] == world.target
    finally:
        gc.ok("config", "set", "account", OWNER)


@both_routes("denied: auth print-access-token --impersonate-service-account / sign-blob (PERMISSION_DENIED, exit 1)")
def test_denials(world: World, route: str) -> None:
    gc = world.routes[route]
    stderr = gc.denied("auth", "print-access-token", f"--impersonate-service-account={world.denied}")
    assert f"Failed to impersonate [{world.denied}]" in stderr
    assert "iam.serviceAccounts.getAccessToken" in stderr
    blob = gc.workdir / "denied.txt"
    blob.write_text("never signed")
    stderr = gc.denied("iam", "service-accounts", "sign-blob", str(blob), str(gc.workdir / "denied.sig"),
                       f"--iam-account={world.denied}")
    assert "iam.serviceAccounts.signBlob" in stderr


@pytest.mark.compat(section="2.3", client=GCLOUD_CLIENT, route="proxy",
                    call="auth application-default print-access-token (impersonated_service_account ADC file)")
def test_application_default_print_access_token(world: World) -> None:
    # google-auth's ADC, not gcloud's credential store: the source credential refreshes at Google's token URL
    # whatever the file says, and generateAccessToken goes to iamcredentials.googleapis.com whatever the file
    # says (docs/gcloud.md, the endpoint-override route), so only the proxy brings it to keyless.
    gc = world.routes["proxy"]
    adc = gc.workdir / "impersonated-adc.json"
    world.srv.cli("adc", "impersonate", world.target, "--output", str(adc))
    token = gc.ok("auth", "application-default", "print-access-token",
                  extra_env={"GOOGLE_APPLICATION_CREDENTIALS": str(adc)})
    assert tokeninfo(world.srv, token)["email"] == world.target


def _signed_url_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The signed URL of the one line ``gsutil signurl`` printed for gs://my-bucket/..."""
    lines = [line for line in proc.stdout.splitlines() if line.startswith("gs://my-bucket/")]
    assert lines, proc.stdout + proc.stderr
    return lines[0].split("\t")[3]


@pytest.mark.compat(section="2.3", client="gsutil (Cloud SDK)", route="proxy",
                    call="gsutil -i SA signurl -u -r REGION (signBlob; the probe of Cloud Storage is not served)")
def test_gsutil_signurl(world: World) -> None:
    if not GSUTIL:
        pytest.skip("gsutil is not installed with this Cloud SDK")
    gc = world.routes["proxy"]
    proc = gc.run("-i", world.target, "signurl", "-u", "-d", "1h", "-r", "us-central1",
                  "gs://my-bucket/my_path/my_file.txt", program=GSUTIL)
    # gsutil prints the URL, then HEADs it on storage.googleapis.com: Cloud Storage itself, which keyless does not
    # serve (through the proxy it is tunnelled to Google, here unreachable), so its exit code is not keyless's.
    url = _signed_url_line(proc)
    assert url.startswith("https://storage.googleapis.com/my-bucket/my_path/my_file.txt?"), url
    verify_signed_url(world.srv, url, world.target)


# ---------------------------------------------------------------- the endpoint-override route to an HTTPS API


@dataclass
class HttpsApi:
    """A keyless whose API serves HTTPS (``keyless serve $(keyless certificate)``), and gcloud on its
    endpoint-override route: what gsutil's IAM Credentials calls need (gsutil reaches them over HTTPS only)."""

    srv: Server
    target: str  # the owner holds Token Creator on it
    gc: Gcloud
    certificate: tuple[Path, Path]  # the API's, from keyless's local CA


@pytest.fixture(scope="module")
def https_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpsApi]:
    require_gcloud()
    base = tmp_path_factory.mktemp("compat-gcloud-https")
    data = base / "data"
    flags = subprocess.run([*KEYLESS, "--data-dir", str(data), "certificate"], capture_output=True, text=True,
                           check=True, timeout=60).stdout.split()
    assert flags[0::2] == ["--tls-cert", "--tls-key"], flags
    # The proxy stays on: it is what writes DATA_DIR/ca-bundle.pem, which trusts keyless's CA.
    srv = start_server(data, *flags, "--proxy-port", "0", "--metadata-port", "-1")
    srv.verify = str(data / "ca-bundle.pem")
    try:
        assert srv.url.startswith("https://127.0.0.1:")
        target = srv.create_sa("gc-https-target")
        srv.grant(target, f"user:{OWNER}")
        yield HttpsApi(srv, target, Gcloud.for_route(srv, "overrides", base), (Path(flags[1]), Path(flags[3])))
    finally:
        srv.stop()


@pytest.mark.compat(section="2.3", client="gsutil (Cloud SDK)", route=ROUTES["overrides"],
                    call="gsutil -i SA signurl -u -r REGION, the API over HTTPS (the boto file of keyless env "
                         "--gcloud-overrides: gs_iamcredentials_host, provider_token_uri)")
def test_gsutil_signurl_on_the_override_route(https_api: HttpsApi) -> None:
    if not GSUTIL:
        pytest.skip("gsutil is not installed with this Cloud SDK")
    gc = https_api.gc
    assert gc.env["CLOUDSDK_API_ENDPOINT_OVERRIDES_IAMCREDENTIALS"] == f"{https_api.srv.url}/"
    assert "HTTPS_PROXY" not in gc.env
    # gsutil probes the URL it signed on its Cloud Storage host (over HTTPS): a stand-in answers there, with the
    # API's certificate (the gsutil options name it the way gcloud storage's CLOUDSDK_STORAGE_* do).
    with storage_stand_in(tls=https_api.certificate) as storage:
        host = storage.removeprefix("https://")
        proc = gc.run("-o", f"Credentials:gs_host={host}", "-o", "Credentials:gs_json_host=127.0.0.1", "-o",
                      f"Credentials:gs_json_port={host.rsplit(':', 1)[1]}", "-i", https_api.target, "signurl", "-u",
                      "-d", "1h", "-r", "us-central1", "gs://my-bucket/my_path/my_file.txt", program=GSUTIL)
    assert proc.returncode == 0, proc.stderr
    url = _signed_url_line(proc)
    assert url.startswith(f"{storage}/my-bucket/my_path/my_file.txt?"), url
    params = verify_signed_url(https_api.srv, url, https_api.target)
    assert params["x-goog-expires"] == "3600"


def test_the_users_home_is_untouched(world: World) -> None:
    """gcloud and gsutil keep to keyless's configuration: nothing of theirs lands in HOME."""
    for route in ROUTES:
        home = Path(world.routes[route].env["HOME"])
        assert sorted(p.name for p in home.iterdir()) == [".boto"], route
        assert (home / ".boto").read_text() == "", route

