"""``keyless metadata attach|detach|show``: the service account the metadata server serves, as the account
attached to a VM is on Google Cloud (``google.auth.default()`` there finds its credentials)."""

from __future__ import annotations

from typing import Annotated

import typer

from keyless.cli.client import Session
from keyless.cli.formatting import display, status
from keyless.cli.help import plain_app

app = plain_app(help="The account the metadata server serves.", no_args_is_help=True)


@app.command("attach")
def attach(email: Annotated[str, typer.Argument(help="Service account email.")]) -> None:
    """Serve this account's credentials from the metadata server (owner only)."""
    result = Session().call("PUT", "/keyless/v1/metadata", {"serviceAccount": email})
    status(f"The metadata server now serves [{result['serviceAccount']}].")
    display(result, "none")


@app.command("detach")
def detach() -> None:
    """Serve no account: clients on the metadata server find no credentials (owner only)."""
    result = Session().call("DELETE", "/keyless/v1/metadata")
    status("The metadata server serves no account.")
    display(result, "none")


@app.command("show")
def show() -> None:
    """The account the metadata server serves (empty when none)."""
    display(Session().call("GET", "/keyless/v1/metadata"), "value(serviceAccount)")
