"""``keyless env``, ``keyless adc`` and ``keyless certificate``: the variables and files that point unchanged
clients at keyless.

Two routes for gcloud: the default one (the interception proxy: gcloud keeps Google's URLs) and
``keyless env --gcloud-overrides`` (gcloud's own endpoint properties name keyless's API URL, no proxy). Both
export ``CLOUDSDK_CONFIG``: keyless's own gcloud configuration (``gcloud_config``), signed in as the owner.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import quote

from keyless.cli import gcloud_config
from keyless.cli.client import CliError, GlobalOptions
from keyless.private_files import write_private

LAST_ADC = "last-adc-path"
API_CERTIFICATE = "api"  # DATA_DIR/tls/api.pem and api-key.pem
API_HOSTS = ["127.0.0.1", "::1", "localhost"]
IAMCREDENTIALS = "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts"


def proxy_url(endpoints: dict[str, str]) -> str:
    """The proxy's URL, with the password of a proxy listening off loopback (Basic proxy authentication)."""
    url = endpoints["proxy"]
    password_file = endpoints.get("proxyPasswordFile")
    if not password_file:
        return url
    try:
        password = Path(password_file).read_text().strip()
    except OSError:
        raise CliError(f"Cannot read the proxy's password file {password_file}.") from None
    return url.replace("http://", f"http://keyless:{quote(password, safe='')}@", 1)


# The gcloud APIs keyless serves, by the name of gcloud's ``api_endpoint_overrides/NAME`` property (``services``
# and ``org-policies`` reach serviceusage and orgpolicy; ``resource-manager org-policies`` cloudresourcemanager).
GCLOUD_APIS = ("iam", "iamcredentials", "cloudresourcemanager", "serviceusage", "orgpolicy")
GCLOUD_OVERRIDES = tuple(f"CLOUDSDK_API_ENDPOINT_OVERRIDES_{api.upper()}" for api in GCLOUD_APIS)

# Every variable ``keyless env`` may set: what ``keyless env --unset`` clears.
VARIABLES = ("KEYLESS_URL", "KEYLESS_DATA_DIR", "KEYLESS_GRPC_ENDPOINT", "HTTPS_PROXY", "https_proxy", "NO_PROXY",
             "no_proxy", "grpc_proxy", "no_grpc_proxy",
             "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS",
             "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH", "HTTPLIB2_CA_CERTS", "GCE_METADATA_HOST", "GCE_METADATA_IP",
             "GCE_METADATA_ROOT",
             "GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CORE_PROJECT",
             "CLOUDSDK_CONFIG", "BOTO_CONFIG", "CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE", *GCLOUD_OVERRIDES,
             "CLOUDSDK_AUTH_TOKEN_HOST", "CLOUDSDK_AUTH_AUTH_HOST")


def _gcloud(endpoints: dict[str, Any], *, ca_bundle: str | None) -> dict[str, str]:
    """Create or refresh DATA_DIR/gcloud: ``CLOUDSDK_CONFIG`` and gsutil's ``BOTO_CONFIG`` name it."""
    data_dir = Path(endpoints["dataDir"])
    try:
        root = gcloud_config.prepare(data_dir, project=endpoints.get("project"), ca_bundle=ca_bundle)
    except (OSError, sqlite3.Error) as exc:
        raise CliError(f"Cannot write keyless's gcloud configuration {gcloud_config.config_dir(data_dir)}: "
                       f"{exc}.") from None
    return {"CLOUDSDK_CONFIG": str(root), "BOTO_CONFIG": str(gcloud_config.boto_config(data_dir))}


def gcloud_overrides(options: GlobalOptions) -> dict[str, str]:
    """``keyless env --gcloud-overrides``: gcloud reaches keyless's API URL itself, through no proxy.

    Over plain HTTP every flow works but the OAuth ones: gcloud's OAuth library (oauthlib) refuses a
    non-HTTPS authorization or token endpoint for ``gcloud auth login``, and gsutil reaches IAM Credentials
    over HTTPS only. With the API served over HTTPS (``keyless serve --tls-cert``, e.g. a certificate from
    ``keyless certificate``), gcloud and gsutil trust it through ``CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE``."""
    endpoints = options.running_endpoints()
    api = str(endpoints["api"]).rstrip("/")
    data_dir = Path(endpoints["dataDir"])
    tls = api.startswith("https://")
    # The server's bundle: the machine's roots and keyless's CA (which issued the API's certificate, if any).
    ca_bundle = endpoints.get("caBundle") if tls else None
    out: dict[str, str] = {"KEYLESS_URL": endpoints["api"], "KEYLESS_DATA_DIR": endpoints["dataDir"],
                           **_gcloud(endpoints, ca_bundle=ca_bundle)}
    try:
        out["BOTO_CONFIG"] = str(gcloud_config.write_override_boto(data_dir, api, ca_bundle=ca_bundle))
    except OSError as exc:
        raise CliError(f"Cannot write gsutil's configuration in {gcloud_config.config_dir(data_dir)}: "
                       f"{exc}.") from None
    out.update({name: f"{api}/" for name in GCLOUD_OVERRIDES})  # gcloud wants the trailing slash
    out["CLOUDSDK_AUTH_TOKEN_HOST"] = f"{api}/token"
    # gcloud auth login's authorization URL (auth/auth_host): keyless's sign-in page.
    out["CLOUDSDK_AUTH_AUTH_HOST"] = f"{api}/o/oauth2/auth"
    if ca_bundle:
        out["CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE"] = ca_bundle
        # gcloud's sign-in redeems the code with verify=None (googlecloudsdk/core/credentials/flow.py), and
        # requests then prefers REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE, when the shell has one, to gcloud's CA.
        out["REQUESTS_CA_BUNDLE"] = ca_bundle
    project = endpoints.get("project")
    if project:
        out["GOOGLE_CLOUD_PROJECT"] = project
        out["CLOUDSDK_CORE_PROJECT"] = project
    return out


def environment(options: GlobalOptions) -> dict[str, str]:
    endpoints = options.running_endpoints()
    # The CLI then finds this server from any directory of the shell.
    out: dict[str, str] = {"KEYLESS_URL": endpoints["api"], "KEYLESS_DATA_DIR": endpoints["dataDir"]}
    if "grpc" in endpoints:
        # host:port of the gRPC listener, for client_options={"api_endpoint": ...} (no Google variable names it).
        out["KEYLESS_GRPC_ENDPOINT"] = endpoints["grpc"]
    # gcloud (and google-auth's ADC lookup) use keyless's configuration, never the user's ~/.config/gcloud.
    out.update(_gcloud(endpoints, ca_bundle=endpoints.get("caBundle") if "proxy" in endpoints else None))
    if "proxy" in endpoints:
        proxy = proxy_url(endpoints)
        out["HTTPS_PROXY"] = proxy
        out["https_proxy"] = proxy
        no_proxy = "127.0.0.1,localhost,::1"
        out["NO_PROXY"] = no_proxy
        out["no_proxy"] = no_proxy
        # gRPC (grpc core, grpc-js) reads these before https_proxy and no_proxy: one left in the shell would
        # otherwise send gRPC clients elsewhere. (Basic proxy authentication in the URL is honoured by both.)
        out["grpc_proxy"] = proxy
        out["no_grpc_proxy"] = no_proxy
        bundle = endpoints["caBundle"]
        out["REQUESTS_CA_BUNDLE"] = bundle
        out["SSL_CERT_FILE"] = bundle
        out["CURL_CA_BUNDLE"] = bundle
        out["NODE_EXTRA_CA_CERTS"] = endpoints["caCert"]
        # The roots of grpc core (Python, C++, Ruby, PHP, C#) and grpc-js: the proxy's certificates for gRPC clients.
        out["GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"] = bundle
        # google-api-python-client talks through httplib2, which trusts only this (and needs PySocks to proxy).
        out["HTTPLIB2_CA_CERTS"] = bundle
        # gcloud's own property (also in CLOUDSDK_CONFIG); this variable outranks one the user's shell exports,
        # and gcloud hands it to gsutil, which trusts nothing else.
        out["CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE"] = bundle
    if "metadata" in endpoints:
        host = endpoints["metadata"].removeprefix("http://")
        out["GCE_METADATA_HOST"] = host
        out["GCE_METADATA_IP"] = host
        out["GCE_METADATA_ROOT"] = host  # gcloud's name for it (and google-auth's older one)
    last = options.resolved_data_dir() / LAST_ADC
    if last.exists():
        adc = last.read_text().strip()
        if adc and Path(adc).exists():
            out["GOOGLE_APPLICATION_CREDENTIALS"] = adc
    project = endpoints.get("project")
    if project:
        out["GOOGLE_CLOUD_PROJECT"] = project
        out["CLOUDSDK_CORE_PROJECT"] = project
    return out


def render_unset(shell: str) -> str:
    """What undoes ``keyless env`` in this shell."""
    if shell == "sh":
        return f"unset {' '.join(VARIABLES)}\n"
    if shell == "fish":
        return "".join(f"set -e {name}\n" for name in VARIABLES)
    if shell == "powershell":
        return "".join(f"Remove-Item Env:{name} -ErrorAction SilentlyContinue\n" for name in VARIABLES)
    raise CliError(f"--unset works for sh, fish and powershell, not {shell!r}.", exit_code=2)


def _quote_sh(value: str) -> str:
    return "'" + value.replace("'", "'\"'\"'") + "'"


def render(variables: dict[str, str], shell: str) -> str:
    lines = []
    for name, value in variables.items():
        if shell == "sh":
            lines.append(f"export {name}={_quote_sh(value)}")
        elif shell == "fish":
            lines.append(f"set -gx {name} " + "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'")
        elif shell == "powershell":
            lines.append(f"$Env:{name} = '" + value.replace("'", "''") + "'")
        elif shell == "dotenv":
            lines.append(f"{name}={value}")
        else:
            raise CliError(f"Unknown --shell {shell!r}: use sh, fish, powershell or dotenv.", exit_code=2)
    return "\n".join(lines) + "\n"


def issue_api_certificate(options: GlobalOptions, hosts: list[str]) -> tuple[Path, Path]:
    """``keyless certificate``: a certificate for the API from the data dir's local CA (the one the proxy's
    certificates come from, which ``DATA_DIR/ca-bundle.pem`` trusts), for ``keyless serve --tls-cert``."""
    from keyless.crypto.ca import LocalCA  # cryptography: only this command needs it

    data_dir = options.resolved_data_dir()
    try:
        if not data_dir.exists():
            data_dir.mkdir(mode=0o700, parents=True)  # as keyless serve makes it
        ca = LocalCA(data_dir / "tls")
        ca.ensure()
        return ca.issue(API_CERTIFICATE, hosts or API_HOSTS)
    except (OSError, ValueError) as exc:
        raise CliError(f"Cannot issue the API's certificate in {data_dir / 'tls'}: {exc}.") from None


def write_impersonated_adc(options: GlobalOptions, email: str, delegates: list[str], output: Path | None) -> Path:
    """What ``gcloud auth application-default login --impersonate-service-account`` writes."""
    source_path = options.credential_path()
    try:
        source = json.loads(source_path.read_text())
    except (OSError, ValueError):
        raise CliError(f"Cannot read the active credential {source_path}.") from None
    data_dir = options.resolved_data_dir()
    path = output or data_dir / "application_default_credentials.json"
    adc = {
        "type": "impersonated_service_account",
        "service_account_impersonation_url": f"{IAMCREDENTIALS}/{email}:generateAccessToken",
        "source_credentials": source,
        "delegates": [d if d.startswith("projects/") else f"projects/-/serviceAccounts/{d}" for d in delegates],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, json.dumps(adc, indent=2) + "\n")
    if data_dir.exists():
        (data_dir / LAST_ADC).write_text(str(path.resolve()) + "\n")
    return path.resolve()
