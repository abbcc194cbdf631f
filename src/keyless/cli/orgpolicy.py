"""``keyless resource-manager org-policies``: the lifetime-extension list constraint keyless emulates.

``constraints/iam.allowServiceAccountCredentialLifetimeExtension`` lists the service accounts whose access
tokens may live up to 12 hours. ``allow`` adds values to the project's policy, as gcloud's command does.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from keyless.cli.args import ProjectOption, project_or_default
from keyless.cli.client import ApiError, Session
from keyless.cli.formatting import display, status
from keyless.cli.help import plain_app

app = plain_app(help="Resource Manager: organization policies.", no_args_is_help=True)
policies = plain_app(help="Organization policy constraints on projects.", no_args_is_help=True)
app.add_typer(policies, name="org-policies")
Constraint = Annotated[str, typer.Argument(
    metavar="CONSTRAINT", help="e.g. iam.allowServiceAccountCredentialLifetimeExtension")]


def _path(project: str, constraint: str) -> str:
    return f"/v2/projects/{project}/policies/{constraint.removeprefix('constraints/')}"


def allowed_values(policy: dict[str, Any]) -> list[str]:
    values: list[str] = []
    for rule in policy.get("spec", {}).get("rules", []):
        values.extend(rule.get("values", {}).get("allowedValues", []))
    return values


@policies.command("allow")
def allow(
    constraint: Constraint,
    values: Annotated[list[str], typer.Argument(metavar="ALLOWED_VALUE", help="Values to add.")],
    project: ProjectOption = None,
) -> None:
    """Add values to a list constraint's allowed values on a project."""
    session = Session()
    path = _path(project_or_default(project), constraint)
    try:
        current = allowed_values(session.call("GET", path))
    except ApiError as err:
        if err.http_status != 404:
            raise
        current = []
    merged = current + [v for v in values if v not in current]
    policy = session.call("PATCH", path, {"spec": {"rules": [{"values": {"allowedValues": merged}}]}})
    status(f"Updated policy [{constraint}] on project [{project_or_default(project)}].")
    display(policy, "yaml")


@policies.command("describe")
def describe(constraint: Constraint, project: ProjectOption = None) -> None:
    """Show a project's policy for a constraint."""
    display(Session().call("GET", _path(project_or_default(project), constraint)), "yaml")


@policies.command("delete")
def delete(constraint: Constraint, project: ProjectOption = None) -> None:
    """Remove a project's policy for a constraint (back to the default: 1 hour at most)."""
    Session().call("DELETE", _path(project_or_default(project), constraint))
    status(f"Deleted policy [{constraint}] on project [{project_or_default(project)}].")
