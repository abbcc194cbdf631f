"""``keyless projects ...``: project allow policies (Resource Manager), and keyless's own project registry."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from keyless.cli.client import Session
from keyless.cli.formatting import display, status
from keyless.cli.help import plain_app
from keyless.cli.policy import (
    ConditionFileOption,
    ConditionOption,
    MemberOption,
    RoleOption,
    add_binding_command,
    get_policy,
    parse_condition,
    remove_binding_command,
    set_policy_from_file,
)

app = plain_app(help="Manage projects and their allow policies.", no_args_is_help=True)
ProjectId = Annotated[str, typer.Argument(metavar="PROJECT_ID", help="The project id.")]


def _path(project: str) -> str:
    return f"/v1/projects/{project}"


@app.command("create")
def create(project: ProjectId) -> None:
    """Create a project (owner only); the caller gets roles/owner on it."""
    created = Session().call("POST", "/keyless/v1/projects", {"projectId": project})
    status(f"Created project [{project}].")
    display(created, "none")


@app.command("list")
def list_() -> None:
    """List projects (owner only)."""
    found = Session().call("GET", "/keyless/v1/projects").get("projects", [])
    display(found, "table(projectId:label=PROJECT_ID, projectNumber:label=PROJECT_NUMBER)", is_list=True)


@app.command("describe")
def describe(project: ProjectId) -> None:
    """Show a project."""
    display(Session().call("GET", _path(project)), "yaml")


@app.command("add-iam-policy-binding")
def add_iam_policy_binding(project: ProjectId, member: MemberOption, role: RoleOption,
                           condition: ConditionOption = None, condition_from_file: ConditionFileOption = None) -> None:
    """Grant a role on a project (and so on every service account in it) to a principal."""
    add_binding_command(Session(), _path(project), "project", project, member, role,
                        parse_condition(condition, condition_from_file))


@app.command("remove-iam-policy-binding")
def remove_iam_policy_binding(
    project: ProjectId, member: MemberOption, role: RoleOption, condition: ConditionOption = None,
    condition_from_file: ConditionFileOption = None,
    all_: Annotated[bool, typer.Option("--all", help="Remove the member from every binding of the role.")] = False,
) -> None:
    """Revoke a role on a project from a principal."""
    remove_binding_command(Session(), _path(project), "project", project, member, role,
                           parse_condition(condition, condition_from_file), all_)


@app.command("get-iam-policy")
def get_iam_policy(project: ProjectId) -> None:
    """Show a project's allow policy (version 3)."""
    display(get_policy(Session(), _path(project)), "yaml")


@app.command("set-iam-policy")
def set_iam_policy(
    project: ProjectId,
    policy_file: Annotated[Path, typer.Argument(metavar="POLICY_FILE", help="The policy as JSON or YAML.")],
) -> None:
    """Replace a project's allow policy (its etag, if present, must be current)."""
    policy = set_policy_from_file(Session(), _path(project), policy_file)
    status(f"Updated IAM policy for project [{project}].")
    display(policy, "yaml")
