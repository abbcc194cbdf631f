"""``keyless auth print-access-token`` and ``print-identity-token``: only the token on stdout, as gcloud prints it.

This module is imported on every start of the CLI, so it imports the standard library, typer and the client
only: a token is printed without loading the server's code.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from keyless.cli.args import parse_duration
from keyless.cli.client import CliError, Session

app = typer.Typer(help="Print credentials of the active account, or of an impersonated service account.",
                  no_args_is_help=True)
SCOPE_PREFIX = "https://www.googleapis.com/auth/"


def _scopes(text: str | None) -> list[str] | None:
    if not text:
        return None
    return [s if "://" in s else SCOPE_PREFIX + s for s in (p.strip() for p in text.split(",")) if s]


@app.command("print-access-token")
def print_access_token(
    lifetime: Annotated[str | None, typer.Option(
        help="Token lifetime (3600s by default; up to 12h where the org policy allows). "
             "Only with --impersonate-service-account.")] = None,
    scopes: Annotated[str | None, typer.Option(
        help="Comma-separated OAuth scopes (full URLs, or names under https://www.googleapis.com/auth/).")] = None,
) -> None:
    """Print an access token for the active account or, with --impersonate-service-account, for that account."""
    session = Session()
    if session.target is None:
        if lifetime is not None:
            raise CliError("--lifetime can only be used with --impersonate-service-account.", exit_code=2)
        token = session.source_token(_scopes(scopes))
    else:
        seconds = parse_duration(lifetime, "--lifetime") if lifetime is not None else None
        token = str(session.impersonated_token(_scopes(scopes), seconds)["accessToken"])
    sys.stdout.write(token + "\n")


@app.command("print-identity-token")
def print_identity_token(
    audiences: Annotated[str | None, typer.Option(help="The aud claim of the token.")] = None,
    include_email: Annotated[bool, typer.Option(
        help="Add the email and email_verified claims (with --impersonate-service-account).")] = False,
) -> None:
    """Print an OIDC ID token for an impersonated service account (or a service-account key file)."""
    session = Session()
    if not audiences:
        raise CliError("--audiences is required: name the service the token is for.", exit_code=2)
    if session.target is None:
        if include_email:
            raise CliError("--include-email can only be used with --impersonate-service-account.", exit_code=2)
        token = session.source_id_token(audiences)
    else:
        token = str(session.credentials_call("generateIdToken",
                                             {"audience": audiences, "includeEmail": include_email})["token"])
    sys.stdout.write(token + "\n")
