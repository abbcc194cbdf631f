"""``keyless auth print-access-token`` and ``print-identity-token``: only the token on stdout, as gcloud prints it.

This module is imported on every start of the CLI, so it imports the standard library, typer and the client
only: a token is printed without loading the server's code.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from keyless.cli.client import CliError, Session
from keyless.cli.client import print_access_token as _print_access_token
from keyless.cli.help import plain_app

app = plain_app(help="Print credentials of the active account, or of an impersonated service account.",
                  no_args_is_help=True)


@app.command("print-access-token")
def print_access_token(
    lifetime: Annotated[str | None, typer.Option(
        help="Token lifetime (3600s by default; up to 12h where the org policy allows). "
             "Only with --impersonate-service-account.")] = None,
    scopes: Annotated[str | None, typer.Option(
        help="Comma-separated OAuth scopes (full URLs, or names under https://www.googleapis.com/auth/).")] = None,
) -> None:
    """Print an access token for the active account or, with --impersonate-service-account, for that account."""
    _print_access_token(lifetime, scopes)


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
