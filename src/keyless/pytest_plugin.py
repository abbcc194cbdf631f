"""pytest plugin (entry point ``pytest11: keyless``): a real keyless server for the tests of code that uses
Google credentials.

Fixtures:

* ``keyless``: the session's server (started on first use: a free loopback port, a throwaway data dir,
  ``--allow-time-travel``), seen through a project of the test's own, created for it. Helpers make service
  accounts, grant roles, write caller credential files, apply seeds, and set the ``keyless env`` variables in
  ``os.environ`` (``with keyless.env(credentials=...)``) so unchanged code under test talks to keyless.
* ``keyless_isolated``: the same helpers on a server of the test's own, whose clock the test may advance.
* ``keyless_server``: the session's server itself.

Configuration: the ini option ``keyless_seed`` (a seed file applied when the session's server starts, relative
to the rootdir), ``keyless_serve_args`` (more ``keyless serve`` arguments), and the marker
``@pytest.mark.keyless_seed("seed.yaml")`` (applied to the test's project; relative to the test file; ``$project``
in it is the test's project id). See docs/pytest-plugin.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from keyless.cli.client import ApiError, GlobalOptions, Session, request
from keyless.private_files import write_private

TOKEN_CREATOR = "roles/iam.serviceAccountTokenCreator"
STARTUP_TIMEOUT = 60.0


@dataclass
class KeylessServer:
    """A ``keyless serve`` subprocess and its owner's session."""

    url: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    users: dict[str, Path] = field(default_factory=dict)
    _session: Session | None = field(default=None, repr=False)

    @property
    def options(self) -> GlobalOptions:
        return GlobalOptions(url=self.url, data_dir=self.data_dir)

    @property
    def owner(self) -> Session:
        if self._session is None:
            self._session = Session(self.options, use_global_impersonation=False)
        return self._session

    @property
    def owner_file(self) -> Path:
        return self.data_dir / "owner.json"

    def endpoints(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.data_dir / "endpoints.json").read_text())
        return data

    def stop(self) -> None:
        stop_process(self.process)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM a server (it removes its endpoints.json on the way out), SIGKILL if it takes over 15 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start_server(data_dir: Path, *args: str) -> KeylessServer:
    """Start ``keyless serve --port 0 --allow-time-travel`` and wait for its endpoints.json."""
    data_dir.mkdir(parents=True, exist_ok=True)
    endpoints = data_dir / "endpoints.json"
    log_path = data_dir / "server.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen([sys.executable, "-m", "keyless", "serve", "--port", "0", "--allow-time-travel",
                                    "--data-dir", str(data_dir), *args], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not endpoints.exists():
        if process.poll() is not None:
            raise RuntimeError(f"keyless serve exited early:\n{log_path.read_text()}")
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"keyless serve did not start within {STARTUP_TIMEOUT:.0f}s:\n{log_path.read_text()}")
        time.sleep(0.02)
    url = json.loads(endpoints.read_text())["api"]
    return KeylessServer(url=url, data_dir=data_dir, process=process)


class Keyless:
    """What the ``keyless`` fixture gives a test: a project of its own on a running server, and helpers."""

    def __init__(self, server: KeylessServer, project: str, workdir: Path, *, shared: bool) -> None:
        self.server = server
        self.project = project
        self.workdir = workdir
        self.shared = shared
        self._counter = 0

    # ---------------------------------------------------------------- basics

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def data_dir(self) -> Path:
        return self.server.data_dir

    @property
    def credentials_dir(self) -> Path:
        """Where this test's seeds and helpers write credential files."""
        return self.workdir / "credentials"

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """An HTTP call as the server's owner; raises ``ApiError`` (with ``.status``) on an error answer."""
        return self.server.owner.call(method, path, body)

    def cli(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run the ``keyless`` command against this server and project (as the owner unless told otherwise)."""
        env = {**os.environ, "KEYLESS_DATA_DIR": str(self.data_dir), "KEYLESS_URL": self.url,
               "CLOUDSDK_CORE_PROJECT": self.project}
        proc = subprocess.run([sys.executable, "-m", "keyless", *args], capture_output=True, text=True, env=env,
                              input=input, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"keyless {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
        return proc

    def _name(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}-{self._counter}"

    # ---------------------------------------------------------------- principals

    def service_account(self, account_id: str | None = None, *, display_name: str | None = None) -> str:
        """Create a service account in the test's project; returns its email."""
        account_id = account_id or self._name("sa-account")
        spec = {"displayName": display_name} if display_name else {}
        created = self.call("POST", f"/v1/projects/{self.project}/serviceAccounts",
                            {"accountId": account_id, "serviceAccount": spec})
        return str(created["email"])

    def user(self, email: str | None = None) -> Path:
        """Register a user (once per session) and return its ``authorized_user`` credentials file."""
        email = (email or f"{self._name('user')}@{self.project}.test").lower()
        if email not in self.server.users:
            created = self.call("POST", "/keyless/v1/users", {"email": email})
            self.server.users[email] = _write_json(self.server.data_dir / "test-users" / f"{email}.json",
                                                   created["credentials"])
        return self.server.users[email]

    def key_file(self, email: str) -> Path:
        """Create a key for a service account and return its ``service_account`` key file."""
        import base64

        created = self.call("POST", f"/v1/projects/-/serviceAccounts/{email}/keys", {})
        path = self.credentials_dir / f"{email}-{str(created['name'])[-8:]}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_private(path, base64.b64decode(created["privateKeyData"]))
        return path

    def credential_file(self, principal: str) -> Path:
        """A credentials file for ``user:EMAIL``, ``serviceAccount:EMAIL`` or a bare email."""
        kind, _, email = principal.rpartition(":")
        if kind == "serviceAccount" or (not kind and email.endswith(".gserviceaccount.com")):
            return self.key_file(email)
        return self.user(email)

    # ---------------------------------------------------------------- policies

    def grant(self, resource: str, member: str, role: str = TOKEN_CREATOR,
              condition: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Add ``member`` to ``role`` on a service account (by email) or a project (``projects/ID``)."""
        from keyless.cli.policy import add_binding, modify

        if resource.startswith("projects/"):
            path = f"/v1/{resource}"
        else:
            path = f"/v1/projects/-/serviceAccounts/{urllib.parse.quote(resource, safe='@')}"
        return modify(self.server.owner, path,
                      lambda policy: add_binding(policy, member, role, dict(condition) if condition else None))

    def allow_long_lived_tokens(self, *emails: str) -> None:
        """List accounts in the project's lifetime-extension constraint (tokens up to 12 hours)."""
        self.call("PATCH", f"/v2/projects/{self.project}/policies/iam.allowServiceAccountCredentialLifetimeExtension",
                  {"spec": {"rules": [{"values": {"allowedValues": list(emails)}}]}})

    def attach(self, email: str) -> None:
        """Make the metadata server serve ``email`` (server-wide)."""
        self.call("PUT", "/keyless/v1/metadata", {"serviceAccount": email})

    def apply(self, seed: Path | str, **variables: str) -> None:
        """Apply a seed file; ``$project`` in it is this test's project unless ``variables`` say otherwise."""
        from keyless.cli.seed import apply_file

        apply_file(seed, self.server.options, credentials_dir=self.credentials_dir,
                   variables={"project": self.project, **variables}, quiet=True)

    # ---------------------------------------------------------------- time

    def advance_clock(self, duration: str | float) -> str:
        """Move the server's clock forward (``"2h"``, ``"90s"`` or seconds); returns the new server time."""
        if self.shared:
            raise RuntimeError("advance_clock moves the clock of the whole server, which would expire the "
                               "credentials of other tests: use the keyless_isolated fixture, a server of the "
                               "test's own.")
        from keyless.cli.client import parse_duration

        seconds = parse_duration(duration, "duration") if isinstance(duration, str) else duration
        return str(self.call("POST", "/keyless/v1/debug/clock:advance", {"seconds": seconds})["now"])

    # ---------------------------------------------------------------- tokens and checks

    def access_token(self, credential_file: Path, *, impersonate: str | None = None) -> str:
        """An access token for a credentials file (or, through it, for an impersonated account)."""
        session = Session(GlobalOptions(url=self.url, data_dir=self.data_dir, credential_file=credential_file),
                          impersonate=impersonate, use_global_impersonation=False)
        return session.access_token() if impersonate else session.source_token()

    def token_is_valid(self, token: str) -> bool:
        """Whether the server still accepts an access token (its tokeninfo endpoint)."""
        return request("POST", f"{self.url}/tokeninfo", form={"access_token": token}).status == 200

    def verify_signed_url(self, url: str, *, method: str = "GET", headers: Mapping[str, str] | None = None) -> str:
        """Check a Cloud Storage V4 signed URL against the signer's published keys; returns the signer."""
        from keyless.cli.storage import verify_signed_url

        params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
        signer = params.get("X-Goog-Credential", "").split("/", 1)[0]
        certs = request("GET", f"{self.url}/service_accounts/v1/metadata/x509/{urllib.parse.quote(signer)}")
        if certs.status != 200:
            raise ValueError(f"No published keys for {signer!r}.")
        return verify_signed_url(url, certs.body, method=method, headers=dict(headers or {}))

    # ---------------------------------------------------------------- environment

    def environment(self, credentials: Path | str | None = None) -> dict[str, str]:
        """The ``keyless env`` variables for this server, with the test's project and credentials."""
        from keyless.cli.environment import environment

        variables = environment(self.server.options)
        variables.pop("GOOGLE_APPLICATION_CREDENTIALS", None)
        gcloud_config = self.workdir / "gcloud-config"
        gcloud_config.mkdir(parents=True, exist_ok=True)
        variables.update({"KEYLESS_DATA_DIR": str(self.data_dir), "KEYLESS_URL": self.url,
                          "GOOGLE_CLOUD_PROJECT": self.project, "CLOUDSDK_CORE_PROJECT": self.project,
                          # No developer's gcloud ADC file: credentials come from here or the metadata server.
                          "CLOUDSDK_CONFIG": str(gcloud_config)})
        if credentials is not None:
            variables["GOOGLE_APPLICATION_CREDENTIALS"] = str(credentials)
        return variables

    @contextmanager
    def env(self, credentials: Path | str | None = None) -> Iterator[dict[str, str]]:
        """Set the variables of ``environment`` in ``os.environ`` for the block, then restore it.

        Without ``credentials``, GOOGLE_APPLICATION_CREDENTIALS is unset: Application Default Credentials come
        from the metadata server (see ``attach``).
        """
        variables = self.environment(credentials)
        unset = [] if credentials is not None else ["GOOGLE_APPLICATION_CREDENTIALS"]
        saved = {name: os.environ.get(name) for name in [*variables, *unset]}
        try:
            for name in unset:
                os.environ.pop(name, None)
            os.environ.update(variables)
            yield variables
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def _write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, json.dumps(data, indent=2))
    return path


def _project_for(server: KeylessServer, nodeid: str) -> str:
    base = "t-" + hashlib.sha1(nodeid.encode()).hexdigest()[:12]  # noqa: S324 (a name, not a secret)
    for attempt in range(100):
        project = base if attempt == 0 else f"{base}-{attempt}"
        try:
            server.owner.call("POST", "/keyless/v1/projects", {"projectId": project})
            return project
        except ApiError as err:
            if err.status != "ALREADY_EXISTS":
                raise
    raise RuntimeError(f"Cannot create a project for {nodeid}.")


def _serve_args(config: pytest.Config) -> list[str]:
    args = [str(a) for a in config.getini("keyless_serve_args")]
    seed = str(config.getini("keyless_seed") or "")
    if seed:
        args += ["--seed", str(config.rootpath / seed)]
    return args


def _fixture(request: pytest.FixtureRequest, server: KeylessServer, workdir: Path, *, shared: bool) -> Keyless:
    kl = Keyless(server, _project_for(server, request.node.nodeid), workdir, shared=shared)
    for marker in request.node.iter_markers("keyless_seed"):
        for seed in marker.args:
            path = Path(seed)
            kl.apply(path if path.is_absolute() else request.path.parent / path)
    return kl


# ---------------------------------------------------------------- pytest hooks and fixtures


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("keyless_seed", "Seed file applied when the session's keyless server starts (relative to the "
                  "rootdir).", default="")
    parser.addini("keyless_serve_args", "More `keyless serve` arguments for the session's server.", type="args",
                  default=[])


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "keyless_seed(*paths): seed files applied to the test's keyless project "
                                       "($project in them is its id); paths relative to the test file.")


@pytest.fixture(scope="session")
def keyless_server(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
                   ) -> Iterator[KeylessServer]:
    """The session's keyless server."""
    server = start_server(tmp_path_factory.mktemp("keyless") / "data", *_serve_args(pytestconfig))
    yield server
    server.stop()


@pytest.fixture
def keyless(request: pytest.FixtureRequest, keyless_server: KeylessServer, tmp_path: Path) -> Keyless:
    """The session's keyless server, through a project of this test's own."""
    return _fixture(request, keyless_server, tmp_path / "keyless", shared=True)


@pytest.fixture
def keyless_isolated(request: pytest.FixtureRequest, tmp_path: Path, pytestconfig: pytest.Config
                     ) -> Iterator[Keyless]:
    """A keyless server of this test's own (its clock may be advanced)."""
    server = start_server(tmp_path / "keyless-data", *_serve_args(pytestconfig))
    try:
        yield _fixture(request, server, tmp_path / "keyless", shared=False)
    finally:
        server.stop()
