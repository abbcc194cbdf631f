"""``keyless env`` and ``keyless adc``: the variables and files that point unchanged clients at keyless."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

from keyless.cli.client import CliError, GlobalOptions
from keyless.private_files import write_private

LAST_ADC = "last-adc-path"
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


# Every variable ``keyless env`` may set: what ``keyless env --unset`` clears.
VARIABLES = ("KEYLESS_URL", "KEYLESS_DATA_DIR", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy",
             "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS",
             "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH", "HTTPLIB2_CA_CERTS", "GCE_METADATA_HOST", "GCE_METADATA_IP",
             "GCE_METADATA_ROOT",
             "GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CORE_PROJECT")


def environment(options: GlobalOptions) -> dict[str, str]:
    endpoints = options.running_endpoints()
    # The CLI then finds this server from any directory of the shell.
    out: dict[str, str] = {"KEYLESS_URL": endpoints["api"], "KEYLESS_DATA_DIR": endpoints["dataDir"]}
    if "proxy" in endpoints:
        proxy = proxy_url(endpoints)
        out["HTTPS_PROXY"] = proxy
        out["https_proxy"] = proxy
        no_proxy = "127.0.0.1,localhost,::1"
        out["NO_PROXY"] = no_proxy
        out["no_proxy"] = no_proxy
        bundle = endpoints["caBundle"]
        out["REQUESTS_CA_BUNDLE"] = bundle
        out["SSL_CERT_FILE"] = bundle
        out["CURL_CA_BUNDLE"] = bundle
        out["NODE_EXTRA_CA_CERTS"] = endpoints["caCert"]
        out["GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"] = bundle
        # google-api-python-client talks through httplib2, which trusts only this (and needs PySocks to proxy).
        out["HTTPLIB2_CA_CERTS"] = bundle
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
