"""``keyless projects ...``: project allow policies (Resource Manager), and keyless's own project registry."""

from __future__ import annotations

from typing import Annotated

import typer

from keyless.cli.client import Session
from keyless.cli.formatting import display, status
from keyless.cli.help import plain_app
from keyless.cli.policy_commands import PolicyResource, policy_commands

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


policy_commands(app, PolicyResource(kind="project", noun="a project", argument=ProjectId, path=_path,
                                    grant_reach=" (and so on every service account in it)"))
