"""How every CLI command finds its server and authenticates: endpoints.json, owner.json, a refresh grant."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class CliError(Exception):
    """A failure the CLI reports on stderr with a non-zero exit code."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class GlobalOptions:
    url: str | None = None
    data_dir: Path | None = None
    credential_file: Path | None = None

    def resolved_data_dir(self) -> Path:
        if self.data_dir is not None:
            return self.data_dir
        env = os.environ.get("KEYLESS_DATA_DIR")
        return Path(env) if env else Path(".keyless")

    def server_url(self) -> str:
        url = self.url or os.environ.get("KEYLESS_URL")
        if url:
            return url.rstrip("/")
        path = self.resolved_data_dir() / "endpoints.json"
        try:
            return str(json.loads(path.read_text())["api"]).rstrip("/")
        except (OSError, ValueError, KeyError):
            raise CliError(f"No running keyless server found ({path} is missing). Start one with `keyless serve`, "
                           "or pass --url / set KEYLESS_URL.") from None

    def credential_path(self) -> Path:
        return self.credential_file or self.resolved_data_dir() / "owner.json"


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


def error_message(result: HttpResult) -> str:
    body = result.body
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            return f"({err.get('status', result.status)}) {err.get('message', '')}"
        if isinstance(err, str):
            return f"{err}: {body.get('error_description', '')}"
    return f"HTTP {result.status}: {body}"


class Session:
    """An authenticated connection to one keyless server."""

    def __init__(self, options: GlobalOptions) -> None:
        self.options = options
        self.base = options.server_url()
        self._token: str | None = None

    def access_token(self) -> str:
        if self._token is None:
            path = self.options.credential_path()
            try:
                info = json.loads(path.read_text())
            except (OSError, ValueError):
                raise CliError(f"Cannot read credentials from {path}.") from None
            if info.get("type") != "authorized_user":
                raise CliError(f"{path} is not an authorized_user credentials file.")
            result = request("POST", f"{self.base}/token", form={
                "grant_type": "refresh_token", "client_id": info.get("client_id", ""),
                "client_secret": info.get("client_secret", ""), "refresh_token": info.get("refresh_token", "")})
            if result.status != 200:
                raise CliError(f"Authentication failed: {error_message(result)}")
            self._token = str(result.body["access_token"])
        return self._token

    def call(self, method: str, path: str, body: Any = None) -> Any:
        result = request(method, f"{self.base}{path}", json_body=body, token=self.access_token())
        if result.status >= 400:
            raise CliError(f"ERROR: {error_message(result)}")
        return result.body
