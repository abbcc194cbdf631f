"""How every CLI command finds its server and authenticates: endpoints.json, the active credential, impersonation.

The active credential is ``owner.json`` in the data dir unless ``--credential-file`` names another file: an
``authorized_user`` file (refresh-token grant) or a ``service_account`` key file (JWT-bearer grant).
``--impersonate-service-account=[DELEGATE,...,]TARGET`` then exchanges it for TARGET's access token through
``generateAccessToken`` with the delegates in order, as gcloud does: the last entry is the target.

This module is on the path of ``keyless auth print-access-token``: it imports the standard library only
(PyJWT is imported when a key file has to sign an assertion).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keyless.datadir import ENDPOINTS, find_data_dir, read_endpoints

CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
SCOPE_PREFIX = "https://www.googleapis.com/auth/"
_DURATION_PART = re.compile(r"([0-9]{1,12}(?:\.[0-9]{1,9})?)([smhd])")  # ASCII digits: "\d" also takes "٣"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
GLOBAL_FLAGS = {"--url": "url", "--data-dir": "data_dir", "--credential-file": "credential_file",
                "--impersonate-service-account": "impersonate", "--format": "format", "--flatten": "flatten"}
GLOBAL_SWITCHES = {"--quiet": "quiet", "-q": "quiet"}
PATH_FLAGS = ("data_dir", "credential_file")
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
IMPERSONATION_WARNING = ("WARNING: This command is using service account impersonation. All API calls will be "
                         "executed as [{}].")


class CliError(Exception):
    """A failure the CLI reports on stderr with a non-zero exit code (1: the call failed; 2: bad usage)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class ApiError(CliError):
    """The server answered with an error; ``status`` is the canonical code (``PERMISSION_DENIED``...)."""

    def __init__(self, message: str, http_status: int, status: str) -> None:
        super().__init__(message, exit_code=1)
        self.http_status = http_status
        self.status = status


@dataclass
class GlobalOptions:
    url: str | None = None
    data_dir: Path | None = None
    credential_file: Path | None = None
    impersonate: str | None = None
    format: str | None = None
    flatten: list[str] = field(default_factory=list)
    quiet: bool = False

    def resolved_data_dir(self) -> Path:
        if self.data_dir is not None:
            return self.data_dir
        env = os.environ.get("KEYLESS_DATA_DIR")
        return Path(env) if env else find_data_dir()

    def endpoints(self) -> dict[str, Any]:
        return read_endpoints(self.resolved_data_dir()) or {}

    def running_endpoints(self) -> dict[str, Any]:
        """The running server's endpoints.json, or a CliError saying why there is none."""
        data_dir = self.resolved_data_dir()
        endpoints = read_endpoints(data_dir)
        if endpoints is None:
            why = ("its server is no longer running" if (data_dir / ENDPOINTS).exists()
                   else f"{data_dir / ENDPOINTS} is missing")
            raise CliError(f"No running keyless server found for the data dir {data_dir} ({why}). Start one with "
                           "`keyless serve`, or pass --url / set KEYLESS_URL.")
        return endpoints

    def server_url(self) -> str:
        url = self.url or os.environ.get("KEYLESS_URL")
        if url:
            return url.rstrip("/")
        return str(self.running_endpoints().get("api", "")).rstrip("/")

    def credential_path(self) -> Path:
        return self.credential_file or self.resolved_data_dir() / "owner.json"

    def default_project(self) -> str:
        """What ``--project`` defaults to: $CLOUDSDK_CORE_PROJECT, then the running server's default project."""
        env = os.environ.get("CLOUDSDK_CORE_PROJECT")
        if env:
            return env
        return str(self.endpoints().get("project") or "keyless-dev")


def extract_global_options(argv: list[str]) -> tuple[GlobalOptions, list[str]]:
    """Pull the global options out of argv wherever they stand, so each command accepts them."""
    found = GlobalOptions()
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest.extend(argv[i:])
            break
        name, eq, value = arg.partition("=")
        if name in GLOBAL_SWITCHES and not eq:
            setattr(found, GLOBAL_SWITCHES[name], True)
            i += 1
            continue
        if name in GLOBAL_FLAGS:
            if not eq:
                if i + 1 >= len(argv):
                    raise CliError(f"{name} needs a value", exit_code=2)
                value = argv[i + 1]
                i += 1
            attr = GLOBAL_FLAGS[name]
            if attr == "flatten":
                found.flatten.extend(v.strip() for v in value.split(",") if v.strip())
            else:
                setattr(found, attr, Path(value) if attr in PATH_FLAGS else value)
            i += 1
            continue
        rest.append(arg)
        i += 1
    return found, rest


def parse_duration(text: str, flag: str = "--duration") -> int:
    """gcloud durations: ``90``, ``90s``, ``10m``, ``1h30m``, ``2d``; ISO 8601 ``PT1H`` too. Whole seconds."""
    raw = text.strip()
    value = raw.lower().removeprefix("pt").removeprefix("p")
    if re.fullmatch(r"[0-9]{1,12}", value):
        return int(value)
    if value and _DURATION_PART.sub("", value) == "":
        return int(sum(float(n) * _UNITS[u] for n, u in _DURATION_PART.findall(value)))
    raise CliError(f"{flag}: invalid duration '{raw}': use seconds or a duration such as 90s, 10m, 2h, 1d.",
                   exit_code=2)


def expand_scopes(text: str | None) -> list[str] | None:
    """``--scopes a,b``: full URLs, or names under https://www.googleapis.com/auth/."""
    if not text:
        return None
    return [s if "://" in s else SCOPE_PREFIX + s for s in (p.strip() for p in text.split(",")) if s]


def print_access_token(lifetime: str | None, scopes: str | None) -> None:
    """``keyless auth print-access-token``: the token, and only the token, on stdout."""
    session = Session()
    if session.target is None:
        if lifetime is not None:
            raise CliError("--lifetime can only be used with --impersonate-service-account.", exit_code=2)
        token = session.source_token(expand_scopes(scopes))
    else:
        seconds = parse_duration(lifetime, "--lifetime") if lifetime is not None else None
        token = str(session.impersonated_token(expand_scopes(scopes), seconds)["accessToken"])
    sys.stdout.write(token + "\n")


# The options of this invocation, set once by ``main`` before a command runs.
_current = GlobalOptions()


def use_options(options: GlobalOptions) -> None:
    global _current
    _current = options


def options() -> GlobalOptions:
    return _current


@dataclass
class HttpResult:
    status: int
    body: Any


def request(method: str, url: str, *, json_body: Any = None, form: dict[str, str] | None = None,
            token: str | None = None) -> HttpResult:
    headers = {"User-Agent": "keyless-cli"}
    data = None
    if json_body is not None:
        data = json.dumps(json_body).encode()
        headers["Content-Type"] = "application/json"
    elif form is not None:
        data = urllib.parse.urlencode(form).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310 (URL is ours)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as err:
        raw = err.read()
        status = err.code
    except urllib.error.URLError as err:
        raise CliError(f"Cannot reach keyless at {url}: {err.reason}") from None
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        body = raw.decode(errors="replace")
    return HttpResult(status, body)


def error_status(result: HttpResult) -> str:
    body = result.body
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            return str(err.get("status", result.status))
        if isinstance(err, str):
            return err
    return str(result.status)


def error_message(result: HttpResult) -> str:
    """gcloud's rendering of an API error: ``STATUS: message``."""
    body = result.body
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            return f"{err.get('status', result.status)}: {err.get('message', '')}"
        if isinstance(err, str):
            return f"{err}: {body.get('error_description', '')}"
    return f"HTTP {result.status}: {body}"


def api_error(result: HttpResult, prefix: str = "") -> ApiError:
    return ApiError(prefix + error_message(result), result.status, error_status(result))


def split_chain(value: str) -> tuple[str, list[str]]:
    """``A,B,C`` → target ``C``, delegates ``[A, B]`` (gcloud's ParseImpersonationAccounts)."""
    ids = [part.strip() for part in value.split(",") if part.strip()]
    if not ids:
        raise CliError("--impersonate-service-account needs at least one service account.", exit_code=2)
    return ids[-1], ids[:-1]


def delegate_names(delegates: list[str]) -> list[str]:
    return [d if d.startswith("projects/") else f"projects/-/serviceAccounts/{d}" for d in delegates]


def account_path(account: str) -> str:
    """The IAM Credentials resource of an account (email or unique id)."""
    return f"/v1/projects/-/serviceAccounts/{urllib.parse.quote(account, safe='@')}"


class Session:
    """An authenticated connection to one keyless server, as the active credential or an impersonated one."""

    def __init__(self, opts: GlobalOptions | None = None, *, impersonate: str | None = None,
                 use_global_impersonation: bool = True) -> None:
        self.options = opts or options()
        self.base = self.options.server_url()
        chain = impersonate or (self.options.impersonate if use_global_impersonation else None)
        self.target: str | None = None
        self.delegates: list[str] = []
        if chain:
            self.target, self.delegates = split_chain(chain)
        # Cached tokens with the monotonic time they should be renewed at (a long pytest session outlives them).
        self._source_tokens: dict[tuple[str, ...], tuple[str, float]] = {}
        self._token: tuple[str, float] | None = None
        self._warned = False

    # ---------------------------------------------------------------- the active credential

    def _credential_info(self) -> tuple[Path, dict[str, Any]]:
        path = self.options.credential_path()
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError):
            raise CliError(f"Cannot read credentials from {path}.") from None
        if not isinstance(info, dict):
            raise CliError(f"{path} is not a credentials file.")
        return path, info

    def source_token(self, scopes: list[str] | None = None) -> str:
        """An access token of the active credential itself (no impersonation)."""
        key = tuple(scopes or ())
        cached = self._source_tokens.get(key)
        if cached is None or time.monotonic() >= cached[1]:
            path, info = self._credential_info()
            kind = info.get("type")
            if kind == "authorized_user":
                form = {"grant_type": "refresh_token", "client_id": info.get("client_id", ""),
                        "client_secret": info.get("client_secret", ""),
                        "refresh_token": info.get("refresh_token", "")}
                if scopes:
                    form["scope"] = " ".join(scopes)
            elif kind == "service_account":
                form = {"grant_type": JWT_BEARER,
                        "assertion": self._assertion(info, {"scope": " ".join(scopes or [CLOUD_PLATFORM])})}
            else:
                raise CliError(f"{path} is neither an authorized_user nor a service_account credentials file.")
            result = request("POST", f"{self.base}/token", form=form)
            if result.status != 200:
                raise api_error(result, "There was a problem refreshing your current auth tokens: ")
            renew_at = time.monotonic() + float(result.body.get("expires_in", 3600)) - 60
            self._source_tokens[key] = (str(result.body["access_token"]), renew_at)
        return self._source_tokens[key][0]

    def source_id_token(self, audience: str) -> str:
        """An ID token of the active credential itself: only a service-account key file can have one."""
        path, info = self._credential_info()
        if info.get("type") != "service_account":
            raise CliError(f"No identity token can be obtained from the credentials in {path}: a user cannot "
                           "mint ID tokens for an audience. Use --impersonate-service-account, or a service "
                           "account key file as --credential-file.")
        result = request("POST", f"{self.base}/token", form={
            "grant_type": JWT_BEARER, "assertion": self._assertion(info, {"target_audience": audience})})
        if result.status != 200:
            raise api_error(result)
        return str(result.body["id_token"])

    @staticmethod
    def _assertion(info: dict[str, Any], extra: dict[str, Any]) -> str:
        import jwt  # only key files need it; the owner's path stays light

        now = int(time.time())
        claims = {"iss": info.get("client_email"), "aud": GOOGLE_TOKEN_AUDIENCE, "iat": now, "exp": now + 3600,
                  **extra}
        try:
            return jwt.encode(claims, info.get("private_key", ""), algorithm="RS256",
                              headers={"kid": info.get("private_key_id", "")})
        except (ValueError, TypeError, jwt.PyJWTError) as err:
            raise CliError(f"Cannot sign with the key file: {err}") from None

    # ---------------------------------------------------------------- impersonation

    def warn_impersonation(self) -> None:
        if self.target and not self._warned:
            print(IMPERSONATION_WARNING.format(self.target), file=sys.stderr, flush=True)
            self._warned = True

    def _impersonation_failed(self, result: HttpResult) -> ApiError:
        if result.status == 403:
            return ApiError(f"Failed to impersonate [{self.target}]. Make sure the account that's trying to "
                            "impersonate it has access to the service account itself and the "
                            f"\"roles/iam.serviceAccountTokenCreator\" role. ({error_message(result)})",
                            result.status, error_status(result))
        return api_error(result)

    def credentials_call(self, verb: str, body: dict[str, Any]) -> dict[str, Any]:
        """An IAM Credentials RPC on the impersonation target, with the delegates, as the active credential."""
        assert self.target is not None
        self.warn_impersonation()
        payload = dict(body)
        if self.delegates:
            payload["delegates"] = delegate_names(self.delegates)
        result = request("POST", f"{self.base}{account_path(self.target)}:{verb}", json_body=payload,
                         token=self.source_token())
        if result.status != 200:
            raise self._impersonation_failed(result)
        data: dict[str, Any] = result.body
        return data

    def impersonated_token(self, scopes: list[str] | None = None, lifetime: int | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"scope": scopes or [CLOUD_PLATFORM]}
        if lifetime is not None:
            body["lifetime"] = f"{lifetime}s"
        return self.credentials_call("generateAccessToken", body)

    def access_token(self) -> str:
        """The bearer token API calls carry: the impersonated account's when impersonating."""
        if self._token is None or time.monotonic() >= self._token[1]:
            if self.target:
                self._token = (str(self.impersonated_token()["accessToken"]), time.monotonic() + 3000)
            else:
                self._token = (self.source_token(), time.monotonic() + 3000)
        return self._token[0]

    def forget_tokens(self) -> None:
        self._source_tokens.clear()
        self._token = None

    # ---------------------------------------------------------------- calls

    def raw(self, method: str, path: str, body: Any = None) -> HttpResult:
        result = request(method, f"{self.base}{path}", json_body=body, token=self.access_token())
        if result.status == 401:
            # The server's clock may have moved past the token's expiry (time travel): mint a new one, once.
            self.forget_tokens()
            result = request(method, f"{self.base}{path}", json_body=body, token=self.access_token())
        return result

    def call(self, method: str, path: str, body: Any = None) -> Any:
        result = self.raw(method, path, body)
        if result.status >= 400:
            raise api_error(result)
        return result.body
