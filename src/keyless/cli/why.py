"""``keyless why``: why a principal may, or may not, obtain an account's credentials, hop by hop (the chain
explanation, ``POST /keyless/v1/iam:troubleshootChain``), printed for a person or as JSON."""

from __future__ import annotations

import json
from typing import Any

from keyless.cli.client import CliError, Session

METHODS = ("generateAccessToken", "generateIdToken", "signBlob", "signJwt")
_STATE = {"CAN_ACCESS": "granted", "CANNOT_ACCESS": "DENIED", "UNKNOWN_INFO": "unknown (a policy you may not read)"}


def run_why(session: Session, *, principal: str, account: str, delegates: list[str], method: str, fmt: str) -> None:
    if method not in METHODS:
        raise CliError(f"--method is one of {', '.join(METHODS)}.", exit_code=2)
    if ":" not in principal and "@" in principal:
        principal = ("serviceAccount:" if principal.endswith(".gserviceaccount.com") else "user:") + principal
    body: dict[str, Any] = {"principal": principal, "serviceAccount": account, "method": method}
    if delegates:
        body["delegates"] = delegates
    answer = session.call("POST", "/keyless/v1/iam:troubleshootChain", body)
    if fmt == "json":
        print(json.dumps(answer, indent=2))
        return
    print("\n".join(render(answer)))


def render(answer: dict[str, Any]) -> list[str]:
    """The explanation in lines: the verdict, then each hop with the bindings that decide it."""
    hops = answer.get("hops", [])
    failing = answer.get("failingHop")
    verdict = "granted" if failing is None else f"DENIED at hop {failing} of {len(hops)}"
    lines = [f"{answer.get('principal')} {answer.get('method')} {_account(hops[-1]) if hops else ''}: {verdict}"]
    for hop in hops:
        mark = "  <- fails here" if hop["hop"] == failing else ""
        lines.append(f"  hop {hop['hop']}: {hop['principal']} needs {hop['permission']} on {_account(hop)}: "
                     f"{_STATE.get(hop['overallAccessState'], hop['overallAccessState'])}{mark}")
        lines.append(f"    {hop.get('summary', '')}")
        for policy in hop.get("allowPolicyExplanation", {}).get("explainedPolicies", []):
            for binding in policy.get("bindingExplanations", []):
                if binding.get("relevance") == "HEURISTIC_RELEVANCE_HIGH":
                    lines.append(f"    {_binding_line(policy['fullResourceName'], binding)}")
    return lines


def _account(hop: dict[str, Any]) -> str:
    """The account's email or id (the request's ``projects/-/serviceAccounts/`` left out)."""
    return str(hop["serviceAccount"]).rpartition("/")[2]


def _binding_line(resource: str, binding: dict[str, Any]) -> str:
    granted = binding["allowAccessState"] == "ALLOW_ACCESS_STATE_GRANTED"
    parts = ["role includes the permission" if binding["rolePermission"] == "ROLE_PERMISSION_INCLUDED"
             else "role lacks the permission",
             "names the principal" if binding["combinedMembership"]["membership"] == "MEMBERSHIP_MATCHED"
             else "does not name the principal"]
    matched = [m for m, v in binding.get("memberships", {}).items() if v["membership"] == "MEMBERSHIP_MATCHED"]
    if matched:
        parts[-1] += f" ({', '.join(matched)})"
    if "condition" in binding:
        value = binding.get("conditionExplanation", {}).get("value")
        parts.append(f"condition '{binding['condition'].get('title', '')}' "
                     + ("holds" if value is True else "is false" if value is False else "could not be evaluated"))
    return f"{'+' if granted else '-'} {binding['role']} on {resource}: {'; '.join(parts)}"
