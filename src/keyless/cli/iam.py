"""``keyless iam service-accounts ...``: accounts, their keys and allow policies, signBlob and signJwt.

Each command makes the same API call as its gcloud namesake and prints what gcloud prints: status lines on
stderr (``Created service account [x].``), resources on stdout in the command's default format or --format.
"""

from __future__ import annotations

import base64
import json
from typing import Annotated, Any

import typer

from keyless.cli.args import ProjectOption, account_resource, confirm, project_or_default, read_input, write_output
from keyless.cli.client import CliError, Session, account_path
from keyless.cli.federation import pools
from keyless.cli.formatting import display, status
from keyless.cli.help import plain_app
from keyless.cli.policy_commands import PolicyResource, policy_commands

app = plain_app(help="Manage IAM service accounts, their keys and policies.", no_args_is_help=True)
accounts = plain_app(help="Create and manage service accounts.", no_args_is_help=True)
keys = plain_app(help="Manage service account keys.", no_args_is_help=True)
app.add_typer(accounts, name="service-accounts")
accounts.add_typer(keys, name="keys")

Account = Annotated[str, typer.Argument(metavar="SERVICE_ACCOUNT", help="The account's email or unique id.")]
IamAccount = Annotated[str, typer.Option("--iam-account", help="The service account's email.")]
LIST_FORMAT = 'table(displayName:label="DISPLAY NAME", email, disabled)'
KEYS_FORMAT = ("table(name.basename():label=KEY_ID, validAfterTime:label=CREATED_AT, "
               "validBeforeTime:label=EXPIRES_AT, disabled:label=DISABLED)")


# ---------------------------------------------------------------- accounts


@accounts.command("create")
def create(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The account id (6-30 characters).")],
    display_name: Annotated[str | None, typer.Option(help="A display name.")] = None,
    description: Annotated[str | None, typer.Option(help="A description.")] = None,
    project: ProjectOption = None,
) -> None:
    """Create a service account (prints nothing on stdout unless --format asks)."""
    spec: dict[str, str] = {}
    if display_name is not None:
        spec["displayName"] = display_name
    if description is not None:
        spec["description"] = description
    created = Session().call("POST", f"/v1/projects/{project_or_default(project)}/serviceAccounts",
                             {"accountId": name, "serviceAccount": spec})
    status(f"Created service account [{name}].")
    display(created, "none")


def list_accounts(session: Session, project: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    token = ""
    while True:
        page = session.call("GET", f"/v1/projects/{project}/serviceAccounts?pageSize=100"
                            + (f"&pageToken={token}" if token else ""))
        found.extend(page.get("accounts", []))
        token = page.get("nextPageToken", "")
        if not token:
            return found


@accounts.command("list")
def list_(
    project: ProjectOption = None,
    limit: Annotated[int | None, typer.Option(help="At most this many accounts.")] = None,
) -> None:
    """List the service accounts of a project."""
    found = list_accounts(Session(), project_or_default(project))[:limit]
    display([{"disabled": False, **a} for a in found], LIST_FORMAT, is_list=True)


@accounts.command("describe")
def describe(account: Account) -> None:
    """Show a service account."""
    display(Session().call("GET", account_resource(account)), "yaml")


@accounts.command("update")
def update(
    account: Account,
    display_name: Annotated[str | None, typer.Option(help="The new display name.")] = None,
    description: Annotated[str | None, typer.Option(help="The new description.")] = None,
) -> None:
    """Change a service account's display name or description."""
    spec: dict[str, str] = {}
    if display_name is not None:
        spec["displayName"] = display_name
    if description is not None:
        spec["description"] = description
    if not spec:
        raise CliError("Specify at least one of --display-name or --description.", exit_code=2)
    updated = Session().call("PATCH", account_resource(account),
                             {"serviceAccount": spec, "updateMask": ",".join(spec)})
    status(f"Updated service account [{account}].")
    display(updated, "yaml")


@accounts.command("delete")
def delete(account: Account) -> None:
    """Delete a service account (undelete brings it back with its unique id)."""
    confirm(f"You are about to delete service account [{account}].")
    Session().call("DELETE", account_resource(account))
    status(f"deleted service account [{account}]")


@accounts.command("undelete")
def undelete(
    account_id: Annotated[str, typer.Argument(metavar="ACCOUNT_ID", help="The deleted account's unique id.")],
) -> None:
    """Restore a deleted service account by its unique id."""
    restored = Session().call("POST", f"/v1/projects/-/serviceAccounts/{account_id}:undelete", {})
    status(f"Restored service account [{account_id}].")
    display(restored, "yaml")


@accounts.command("enable")
def enable(account: Account) -> None:
    """Enable a disabled service account."""
    Session().call("POST", f"{account_resource(account)}:enable", {})
    status(f"Enabled service account [{account}].")


@accounts.command("disable")
def disable(account: Account) -> None:
    """Disable a service account: it can no longer authenticate or be impersonated."""
    Session().call("POST", f"{account_resource(account)}:disable", {})
    status(f"Disabled service account [{account}].")


# ---------------------------------------------------------------- policies


policy_commands(accounts, PolicyResource(kind="serviceAccount", noun="a service account", argument=Account,
                                         path=account_resource))


# ---------------------------------------------------------------- signing


@accounts.command("sign-blob")
def sign_blob(
    input_: Annotated[str, typer.Argument(metavar="INPUT", help="The file to sign ('-' for stdin).")],
    output: Annotated[str, typer.Argument(metavar="OUTPUT", help="Where the raw signature goes ('-': stdout).")],
    iam_account: IamAccount,
) -> None:
    """Sign bytes with a service account's system-managed key (IAM Credentials signBlob)."""
    payload = base64.b64encode(read_input(input_)).decode()
    result = Session().call("POST", f"{account_path(iam_account)}:signBlob", {"payload": payload})
    write_output(output, base64.b64decode(result["signedBlob"]))
    status(f"signed blob [{input_}] as [{output}] for [{iam_account}]")


@accounts.command("sign-jwt")
def sign_jwt(
    input_: Annotated[str, typer.Argument(metavar="INPUT", help="A JSON claims set ('-' for stdin).")],
    output: Annotated[str, typer.Argument(metavar="OUTPUT", help="Where the compact JWT goes ('-': stdout).")],
    iam_account: IamAccount,
) -> None:
    """Sign a JWT claims set with a service account's system-managed key (IAM Credentials signJwt)."""
    claims = read_input(input_).decode()
    try:
        json.loads(claims)
    except ValueError:
        raise CliError(f"[{input_}] does not hold a JSON claims set.", exit_code=2) from None
    result = Session().call("POST", f"{account_path(iam_account)}:signJwt", {"payload": claims})
    # A signed JWT is a bearer credential (a self-signed JWT is accepted in place of an access token).
    write_output(output, str(result["signedJwt"]).encode(), private=True)
    status(f"signed jwt [{input_}] as [{output}] for [{iam_account}]")


# ---------------------------------------------------------------- keys


@keys.command("create")
def keys_create(
    output: Annotated[str, typer.Argument(metavar="OUTPUT_FILE", help="Where the key file goes ('-': stdout).")],
    iam_account: IamAccount,
    key_file_type: Annotated[str, typer.Option(help="json (p12 is not supported).")] = "json",
) -> None:
    """Create a user-managed key and write its service_account key file."""
    if key_file_type != "json":
        raise CliError("--key-file-type: only json is supported.", exit_code=2)
    created = Session().call("POST", f"{account_resource(iam_account)}/keys", {})
    write_output(output, base64.b64decode(created["privateKeyData"]), private=True)
    key_id = str(created["name"]).rsplit("/", 1)[-1]
    status(f"created key [{key_id}] of type [json] as [{output}] for [{iam_account}]")


@keys.command("list")
def keys_list(
    iam_account: IamAccount,
    managed_by: Annotated[str, typer.Option(help="user, system or any.")] = "any",
) -> None:
    """List a service account's keys."""
    types = {"user": "?keyTypes=USER_MANAGED", "system": "?keyTypes=SYSTEM_MANAGED", "any": ""}
    if managed_by not in types:
        raise CliError("--managed-by is user, system or any.", exit_code=2)
    found = Session().call("GET", f"{account_resource(iam_account)}/keys{types[managed_by]}").get("keys", [])
    display([{"disabled": False, **k} for k in found], KEYS_FORMAT, is_list=True)


KeyId = Annotated[str, typer.Argument(metavar="KEY_ID", help="The key's id.")]


@keys.command("delete")
def keys_delete(key_id: KeyId, iam_account: IamAccount) -> None:
    """Delete a user-managed key."""
    confirm(f"You are about to delete key [{key_id}] for service account [{iam_account}].")
    Session().call("DELETE", f"{account_resource(iam_account)}/keys/{key_id}")
    status(f"deleted key [{key_id}] for service account [{iam_account}]")


@keys.command("disable")
def keys_disable(key_id: KeyId, iam_account: IamAccount) -> None:
    """Disable a key: tokens it signed stop working."""
    Session().call("POST", f"{account_resource(iam_account)}/keys/{key_id}:disable", {})
    status(f"Disabled key [{key_id}] for service account [{iam_account}]")


@keys.command("enable")
def keys_enable(key_id: KeyId, iam_account: IamAccount) -> None:
    """Enable a disabled key."""
    Session().call("POST", f"{account_resource(iam_account)}/keys/{key_id}:enable", {})
    status(f"Enabled key [{key_id}] for service account [{iam_account}]")


# ---------------------------------------------------------------- workload identity federation

app.add_typer(pools, name="workload-identity-pools")
