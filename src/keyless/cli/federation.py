"""``keyless iam workload-identity-pools ...``: workload identity pools and their OIDC providers, and the
``external_account`` credential file a workload uses (``create-cred-config``).

Each command makes the same IAM v1 call as its gcloud namesake (the location is always ``global``) and prints what
gcloud prints: ``Created workload identity pool [x].`` on stderr, resources on stdout.
"""

from __future__ import annotations

import json
from typing import Annotated, Any
from urllib.parse import quote

import typer

from keyless.cli.args import ProjectOption, confirm, project_or_default, read_input, write_output
from keyless.cli.client import CliError, Session, options
from keyless.cli.formatting import display, status
from keyless.cli.help import plain_app

pools = plain_app(help="Manage workload identity pools (workload identity federation).", no_args_is_help=True)
providers = plain_app(help="Manage a workload identity pool's OIDC providers.", no_args_is_help=True)
pools.add_typer(providers, name="providers")

Pool = Annotated[str, typer.Argument(metavar="WORKLOAD_IDENTITY_POOL", help="The pool's id.")]
PoolOption = Annotated[str, typer.Option("--workload-identity-pool", help="The pool's id.")]
Provider = Annotated[str, typer.Argument(metavar="PROVIDER", help="The provider's id.")]
Location = Annotated[str, typer.Option(help="Only global.")]
DisplayName = Annotated[str | None, typer.Option(help="A display name (at most 32 characters).")]
Description = Annotated[str | None, typer.Option(help="A description (at most 256 characters).")]
Disabled = Annotated[bool | None, typer.Option("--disabled/--no-disabled", help="Disable (or enable) it.")]
ShowDeleted = Annotated[bool, typer.Option(help="Also list the deleted ones (undeletable for 30 days).")]
IssuerUri = Annotated[str | None, typer.Option(
    help="The OIDC issuer (its tokens' iss), an https:// URL (http:// only for a loopback issuer).")]
JwkJsonPath = Annotated[str | None, typer.Option(
    help="A file holding the issuer's JWKS (without it keyless discovers the issuer's keys).")]
Audiences = Annotated[str | None, typer.Option(
    help="Comma-separated audiences the tokens may carry (default: the provider's full name).")]
Mapping = Annotated[str | None, typer.Option(
    help="Comma-separated KEY=CEL pairs, e.g. google.subject=assertion.sub,attribute.ns=assertion.ns.")]
Condition = Annotated[str | None, typer.Option(help="A CEL expression a token's attributes must satisfy.")]
LIST_FORMAT = "table(name.basename():label=WORKLOAD_IDENTITY_POOL_ID, displayName, state, disabled)"
PROVIDERS_FORMAT = "table(name.basename():label=PROVIDER_ID, displayName, state, disabled, oidc.issuerUri)"


def _pools(project: str | None) -> str:
    return f"/v1/projects/{quote(project_or_default(project), safe='')}/locations/global/workloadIdentityPools"


def _global(location: str) -> None:
    if location != "global":
        raise CliError("--location: workload identity pools live in the global location only.", exit_code=2)


def _common(display_name: str | None, description: str | None, disabled: bool | None) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if display_name is not None:
        spec["displayName"] = display_name
    if description is not None:
        spec["description"] = description
    if disabled is not None:
        spec["disabled"] = disabled
    return spec


def _list_all(session: Session, path: str, field: str, show_deleted: bool) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    token = ""
    while True:
        query = f"?pageSize=100&showDeleted={str(show_deleted).lower()}" + (f"&pageToken={quote(token)}"
                                                                           if token else "")
        page = session.call("GET", path + query)
        found.extend(page.get(field, []))
        token = page.get("nextPageToken", "")
        if not token:
            return found


# ---------------------------------------------------------------- pools


@pools.command("create")
def create(pool: Pool, display_name: DisplayName = None, description: Description = None,
           disabled: Disabled = None, location: Location = "global", project: ProjectOption = None) -> None:
    """Create a workload identity pool."""
    _global(location)
    op = Session().call("POST", f"{_pools(project)}?workloadIdentityPoolId={quote(pool, safe='')}",
                        _common(display_name, description, disabled))
    status(f"Created workload identity pool [{pool}].")
    display(op.get("response", {}), "none")


@pools.command("describe")
def describe(pool: Pool, location: Location = "global", project: ProjectOption = None) -> None:
    """Show a workload identity pool."""
    _global(location)
    display(Session().call("GET", f"{_pools(project)}/{quote(pool, safe='')}"), "yaml")


@pools.command("list")
def list_(show_deleted: ShowDeleted = False, location: Location = "global", project: ProjectOption = None) -> None:
    """List a project's workload identity pools."""
    _global(location)
    found = _list_all(Session(), _pools(project), "workloadIdentityPools", show_deleted)
    display([{"disabled": False, **p} for p in found], LIST_FORMAT, is_list=True)


@pools.command("update")
def update(pool: Pool, display_name: DisplayName = None, description: Description = None,
           disabled: Disabled = None, location: Location = "global", project: ProjectOption = None) -> None:
    """Change a pool's display name, description or disabled state."""
    _global(location)
    spec = _common(display_name, description, disabled)
    if not spec:
        raise CliError("Specify at least one of --display-name, --description or --[no-]disabled.", exit_code=2)
    op = Session().call("PATCH", f"{_pools(project)}/{quote(pool, safe='')}?updateMask={','.join(spec)}", spec)
    status(f"Updated workload identity pool [{pool}].")
    display(op.get("response", {}), "yaml")


@pools.command("delete")
def delete(pool: Pool, location: Location = "global", project: ProjectOption = None) -> None:
    """Delete a pool: its tokens stop working; undelete brings it back within 30 days."""
    _global(location)
    confirm(f"You are about to delete workload identity pool [{pool}].")
    Session().call("DELETE", f"{_pools(project)}/{quote(pool, safe='')}")
    status(f"Deleted workload identity pool [{pool}].")


@pools.command("undelete")
def undelete(pool: Pool, location: Location = "global", project: ProjectOption = None) -> None:
    """Restore a pool deleted less than 30 days ago."""
    _global(location)
    op = Session().call("POST", f"{_pools(project)}/{quote(pool, safe='')}:undelete", {})
    status(f"Undeleted workload identity pool [{pool}].")
    display(op.get("response", {}), "none")


# ---------------------------------------------------------------- OIDC providers


def _provider_path(project: str | None, pool: str, provider: str = "") -> str:
    path = f"{_pools(project)}/{quote(pool, safe='')}/providers"
    return f"{path}/{quote(provider, safe='')}" if provider else path


def _mapping(raw: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in (p for p in raw.split(",") if p.strip()):
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise CliError(f"--attribute-mapping: [{pair}] is not KEY=EXPRESSION.", exit_code=2)
        out[key.strip()] = value.strip()
    return out


def _oidc(issuer_uri: str | None, jwk_json_path: str | None, allowed_audiences: str | None) -> dict[str, Any]:
    oidc: dict[str, Any] = {}
    if issuer_uri is not None:
        oidc["issuerUri"] = issuer_uri
    if jwk_json_path is not None:
        oidc["jwksJson"] = read_input(jwk_json_path).decode()
    if allowed_audiences is not None:
        oidc["allowedAudiences"] = [a for a in allowed_audiences.split(",") if a]
    return oidc


@providers.command("create-oidc")
def create_oidc(provider: Provider, workload_identity_pool: PoolOption, issuer_uri: IssuerUri = None,
                jwk_json_path: JwkJsonPath = None, allowed_audiences: Audiences = None,
                attribute_mapping: Mapping = None, attribute_condition: Condition = None,
                display_name: DisplayName = None, description: Description = None, disabled: Disabled = None,
                location: Location = "global", project: ProjectOption = None) -> None:
    """Create an OIDC provider: tokens of the issuer, verified with the keys of --jwk-json-path (without it, with
    the keys the issuer publishes: its /.well-known/openid-configuration's jwks_uri)."""
    _global(location)
    if issuer_uri is None or attribute_mapping is None:
        raise CliError("--issuer-uri and --attribute-mapping are required.", exit_code=2)
    spec = _common(display_name, description, disabled)
    spec["oidc"] = _oidc(issuer_uri, jwk_json_path, allowed_audiences)
    spec["attributeMapping"] = _mapping(attribute_mapping)
    if attribute_condition is not None:
        spec["attributeCondition"] = attribute_condition
    path = f"{_provider_path(project, workload_identity_pool)}?workloadIdentityPoolProviderId={quote(provider)}"
    op = Session().call("POST", path, spec)
    status(f"Created workload identity pool provider [{provider}].")
    display(op.get("response", {}), "none")


@providers.command("describe")
def provider_describe(provider: Provider, workload_identity_pool: PoolOption, location: Location = "global",
                      project: ProjectOption = None) -> None:
    """Show a provider."""
    _global(location)
    display(Session().call("GET", _provider_path(project, workload_identity_pool, provider)), "yaml")


@providers.command("list")
def provider_list(workload_identity_pool: PoolOption, show_deleted: ShowDeleted = False,
                  location: Location = "global", project: ProjectOption = None) -> None:
    """List a pool's providers."""
    _global(location)
    found = _list_all(Session(), _provider_path(project, workload_identity_pool), "workloadIdentityPoolProviders",
                      show_deleted)
    display([{"disabled": False, **p} for p in found], PROVIDERS_FORMAT, is_list=True)


@providers.command("update-oidc")
def update_oidc(provider: Provider, workload_identity_pool: PoolOption, issuer_uri: IssuerUri = None,
                jwk_json_path: JwkJsonPath = None, allowed_audiences: Audiences = None,
                attribute_mapping: Mapping = None, attribute_condition: Condition = None,
                display_name: DisplayName = None, description: Description = None, disabled: Disabled = None,
                location: Location = "global", project: ProjectOption = None) -> None:
    """Change a provider (rotate the issuer's keys with --jwk-json-path)."""
    _global(location)
    spec = _common(display_name, description, disabled)
    mask = list(spec)
    oidc = _oidc(issuer_uri, jwk_json_path, allowed_audiences)
    if oidc:
        spec["oidc"] = oidc
        mask += [f"oidc.{k}" for k in oidc]
    if attribute_mapping is not None:
        spec["attributeMapping"] = _mapping(attribute_mapping)
        mask.append("attributeMapping")
    if attribute_condition is not None:
        spec["attributeCondition"] = attribute_condition
        mask.append("attributeCondition")
    if not mask:
        raise CliError("Specify at least one field to update.", exit_code=2)
    path = f"{_provider_path(project, workload_identity_pool, provider)}?updateMask={','.join(mask)}"
    op = Session().call("PATCH", path, spec)
    status(f"Updated workload identity pool provider [{provider}].")
    display(op.get("response", {}), "yaml")


@providers.command("delete")
def provider_delete(provider: Provider, workload_identity_pool: PoolOption, location: Location = "global",
                    project: ProjectOption = None) -> None:
    """Delete a provider: its tokens stop working; undelete brings it back within 30 days."""
    _global(location)
    confirm(f"You are about to delete workload identity pool provider [{provider}].")
    Session().call("DELETE", _provider_path(project, workload_identity_pool, provider))
    status(f"Deleted workload identity pool provider [{provider}].")


@providers.command("undelete")
def provider_undelete(provider: Provider, workload_identity_pool: PoolOption, location: Location = "global",
                      project: ProjectOption = None) -> None:
    """Restore a provider deleted less than 30 days ago."""
    _global(location)
    op = Session().call("POST", f"{_provider_path(project, workload_identity_pool, provider)}:undelete", {})
    status(f"Undeleted workload identity pool provider [{provider}].")
    display(op.get("response", {}), "none")


# ---------------------------------------------------------------- the workload's credential file


@pools.command("create-cred-config")
def create_cred_config(
    provider: Annotated[str, typer.Argument(
        metavar="PROVIDER_NAME",
        help="projects/NUMBER/locations/global/workloadIdentityPools/POOL/providers/PROVIDER.")],
    output_file: Annotated[str, typer.Option(help="Where the file goes ('-': stdout).")],
    credential_source_file: Annotated[str | None, typer.Option(help="The file the workload's token is in.")] = None,
    credential_source_url: Annotated[str | None, typer.Option(help="A URL that answers the token.")] = None,
    credential_source_field_name: Annotated[str | None, typer.Option(
        help="The token's field when the source answers JSON.")] = None,
    service_account: Annotated[str | None, typer.Option(help="The account the workload impersonates.")] = None,
    keyless_urls: Annotated[bool, typer.Option(
        help="Name this keyless server's STS and IAM Credentials URLs instead of Google's (for workloads that "
             "reach keyless without its proxy).")] = False,
) -> None:
    """Write the external_account credential file a workload's google-auth (or gcloud) uses, as gcloud's
    create-cred-config does: Google's URLs, which keyless's proxy brings to keyless, or with --keyless-urls
    this server's."""
    if (credential_source_file is None) == (credential_source_url is None):
        raise CliError("Give one of --credential-source-file or --credential-source-url.", exit_code=2)
    sts = options().server_url() if keyless_urls else "https://sts.googleapis.com"
    iam = options().server_url() if keyless_urls else "https://iamcredentials.googleapis.com"
    source: dict[str, Any] = ({"file": credential_source_file} if credential_source_file is not None
                              else {"url": credential_source_url})
    if credential_source_field_name:
        source["format"] = {"type": "json", "subject_token_field_name": credential_source_field_name}
    info: dict[str, Any] = {"universe_domain": "googleapis.com", "type": "external_account",
                            "audience": f"//iam.googleapis.com/{provider.removeprefix('//iam.googleapis.com/')}",
                            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
                            "token_url": f"{sts}/v1/token", "credential_source": source}
    if service_account:
        info["service_account_impersonation_url"] = (
            f"{iam}/v1/projects/-/serviceAccounts/{service_account}:generateAccessToken")
    else:
        info["token_info_url"] = f"{sts}/v1/introspect"
    write_output(output_file, (json.dumps(info, indent=2) + "\n").encode())
    if output_file != "-":
        status(f"Created credential configuration file [{output_file}].")
