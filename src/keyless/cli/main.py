"""``keyless`` commands: the server, and gcloud-shaped verbs that talk to it over its HTTP API.

Global flags (GLOBAL_FLAGS, GLOBAL_SWITCHES) go before or after the verb, as gcloud's do; ``main`` takes them
out of argv before typer parses the rest. Errors print ``ERROR: (keyless.GROUP.COMMAND) message`` on stderr
and exit 1 (the call failed) or 2 (bad usage). Command modules import only the standard library, typer and
the client at start-up, so short commands such as ``keyless auth print-access-token`` start fast.
"""

from __future__ import annotations

import json
import sys
import urllib.parse
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.main

from keyless.cli import auth, debug, iam, metadata, orgpolicy, projects, seed, storage
from keyless.cli.args import confirm
from keyless.cli.client import CliError, GlobalOptions, Session, extract_global_options, use_options
from keyless.cli.help import grouped_command, plain_app, tidy
from keyless.private_files import write_private

GLOBAL_HELP = """Global flags, before or after the verb:

--url URL: the server (default: DATA_DIR/endpoints.json, or $KEYLESS_URL)

--data-dir DIR: the server's data dir (default: ./.keyless, or $KEYLESS_DATA_DIR)

--credential-file FILE: the active credential (default: DATA_DIR/owner.json)

--impersonate-service-account [DELEGATE,...,]SA: call as SA (the last entry)

--format json|yaml|table|value|csv|none[(KEY,...)]; --flatten KEY; --quiet"""

app = plain_app(help="keyless: Google Cloud service-account credentials, self-hosted.", no_args_is_help=True,
                  add_completion=False, epilog=GLOBAL_HELP)
users_app = plain_app(help="Human callers and their credentials files.", no_args_is_help=True)


def _print_version(value: bool) -> None:
    if value:
        from keyless import __version__

        typer.echo(f"keyless {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print keyless's version and exit.", is_eager=True,
                                          callback=_print_version)] = False,
) -> None:
    """keyless: Google Cloud service-account credentials, self-hosted."""
app.add_typer(users_app, name="users")
app.add_typer(auth.app, name="auth")
app.add_typer(iam.app, name="iam")
app.add_typer(projects.app, name="projects")
app.add_typer(storage.app, name="storage")
app.add_typer(orgpolicy.app, name="resource-manager")
app.add_typer(debug.app, name="debug")
app.add_typer(metadata.app, name="metadata")
app.command("apply")(seed.apply_command)
app.command("export")(seed.export_command)

_globals = GlobalOptions()

# The option groups of `keyless serve --help`, in order.
SERVE_GROUPS = {
    "Listening, broker and TLS": ("host", "port", "grpc_port", "database", "master_key_file", "issuer", "public_url",
                                  "key_rotation_days", "tls_cert", "tls_key", "insecure", "workers", "mtls_port"),
    "Emulator: proxy, metadata server, seeds, time travel": (
        "project", "proxy_port", "proxy_host", "metadata_port", "metadata_host", "attach", "seed_file",
        "universe_domain", "universe_port", "universe_cert", "universe_key", "allow_time_travel",
        "enforce_services"),
    "Limits: request sizes, rates, connections": (
        "max_body_bytes", "max_header_bytes", "max_path_bytes", "max_delegates", "max_scopes", "max_sign_blob_bytes",
        "max_sign_jwt_bytes", "rate_limit", "rate_limit_per_account", "header_timeout", "body_timeout",
        "keep_alive_timeout", "tunnel_idle_timeout", "max_connections"),
    "Audit and logs": ("audit_log", "audit_retention_days", "access_log", "log_level"),
}
SERVE_EPILOG = """Data dir: --data-dir DIR, before or after the verb (default: ./.keyless, or the nearest .keyless in a
parent directory). Environment: KEYLESS_DATA_DIR (the data dir), KEYLESS_MASTER_KEY_FILE (--master-key-file).
One server per data dir; it writes DATA_DIR/endpoints.json while it runs."""


@app.command(cls=grouped_command(SERVE_GROUPS), epilog=SERVE_EPILOG)
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="API port (0 picks a free one).", min=0, max=65535)] = 8093,
    grpc_port: Annotated[int | None, typer.Option(
        help="Also serve the IAM Credentials API over gRPC on this port, on --host (TLS with --tls-cert), by every "
             "process of --workers (default: off; 0 picks a free port).", min=0, max=65535, show_default=False)] = None,
    database: Annotated[str | None, typer.Option(help="Database URL (default: SQLite in the data dir).")] = None,
    project: Annotated[str, typer.Option(help="Default project id.")] = "keyless-dev",
    master_key_file: Annotated[Path | None, typer.Option(
        help="Master key file (default: DATA_DIR/master.key, or $KEYLESS_MASTER_KEY_FILE).")] = None,
    issuer: Annotated[str, typer.Option(help="iss of ID tokens.")] = "https://accounts.google.com",
    public_url: Annotated[str | None, typer.Option(help="URL clients use to reach this server.")] = None,
    key_rotation_days: Annotated[float, typer.Option(help="Rotate system-managed keys after this many days.")] = 14.0,
    allow_time_travel: Annotated[bool, typer.Option(help="Let the owner move the clock forward (tests only).")]
    = False,
    enforce_services: Annotated[bool, typer.Option(
        help="Refuse a call whose consumer project has not enabled the API it calls (403 SERVICE_DISABLED), "
             "as Google does.")] = False,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "warning",
    proxy_port: Annotated[int | None, typer.Option(
        help="Interception proxy port (default: API port + 1; 0 picks a free port; -1 turns it off).",
        min=-1, max=65535)] = None,
    metadata_port: Annotated[int | None, typer.Option(
        help="Metadata server port (default: API port + 2; 0 picks a free port; -1 turns it off).",
        min=-1, max=65535)] = None,
    metadata_host: Annotated[str, typer.Option(help="Metadata server address.")] = "127.0.0.1",
    proxy_host: Annotated[str, typer.Option(
        help="Interception proxy address, whatever --host is. Off loopback the proxy asks for the password in "
             "DATA_DIR/proxy.password and tunnels only to public addresses.")] = "127.0.0.1",
    attach: Annotated[str | None, typer.Option(help="Service account the metadata server serves.")] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="Serve the API over HTTPS with this certificate.")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="Private key of --tls-cert.")] = None,
    mtls_port: Annotated[int | None, typer.Option(
        help="HTTPS port that asks clients for a certificate: keyless's sts.mtls.googleapis.com, for X.509 "
             "workload identity providers (default: off; 0 picks a free port).", min=0, max=65535)] = None,
    insecure: Annotated[bool, typer.Option(help="Allow plain HTTP on a non-loopback address.")] = False,
    universe_domain: Annotated[list[str] | None, typer.Option(
        help="Also serve https://iamcredentials.DOMAIN etc. (repeatable).")] = None,
    universe_port: Annotated[int | None, typer.Option(
        help="HTTPS port for the universe domains (default: API port + 3; 0 picks a free port).",
        min=0, max=65535)] = None,
    universe_cert: Annotated[Path | None, typer.Option(help="Certificate for the universe domains "
                                                            "(default: issued by the local CA).")] = None,
    universe_key: Annotated[Path | None, typer.Option(help="Private key of --universe-cert.")] = None,
    audit_log: Annotated[str | None, typer.Option(
        help="Also write audit entries as JSON lines to this file ('-' for stdout).")] = None,
    audit_retention_days: Annotated[float | None, typer.Option(
        help="Delete audit entries older than this many days, checked every minute (0: keep every entry). "
             "Default: 30 on SQLite; with PostgreSQL, required.", min=0, show_default=False)] = None,
    seed_file: Annotated[Path | None, typer.Option(
        "--seed", help="Apply this seed file (as `keyless apply` does) once the server is up, before "
                       "endpoints.json announces it.")] = None,
    access_log: Annotated[bool, typer.Option(help="Log each request (query-string secrets redacted).")] = False,
    max_body_bytes: Annotated[int, typer.Option(help="Largest request body.")] = 1024 * 1024,
    max_header_bytes: Annotated[int, typer.Option(help="Largest total of request headers.")] = 16 * 1024,
    max_path_bytes: Annotated[int, typer.Option(help="Longest request path and query.")] = 4096,
    max_delegates: Annotated[int, typer.Option(help="Longest delegation chain.")] = 10,
    max_scopes: Annotated[int, typer.Option(help="Most scopes in one generateAccessToken.")] = 50,
    max_sign_blob_bytes: Annotated[int, typer.Option(help="Largest signBlob payload (decoded).")] = 512 * 1024,
    max_sign_jwt_bytes: Annotated[int, typer.Option(help="Largest signJwt payload.")] = 64 * 1024,
    workers: Annotated[int, typer.Option(
        help="API processes, each with its own SO_REUSEPORT socket (use one per core for a broker).")] = 1,
    rate_limit: Annotated[float, typer.Option(
        help="Requests per second per caller (0: off); on /token, also failed grants per client address.")] = 0.0,
    rate_limit_per_account: Annotated[float, typer.Option(
        help="Credential requests per second per target account (0: off).")] = 0.0,
    header_timeout: Annotated[float, typer.Option(
        help="Seconds a connection has to send a request's head (every listener).", min=0.1)] = 10.0,
    body_timeout: Annotated[float, typer.Option(
        help="Seconds a request has to send its body once its head is in.", min=0.1)] = 30.0,
    keep_alive_timeout: Annotated[float, typer.Option(
        help="Seconds an idle kept-alive connection stays open.", min=0.1)] = 5.0,
    tunnel_idle_timeout: Annotated[float, typer.Option(
        help="Seconds a proxy tunnel may carry nothing either way before it is closed.", min=0.1)] = 300.0,
    max_connections: Annotated[int, typer.Option(
        help="Open connections per listener; more are answered 503 and closed.", min=1)] = 1000,
) -> None:
    """Start the keyless server (SQLite under ./.keyless unless told otherwise)."""
    from keyless.server import ServeOptions, run
    from keyless.service.limits import Limits

    run(ServeOptions(data_dir=_globals.resolved_data_dir(), host=host, port=port, database=database,
                     project=project, master_key_file=master_key_file, issuer=issuer, public_url=public_url,
                     key_rotation_days=key_rotation_days, allow_time_travel=allow_time_travel,
                     enforce_services=enforce_services, log_level=log_level,
                     grpc_port=grpc_port, mtls_port=mtls_port, proxy_port=proxy_port, metadata_port=metadata_port,
                     metadata_host=metadata_host, proxy_host=proxy_host,
                     attach=attach, tls_cert=tls_cert, tls_key=tls_key, insecure=insecure,
                     universe_domains=tuple(universe_domain or ()), universe_port=universe_port,
                     universe_cert=universe_cert, universe_key=universe_key, audit_log=audit_log,
                     audit_retention_days=audit_retention_days,
                     seed=seed_file, access_log=access_log, workers=workers,
                     limits=Limits(max_body_bytes=max_body_bytes, max_header_bytes=max_header_bytes,
                                   max_path_bytes=max_path_bytes, max_delegates=max_delegates, max_scopes=max_scopes,
                                   max_sign_blob_bytes=max_sign_blob_bytes, max_sign_jwt_bytes=max_sign_jwt_bytes,
                                   rate_limit=rate_limit, rate_limit_per_account=rate_limit_per_account,
                                   header_timeout=header_timeout, body_timeout=body_timeout,
                                   keep_alive_timeout=keep_alive_timeout, tunnel_idle_timeout=tunnel_idle_timeout,
                                   max_connections=max_connections)))


@app.command()
def env(
    shell: Annotated[str, typer.Option(help="sh, fish, powershell or dotenv.")] = "sh",
    unset: Annotated[bool, typer.Option(help="Print what undoes it instead.")] = False,
    gcloud_overrides: Annotated[bool, typer.Option(
        help="Instead of the proxy, point gcloud at the API URL with its endpoint-override properties.")] = False,
) -> None:
    """Print the environment that makes unchanged Google clients use keyless: eval "$(keyless env)".

    It includes CLOUDSDK_CONFIG, keyless's own gcloud configuration (DATA_DIR/gcloud, signed in as the owner),
    so gcloud works at once and the user's own gcloud credentials are never read."""
    from keyless.cli import environment as environ

    if unset:
        typer.echo(environ.render_unset(shell), nl=False)
        return
    if gcloud_overrides:
        typer.echo(environ.render(environ.gcloud_overrides(_globals), shell), nl=False)
        return
    variables = environ.environment(_globals)
    typer.echo(environ.render(variables, shell), nl=False)
    if "GCE_METADATA_HOST" in variables and "GOOGLE_APPLICATION_CREDENTIALS" not in variables:
        attached = _attached_account()
        if attached == "":
            typer.echo("keyless env: no service account is attached to the metadata server, so "
                       "google.auth.default() will find no credentials there; attach one with "
                       "`keyless metadata attach EMAIL`.", err=True)


def _attached_account() -> str | None:
    """The metadata server's account ('' when none), or None when the server cannot say."""
    try:
        return str(Session(_globals).call("GET", "/keyless/v1/metadata").get("serviceAccount", ""))
    except CliError:
        return None


@app.command()
def status() -> None:
    """Say what the server of this data dir serves: its listeners, data dir, owner credential, attached account."""
    from keyless.datadir import describe

    endpoints = _globals.running_endpoints()
    typer.echo(describe(endpoints, _attached_account()))


@app.command()
def certificate(
    hosts: Annotated[list[str] | None, typer.Argument(
        metavar="HOST", help="Names and addresses it covers (default: 127.0.0.1, ::1 and localhost).",
        show_default=False)] = None,
) -> None:
    """Issue a TLS certificate for the API from keyless's local CA (DATA_DIR/tls) and print the serve flags
    that use it: keyless serve $(keyless certificate).

    Clients trust it through DATA_DIR/ca-bundle.pem; keyless env --gcloud-overrides then points gcloud at the
    HTTPS API, where gcloud auth login and gsutil -i work without the proxy."""
    from keyless.cli.environment import issue_api_certificate

    cert, key = issue_api_certificate(_globals, list(hosts or []))
    typer.echo(f"--tls-cert {cert.resolve()} --tls-key {key.resolve()}")


adc_app = plain_app(help="Application Default Credentials files.", no_args_is_help=True)
app.add_typer(adc_app, name="adc")


@adc_app.command("impersonate")
def adc_impersonate(
    email: Annotated[str, typer.Argument(help="Service account to impersonate.")],
    delegates: Annotated[str | None, typer.Option(help="Comma-separated delegate chain.")] = None,
    output: Annotated[Path | None, typer.Option(help="Where to write the file.")] = None,
) -> None:
    """Write an impersonated_service_account ADC file whose source is the active credential."""
    from keyless.cli.environment import write_impersonated_adc

    chain = [d.strip() for d in (delegates or "").split(",") if d.strip()]
    typer.echo(str(write_impersonated_adc(_globals, email, chain, output)))


@users_app.command("add")
def users_add(
    email: Annotated[str, typer.Argument(help="The user's email.")],
    output: Annotated[Path | None, typer.Option(help="Write the credentials file here (else stdout).")] = None,
) -> None:
    """Register a user and write an authorized_user credentials file for it."""
    result = Session(_globals).call("POST", "/keyless/v1/users", {"email": email})
    if _write_credentials(result["credentials"], output):
        typer.echo(f"Created user [{email}]; credentials written to [{output}].", err=True)


def _write_credentials(credentials: dict[str, Any], output: Path | None) -> bool:
    """An authorized_user file to ``output`` (mode 0600, replaced whole), else to stdout; True when written."""
    text = json.dumps(credentials, indent=2) + "\n"
    if output is None:
        sys.stdout.write(text)
        return False
    write_private(output, text)
    return True


def _user_path(email: str, verb: str = "") -> str:
    return f"/keyless/v1/users/{urllib.parse.quote(email, safe='@')}{verb}"


@users_app.command("disable")
def users_disable(email: Annotated[str, typer.Argument(help="The user's email.")]) -> None:
    """Disable a user: it gets no token, and the access tokens it holds stop working."""
    Session(_globals).call("POST", _user_path(email, ":disable"), {})
    typer.echo(f"Disabled user [{email}].", err=True)


@users_app.command("enable")
def users_enable(email: Annotated[str, typer.Argument(help="The user's email.")]) -> None:
    """Enable a disabled user."""
    Session(_globals).call("POST", _user_path(email, ":enable"), {})
    typer.echo(f"Enabled user [{email}].", err=True)


@users_app.command("delete")
def users_delete(email: Annotated[str, typer.Argument(help="The user's email.")]) -> None:
    """Delete a user: its credentials and the access tokens it holds stop working."""
    confirm(f"You are about to delete user [{email}].")
    Session(_globals).call("DELETE", _user_path(email))
    typer.echo(f"Deleted user [{email}].", err=True)


@users_app.command("reset-secret")
def users_reset_secret(
    email: Annotated[str, typer.Argument(help="The user's email.")],
    output: Annotated[Path | None, typer.Option(help="Write the new credentials file here (else stdout).")] = None,
) -> None:
    """Give a user a new client secret and refresh token: the old ones stop working."""
    result = Session(_globals).call("POST", _user_path(email, ":resetSecret"), {})
    if _write_credentials(result["credentials"], output):
        typer.echo(f"Reset the credentials of user [{email}]; written to [{output}].", err=True)


@users_app.command("set-password")
def users_set_password(
    email: Annotated[str, typer.Argument(help="The user's email.")],
    password_file: Annotated[str | None, typer.Option(
        help="Read the password from this file ('-' for stdin); without it the password is asked for twice.")
    ] = None,
) -> None:
    """Set the password a user proves on the sign-in page (gcloud auth login) of a server reachable off
    loopback (owner only)."""
    if password_file is not None:
        from keyless.cli.args import read_input

        lines = read_input(password_file).decode("utf-8", "replace").splitlines()
        password = lines[0] if lines else ""
    else:
        password = typer.prompt("New password", hide_input=True, confirmation_prompt=True, err=True)
    Session(_globals).call("POST", _user_path(email, ":setPassword"), {"password": password})
    typer.echo(f"Set the password of user [{email}].", err=True)


@app.command("audit")
def audit_cmd(
    account: Annotated[str | None, typer.Option(help="Target service account email.")] = None,
    caller: Annotated[str | None, typer.Option(help="Caller principal email.")] = None,
    since: Annotated[str | None, typer.Option(help="RFC 3339 time or a duration such as 15m, 2h, 1d.")] = None,
    denied: Annotated[bool, typer.Option(help="Only denials and errors.")] = False,
    limit: Annotated[int, typer.Option(help="At most this many entries.")] = 1000,
    order: Annotated[str, typer.Option(help="desc: newest first; asc: oldest first.")] = "desc",
) -> None:
    """Query the audit log (owner only), newest first, with why each denial happened; --format is table (the
    default) or json (one entry per line)."""
    from keyless.cli.audit import run_audit

    run_audit(Session(_globals), account=account, caller=caller, since=since, denied=denied,
              fmt=_globals.format or "table", limit=limit, order=order)


@app.command("why")
def why_cmd(
    principal: Annotated[str, typer.Argument(help="Who calls: user:EMAIL, serviceAccount:EMAIL, an email or a "
                                                   "principal:// identifier.")],
    account: Annotated[str, typer.Argument(help="The service account whose credentials it asks for (email, "
                                                 "unique id or projects/-/serviceAccounts/...).")],
    delegate: Annotated[list[str] | None, typer.Option(help="A delegate of the chain, in order (repeatable).")
                        ] = None,
    method: Annotated[str, typer.Option(help="generateAccessToken, generateIdToken, signBlob or signJwt.")
                      ] = "generateAccessToken",
) -> None:
    """Explain, hop by hop, whether PRINCIPAL may obtain ACCOUNT's credentials through the delegates, and which hop
    fails (the owner, or who may read every account's policy on the chain, e.g. roles/iam.securityReviewer)."""
    from keyless.cli.why import run_why

    run_why(Session(_globals), principal=principal, account=account, delegates=delegate or [], method=method,
            fmt=_globals.format or "table")


@users_app.command("list")
def users_list() -> None:
    """List registered users."""
    for user in Session(_globals).call("GET", "/keyless/v1/users").get("users", []):
        typer.echo(user["email"])


# ---------------------------------------------------------------- errors


def command_path(args: list[str]) -> str:
    """``keyless.iam.service-accounts.create``: the command the arguments name, for error messages."""
    import typer.main

    node: Any = typer.main.get_command(app)
    names = ["keyless"]
    for arg in args:
        if arg.startswith("-"):
            continue
        commands = getattr(node, "commands", None)
        if not commands or arg not in commands:
            break
        node = commands[arg]
        names.append(arg)
    return ".".join(names)


def _fail(args: list[str], message: str, exit_code: int) -> None:
    print(f"ERROR: ({command_path(args)}) {message}", file=sys.stderr, flush=True)
    raise SystemExit(exit_code)


def _usage_error(args: list[str], err: Any) -> None:
    """A click/typer usage error, told the way gcloud tells it."""
    code = int(getattr(err, "exit_code", 2))
    if type(err).__name__ == "NoArgsIsHelpError":
        print(err.format_message(), file=sys.stderr)
        raise SystemExit(code)
    path = command_path(args)
    print(f"ERROR: ({path}) {err.format_message()}", file=sys.stderr)
    ctx = getattr(err, "ctx", None)
    if ctx is not None:
        print(ctx.get_usage(), file=sys.stderr)
        print(f"\nFor detailed information on this command and its flags, run:\n  {path.replace('.', ' ')} --help",
              file=sys.stderr)
    raise SystemExit(code)


def command_tree() -> Any:
    """The click command tree of ``app``, with the help's metavars (``keyless.cli.help``)."""
    return tidy(typer.main.get_command(app))


def main(argv: list[str] | None = None) -> None:
    global _globals
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        _globals, rest = extract_global_options(args)
    except CliError as err:
        _fail(args, str(err), err.exit_code)
    use_options(_globals)
    try:
        result = command_tree()(args=rest, prog_name="keyless", standalone_mode=False)
    except CliError as err:
        _fail(rest, str(err), err.exit_code)
    except (typer.Exit, typer.Abort) as err:
        raise SystemExit(getattr(err, "exit_code", 1)) from None
    except BrokenPipeError:
        sys.stderr.close()
        raise SystemExit(1) from None
    except Exception as err:
        # click's exceptions (vendored by recent typer, plain click before): usage errors and the like.
        if hasattr(err, "format_message") and hasattr(err, "exit_code"):
            _usage_error(rest, err)
        raise
    if isinstance(result, int) and result:
        raise SystemExit(result)
