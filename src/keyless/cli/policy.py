"""IAM allow-policy edits behind the policy commands (``keyless.cli.policy_commands``) and ``keyless apply``:
bindings, conditions, retries.

``add-iam-policy-binding`` and ``remove-iam-policy-binding`` read the policy (version 3), change it and write it
back with its etag, retrying when another writer got there first (409), as gcloud does. Conditions are given as
``--condition=expression=EXPR,title=TITLE[,description=DESC]`` (``^;^`` before the list picks another
separator), ``--condition=None``, or ``--condition-from-file``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from keyless.cli.client import CliError, Session, api_error

CONDITION_KEYS = ("expression", "title", "description")


class ConditionArg:
    """What --condition / --condition-from-file said: nothing, explicitly no condition, or a condition."""

    def __init__(self, given: bool, condition: dict[str, str] | None) -> None:
        self.given = given
        self.condition = condition


def parse_condition(text: str | None, from_file: Path | None = None) -> ConditionArg:
    if text is not None and from_file is not None:
        raise CliError("--condition and --condition-from-file cannot be used together.", exit_code=2)
    if from_file is not None:
        import yaml

        try:
            data = yaml.safe_load(from_file.read_text())
        except (OSError, yaml.YAMLError) as err:
            raise CliError(f"Unable to read the condition file [{from_file}]: {err}", exit_code=2) from None
        if not isinstance(data, dict):
            raise CliError("The condition file must hold a mapping with expression and title.", exit_code=2)
        return ConditionArg(True, _checked({k: str(v) for k, v in data.items()}))
    if text is None:
        return ConditionArg(False, None)
    if text.strip() == "None":
        return ConditionArg(True, None)
    separator = ","
    match = re.match(r"^\^(.+?)\^", text)
    if match:
        separator, text = match.group(1), text[match.end():]
    found: dict[str, str] = {}
    last: str | None = None
    for piece in text.split(separator):
        key, eq, value = piece.partition("=")
        if eq and key.strip() in CONDITION_KEYS and key.strip() not in found:
            last = key.strip()
            found[last] = value
        elif last is not None:
            # A separator inside a value (an expression with a comma) belongs to that value.
            found[last] += separator + piece
        else:
            raise CliError(f"--condition: expected KEY=VALUE with keys {', '.join(CONDITION_KEYS)}.", exit_code=2)
    return ConditionArg(True, _checked(found))


def _checked(condition: dict[str, str]) -> dict[str, str]:
    unknown = set(condition) - set(CONDITION_KEYS)
    if unknown:
        raise CliError(f"Unknown condition key(s): {', '.join(sorted(unknown))}.", exit_code=2)
    missing = [k for k in ("expression", "title") if not condition.get(k, "").strip()]
    if missing:
        raise CliError(f"A condition needs {' and '.join(missing)}.", exit_code=2)
    return {k: v.strip() for k, v in condition.items() if v.strip()}


def same_condition(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    def norm(c: dict[str, Any] | None) -> tuple[str, str, str] | None:
        if not c:
            return None
        return (str(c.get("expression", "")), str(c.get("title", "")), str(c.get("description", "") or ""))

    return norm(a) == norm(b)


def has_conditions(policy: dict[str, Any]) -> bool:
    return any(b.get("condition") for b in policy.get("bindings", []))


def add_binding(policy: dict[str, Any], member: str, role: str, condition: dict[str, Any] | None) -> bool:
    """Add ``member`` to the binding of ``role`` with exactly ``condition``; False when it is there already."""
    bindings: list[dict[str, Any]] = policy.setdefault("bindings", [])
    for binding in bindings:
        if binding.get("role") == role and same_condition(binding.get("condition"), condition):
            members: list[str] = binding.setdefault("members", [])
            if member in members:
                return False
            members.append(member)
            return True
    binding = {"role": role, "members": [member]}
    if condition:
        binding["condition"] = dict(condition)
    bindings.append(binding)
    return True


def remove_binding(policy: dict[str, Any], member: str, role: str, condition: ConditionArg, all_: bool) -> None:
    found = False
    kept = []
    for binding in policy.get("bindings", []):
        matches = binding.get("role") == role and (
            all_ or same_condition(binding.get("condition"), condition.condition))
        if matches and member in binding.get("members", []):
            binding["members"] = [m for m in binding["members"] if m != member]
            found = True
        if binding.get("members"):
            kept.append(binding)
    if not found:
        raise CliError("Policy binding with the specified principal, role, and condition not found!")
    policy["bindings"] = kept


def _versioned(policy: dict[str, Any]) -> dict[str, Any]:
    if has_conditions(policy):
        policy["version"] = 3
    return policy


def modify(session: Session, resource_path: str, change: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Read-modify-write the policy at ``resource_path`` (``...:getIamPolicy`` / ``...:setIamPolicy``)."""
    for attempt in range(5):
        policy: dict[str, Any] = session.call("POST", f"{resource_path}:getIamPolicy",
                                              {"options": {"requestedPolicyVersion": 3}})
        if not change(policy):
            return policy
        result = session.raw("POST", f"{resource_path}:setIamPolicy", {"policy": _versioned(policy)})
        if result.status == 409 and attempt < 4:
            continue
        if result.status >= 400:
            raise api_error(result)
        updated: dict[str, Any] = result.body
        return updated
    raise AssertionError("unreachable")


def get_policy(session: Session, resource_path: str) -> dict[str, Any]:
    policy: dict[str, Any] = session.call("POST", f"{resource_path}:getIamPolicy",
                                          {"options": {"requestedPolicyVersion": 3}})
    return policy


def set_policy_from_file(session: Session, resource_path: str, policy_file: Path) -> dict[str, Any]:
    import yaml

    try:
        text = policy_file.read_text()
        data = json.loads(text) if policy_file.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as err:
        raise CliError(f"Unable to read the policy file [{policy_file}]: {err}", exit_code=2) from None
    if not isinstance(data, dict):
        raise CliError(f"The policy file [{policy_file}] must hold a policy object.", exit_code=2)
    updated: dict[str, Any] = session.call("POST", f"{resource_path}:setIamPolicy", {"policy": data})
    return updated

