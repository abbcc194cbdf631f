"""The four allow-policy commands (``get-iam-policy``, ``set-iam-policy``, ``add-iam-policy-binding``,
``remove-iam-policy-binding``), written once and declared for each kind of resource that has a policy: service
accounts (``keyless iam service-accounts``) and projects (``keyless projects``). The edits themselves (conditions,
read-modify-write with retries) are in ``keyless.cli.policy``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from keyless.cli.client import CliError, Session
from keyless.cli.formatting import display, status
from keyless.cli.policy import (
    ConditionArg,
    get_policy,
    has_conditions,
    modify,
    parse_condition,
    remove_binding,
    set_policy_from_file,
)
from keyless.cli.policy import add_binding as add_to_policy

MemberOption = Annotated[str, typer.Option(
    "--member", help="The principal: user:EMAIL, serviceAccount:EMAIL, group:EMAIL, domain:DOMAIN, ...")]
RoleOption = Annotated[str, typer.Option("--role", help="The role, e.g. roles/iam.serviceAccountTokenCreator.")]
ConditionOption = Annotated[str | None, typer.Option(
    "--condition", help="expression=EXPR,title=TITLE[,description=DESC], or None for no condition.")]
ConditionFileOption = Annotated[Path | None, typer.Option(
    "--condition-from-file", help="A JSON or YAML file with expression, title and description.")]
AllOption = Annotated[bool, typer.Option("--all", help="Remove the member from every binding of the role.")]
PolicyFile = Annotated[Path, typer.Argument(metavar="POLICY_FILE", help="The policy as JSON or YAML.")]


@dataclass(frozen=True)
class PolicyResource:
    """A kind of resource with an allow policy: how its commands name it, and where its policy lives."""

    kind: str  # gcloud's word for it in "Updated IAM policy for KIND [NAME]."
    noun: str  # in the commands' help: "a service account"
    argument: Any  # the command line argument naming one: an Annotated[str, typer.Argument(...)]
    path: Callable[[str], str]  # that argument -> the resource's REST path (``...:getIamPolicy`` is appended)
    grant_reach: str = ""  # what else a grant on it reaches, for add-iam-policy-binding's help

    def show(self, name: str) -> None:
        display(get_policy(Session(), self.path(name)), "yaml")

    def replace(self, name: str, policy_file: Path) -> None:
        self._updated(name, set_policy_from_file(Session(), self.path(name), policy_file))

    def add_binding(self, name: str, member: str, role: str, condition: ConditionArg) -> None:
        def change(policy: dict[str, Any]) -> bool:
            if not condition.given and has_conditions(policy):
                raise CliError("Adding a binding without specifying a condition to a policy containing conditions "
                               "is prohibited in non-interactive mode. Run the command again with "
                               "`--condition=None`.", exit_code=2)
            return add_to_policy(policy, member, role, condition.condition)

        self._updated(name, modify(Session(), self.path(name), change))

    def remove_binding(self, name: str, member: str, role: str, condition: ConditionArg, all_: bool) -> None:
        def change(policy: dict[str, Any]) -> bool:
            if not condition.given and not all_ and has_conditions(policy):
                raise CliError("Removing a binding without specifying a condition from a policy containing "
                               "conditions is prohibited in non-interactive mode. Run the command again with "
                               "`--condition=None` to remove a binding without condition or run command with "
                               "`--all` to remove all bindings of the specified principal and role.", exit_code=2)
            remove_binding(policy, member, role, condition, all_)
            return True

        self._updated(name, modify(Session(), self.path(name), change))

    def _updated(self, name: str, policy: dict[str, Any]) -> None:
        status(f"Updated IAM policy for {self.kind} [{name}].")
        display(policy, "yaml")


def policy_commands(app: typer.Typer, resource: PolicyResource) -> None:
    """Declare the four policy commands of ``resource`` on ``app`` (in the order ``--help`` lists them)."""

    def add_iam_policy_binding(name: str, member: MemberOption, role: RoleOption, condition: ConditionOption = None,
                               condition_from_file: ConditionFileOption = None) -> None:
        resource.add_binding(name, member, role, parse_condition(condition, condition_from_file))

    def remove_iam_policy_binding(name: str, member: MemberOption, role: RoleOption, condition: ConditionOption = None,
                                  condition_from_file: ConditionFileOption = None, all_: AllOption = False) -> None:
        resource.remove_binding(name, member, role, parse_condition(condition, condition_from_file), all_)

    def get_iam_policy(name: str) -> None:
        resource.show(name)

    def set_iam_policy(name: str, policy_file: PolicyFile) -> None:
        resource.replace(name, policy_file)

    declared = (
        (add_iam_policy_binding, f"Grant a role on {resource.noun}{resource.grant_reach} to a principal."),
        (remove_iam_policy_binding, f"Revoke a role on {resource.noun} from a principal."),
        (get_iam_policy, f"Show {resource.noun}'s allow policy (version 3)."),
        (set_iam_policy, f"Replace {resource.noun}'s allow policy (its etag, if present, must be current)."),
    )
    for command, help_text in declared:
        # The resource's own argument (its metavar and help) for ``name``: typer reads it from the annotations.
        command.__annotations__["name"] = resource.argument
        app.command(command.__name__.replace("_", "-"), help=help_text)(command)
