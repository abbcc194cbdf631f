"""``keyless apply FILE`` and ``keyless export``: declarative state, through the same HTTP API as every command.

Apply is idempotent: it creates what is missing, updates what differs and reports the rest as unchanged. It
adds allow-policy bindings and never removes one; a group's members, a service account's display name,
description and ``disabled``, org-policy rules and the metadata attachment are set to what the file says.
New users' credentials (and key files of accounts with ``key: true``) go to the credentials directory as
``EMAIL.json``. Export writes everything but secrets in the same format, so export then apply on an empty
server reproduces the state. ``keyless serve --seed FILE`` applies a file through ``apply_file`` on start-up.
"""

from __future__ import annotations

import json
import string
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from keyless.cli.args import account_resource
from keyless.cli.client import CliError, GlobalOptions, Session, api_error, options
from keyless.cli.policy import add_binding, modify, same_condition
from keyless.private_files import write_private

HEADER = "# keyless seed file (docs/seed.schema.json). Apply it with: keyless apply FILE\n"
KEYED_KINDS = ("user:", "serviceAccount:", "group:", "domain:")


@dataclass
class Report:
    """What apply did, one line per change on stderr."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    quiet: bool = False

    def _say(self, line: str) -> None:
        if not self.quiet:
            print(line, file=sys.stderr, flush=True)

    def create(self, line: str) -> None:
        self.created += 1
        self._say(line)

    def update(self, line: str) -> None:
        self.updated += 1
        self._say(line)

    def same(self) -> None:
        self.unchanged += 1

    def summary(self) -> str:
        return f"{self.created} created, {self.updated} updated, {self.unchanged} unchanged"


# ---------------------------------------------------------------- loading


def validate(data: Any, source: str = "seed file") -> dict[str, Any]:
    import jsonschema

    from keyless.cli.seed_schema import SCHEMA

    if data is None:
        data = {}
    validator = jsonschema.Draft202012Validator(SCHEMA)
    errors = sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        shown = "; ".join(f"{'.'.join(str(p) for p in e.absolute_path) or '(top level)'}: {e.message}"
                          for e in errors[:5])
        raise CliError(f"Invalid {source}: {shown}", exit_code=2)
    checked: dict[str, Any] = data
    return checked


def load(path: Path | str, variables: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Read and validate a seed file (``-``: stdin); ``variables`` fill ``$name`` / ``${name}`` first."""
    import yaml

    try:
        text = sys.stdin.read() if str(path) == "-" else Path(path).read_text()
    except OSError as err:
        raise CliError(f"Unable to read the seed file [{path}]: {err.strerror}") from None
    if variables:
        text = string.Template(text).safe_substitute(variables)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise CliError(f"The seed file [{path}] is not valid YAML: {err}", exit_code=2) from None
    return validate(data, f"seed file [{path}]")


FEDERATED_PREFIXES = ("principal://iam.googleapis.com/projects/", "principalSet://iam.googleapis.com/projects/")


def _differs(current: Any, wanted: Any) -> bool:
    """Whether a pool's or provider's field differs from the seed's (false and absent are alike, and so are an
    empty list and an absent one)."""
    if isinstance(wanted, bool):
        return bool(current) != wanted
    if isinstance(wanted, dict) and isinstance(current, dict):
        return any(_differs(current.get(k), v) for k, v in wanted.items())
    if wanted in ([], "") and not current:
        return False
    return bool(current != wanted)


def member_key(member: str) -> str:
    """Members as the server stores them: emails and domains lower-case."""
    for kind in KEYED_KINDS:
        if member.startswith(kind):
            return kind + member[len(kind):].lower()
    return member


def account_email(account_id: str, project: str) -> str:
    return f"{account_id}@{project}.iam.gserviceaccount.com"


def _write_secret(directory: Path, name: str, content: bytes) -> Path:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    write_private(path, content)
    return path


# ---------------------------------------------------------------- apply


class Applier:
    def __init__(self, session: Session, credentials_dir: Path, report: Report) -> None:
        self.session = session
        self.credentials_dir = credentials_dir
        self.report = report
        self._numbers: dict[str, str] = {}  # project id: number

    def run(self, seed: Mapping[str, Any]) -> None:
        projects = seed.get("projects", [])
        self.projects([p["projectId"] for p in projects])
        self.users([u["email"] for u in seed.get("users", [])])
        self.groups(seed.get("groups", []))
        for project in projects:
            for account in project.get("serviceAccounts", []):
                self.service_account(project["projectId"], account)
        for project in projects:
            for pool in project.get("workloadIdentityPools", []):
                self.workload_pool(project["projectId"], pool)
        for project in projects:
            pid = project["projectId"]
            self.bindings(f"/v1/projects/{pid}", "project", pid, project.get("bindings", []))
            for account in project.get("serviceAccounts", []):
                email = account_email(account["accountId"], pid)
                self.bindings(account_resource(email), "serviceAccount", email, account.get("bindings", []))
            for policy in project.get("orgPolicies", []):
                self.org_policy(pid, policy)
        if "metadata" in seed:
            self.metadata(seed["metadata"]["serviceAccount"])

    def projects(self, wanted: list[str]) -> None:
        if not wanted:
            return
        existing = {p["projectId"] for p in self.session.call("GET", "/keyless/v1/projects").get("projects", [])}
        for project in wanted:
            if project in existing:
                self.report.same()
                continue
            self.session.call("POST", "/keyless/v1/projects", {"projectId": project})
            existing.add(project)
            self.report.create(f"Created project [{project}].")

    def users(self, wanted: list[str]) -> None:
        if not wanted:
            return
        existing = {u["email"].lower() for u in self.session.call("GET", "/keyless/v1/users").get("users", [])}
        for email in wanted:
            if email.lower() in existing:
                self.report.same()
                continue
            created = self.session.call("POST", "/keyless/v1/users", {"email": email})
            existing.add(email.lower())
            path = _write_secret(self.credentials_dir, email.lower(),
                                 (json.dumps(created["credentials"], indent=2) + "\n").encode())
            self.report.create(f"Created user [{email}]; credentials written to [{path}].")

    def groups(self, wanted: list[dict[str, Any]]) -> None:
        if not wanted:
            return
        existing = {g["email"]: sorted(g["members"])
                    for g in self.session.call("GET", "/keyless/v1/groups").get("groups", [])}
        for group in wanted:
            email = group["email"].lower()
            members = sorted({member_key(m) for m in group["members"]})
            if existing.get(email) == members:
                self.report.same()
                continue
            self.session.call("PUT", f"/keyless/v1/groups/{email}", {"members": members})
            line = f"Set group [{email}] to {len(members)} member(s)."
            self.report.update(line) if email in existing else self.report.create(line)

    def service_account(self, project: str, spec: Mapping[str, Any]) -> None:
        email = account_email(spec["accountId"], project)
        path = account_resource(email)
        found = self.session.raw("GET", path)
        if found.status == 404:
            body = {k: spec[k] for k in ("displayName", "description") if k in spec}
            current = self.session.call("POST", f"/v1/projects/{project}/serviceAccounts",
                                        {"accountId": spec["accountId"], "serviceAccount": body})
            self.report.create(f"Created service account [{email}].")
        elif found.status >= 400:
            raise api_error(found)
        else:
            current = found.body
            changes = {k: spec[k] for k in ("displayName", "description") if k in spec and current.get(k) != spec[k]}
            if changes:
                self.session.call("PATCH", path, {"serviceAccount": changes, "updateMask": ",".join(changes)})
                self.report.update(f"Updated service account [{email}] ({', '.join(changes)}).")
            else:
                self.report.same()
        if "disabled" in spec and bool(current.get("disabled", False)) != spec["disabled"]:
            verb = "disable" if spec["disabled"] else "enable"
            self.session.call("POST", f"{path}:{verb}", {})
            self.report.update(f"{verb.capitalize()}d service account [{email}].")
        if spec.get("key"):
            self.key_file(email)

    def key_file(self, email: str) -> None:
        target = self.credentials_dir / f"{email}.json"
        keys = self.session.call("GET", f"{account_resource(email)}/keys?keyTypes=USER_MANAGED").get("keys", [])
        live = {str(k["name"]).rsplit("/", 1)[-1] for k in keys if not k.get("disabled")}
        try:
            if json.loads(target.read_text()).get("private_key_id") in live:
                self.report.same()
                return
        except (OSError, ValueError, AttributeError):
            pass
        import base64

        created = self.session.call("POST", f"{account_resource(email)}/keys", {})
        path = _write_secret(self.credentials_dir, email, base64.b64decode(created["privateKeyData"]))
        self.report.create(f"Created a key for [{email}]; key file written to [{path}].")

    def _numbered(self, member: str) -> str:
        """A pool's member with its project's id in place of its number (a seed cannot know the number of a
        project it creates), as the server stores it: with the number."""
        prefix = next((p for p in FEDERATED_PREFIXES if member.startswith(p)), None)
        if prefix is None:
            return member
        project, sep, rest = member[len(prefix):].partition("/")
        if not sep or project.isdigit():
            return member
        if project not in self._numbers:
            self._numbers[project] = str(self.session.call("GET", f"/v1/projects/{project}")["projectNumber"])
        return f"{prefix}{self._numbers[project]}/{rest}"

    def workload_pool(self, project: str, spec: Mapping[str, Any]) -> None:
        pools = f"/v1/projects/{project}/locations/global/workloadIdentityPools"
        self._resource(f"{pools}/{spec['poolId']}", f"{pools}?workloadIdentityPoolId={spec['poolId']}",
                       {k: spec[k] for k in ("displayName", "description", "disabled") if k in spec},
                       f"workload identity pool [{spec['poolId']}]")
        for provider in spec.get("providers", []):
            providers = f"{pools}/{spec['poolId']}/providers"
            wanted = {k: provider[k] for k in ("displayName", "description", "disabled", "attributeMapping",
                                               "attributeCondition", "oidc") if k in provider}
            self._resource(f"{providers}/{provider['providerId']}",
                           f"{providers}?workloadIdentityPoolProviderId={provider['providerId']}", wanted,
                           f"workload identity pool provider [{provider['providerId']}]")

    def _resource(self, path: str, create_path: str, wanted: dict[str, Any], what: str) -> None:
        """Create a pool or provider, or patch the fields that differ (undeleting a deleted one first)."""
        found = self.session.raw("GET", path)
        if found.status == 404:
            self.session.call("POST", create_path, wanted)
            self.report.create(f"Created {what}.")
            return
        if found.status >= 400:
            raise api_error(found)
        current = found.body
        if current.get("state") == "DELETED":
            current = self.session.call("POST", f"{path}:undelete", {})["response"]
            self.report.update(f"Undeleted {what}.")
        changes = {k: v for k, v in wanted.items() if _differs(current.get(k), v)}
        if not changes:
            self.report.same()
            return
        self.session.call("PATCH", f"{path}?updateMask={','.join(changes)}", changes)
        self.report.update(f"Updated {what} ({', '.join(changes)}).")

    def bindings(self, resource_path: str, kind: str, name: str, wanted: list[dict[str, Any]]) -> None:
        if not wanted:
            return
        wanted = [{**b, "members": [self._numbered(m) for m in b["members"]]} for b in wanted]

        changed = False

        def change(policy: dict[str, Any]) -> bool:
            nonlocal changed
            changed = False
            for binding in wanted:
                for member in binding["members"]:
                    changed |= add_binding(policy, member_key(member), binding["role"], binding.get("condition"))
            return changed

        modify(self.session, resource_path, change)
        if changed:
            self.report.update(f"Updated IAM policy for {kind} [{name}].")
        else:
            self.report.same()

    def org_policy(self, project: str, spec: Mapping[str, Any]) -> None:
        constraint = str(spec["constraint"]).removeprefix("constraints/")
        path = f"/v2/projects/{project}/policies/{constraint}"
        found = self.session.raw("GET", path)
        if found.status == 200 and found.body.get("spec", {}).get("rules") == spec["rules"]:
            self.report.same()
            return
        self.session.call("PATCH", path, {"spec": {"rules": spec["rules"]}})
        line = f"Set policy [{constraint}] on project [{project}]."
        self.report.update(line) if found.status == 200 else self.report.create(line)

    def metadata(self, email: str) -> None:
        current = self.session.call("GET", "/keyless/v1/metadata").get("serviceAccount", "")
        if current == email.lower():
            self.report.same()
            return
        self.session.call("PUT", "/keyless/v1/metadata", {"serviceAccount": email})
        self.report.update(f"Attached [{email}] to the metadata server.")


def credentials_dir_for(seed: Mapping[str, Any], seed_path: Path | str, opts: GlobalOptions,
                        override: Path | None) -> Path:
    if override is not None:
        return override
    if "credentialsDir" in seed:
        base = Path.cwd() if str(seed_path) == "-" else Path(seed_path).resolve().parent
        return base / str(seed["credentialsDir"])
    return opts.resolved_data_dir() / "credentials"


def apply_seed(seed: Mapping[str, Any], session: Session, credentials_dir: Path, *, quiet: bool = False) -> Report:
    report = Report(quiet=quiet)
    Applier(session, credentials_dir, report).run(seed)
    return report


def apply_file(path: Path | str, opts: GlobalOptions, *, credentials_dir: Path | None = None,
               variables: Mapping[str, str] | None = None, quiet: bool = False) -> Report:
    """Load, validate and apply a seed file as ``opts``' active credential (what ``serve --seed`` calls)."""
    seed = load(path, variables)
    report = apply_seed(seed, Session(opts), credentials_dir_for(seed, path, opts, credentials_dir), quiet=quiet)
    if not quiet:
        print(f"Applied [{path}]: {report.summary()}.", file=sys.stderr, flush=True)
    return report


# ---------------------------------------------------------------- export


def _bindings(policy: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for binding in policy.get("bindings", []):
        members = sorted({m for m in binding.get("members", []) if not m.startswith("deleted:")})
        if not members:
            continue
        item: dict[str, Any] = {"role": binding["role"], "members": members}
        condition = binding.get("condition")
        if condition:
            item["condition"] = {k: condition[k] for k in ("title", "description", "expression") if condition.get(k)}
        out.append(item)
    merged: list[dict[str, Any]] = []
    for item in out:
        same = next((m for m in merged if m["role"] == item["role"]
                     and same_condition(m.get("condition"), item.get("condition"))), None)
        if same is None:
            merged.append(item)
        else:
            same["members"] = sorted(set(same["members"]) | set(item["members"]))
    cond = "condition"
    return sorted(merged, key=lambda b: (b["role"], json.dumps(b.get(cond, {}), sort_keys=True)))


def export_state(session: Session) -> dict[str, Any]:
    """The server's state in seed-file form: everything but secrets, in a stable order."""
    from keyless.cli.iam import list_accounts
    from keyless.cli.policy import get_policy

    state: dict[str, Any] = {}
    users = sorted(u["email"] for u in session.call("GET", "/keyless/v1/users").get("users", []))
    if users:
        state["users"] = [{"email": u} for u in users]
    groups = session.call("GET", "/keyless/v1/groups").get("groups", [])
    if groups:
        # Deleted principals are left out, as in bindings: a seed names live principals only.
        state["groups"] = [{"email": g["email"], "members": sorted(m for m in g["members"]
                                                                   if not m.startswith("deleted:"))}
                           for g in sorted(groups, key=lambda g: str(g["email"]))]
    projects = []
    for pid in sorted(p["projectId"] for p in session.call("GET", "/keyless/v1/projects").get("projects", [])):
        project: dict[str, Any] = {"projectId": pid}
        bindings = _bindings(get_policy(session, f"/v1/projects/{pid}"))
        if bindings:
            project["bindings"] = bindings
        accounts = []
        for account in sorted(list_accounts(session, pid), key=lambda a: str(a["email"])):
            item: dict[str, Any] = {"accountId": str(account["email"]).split("@", 1)[0]}
            for key in ("displayName", "description"):
                if account.get(key):
                    item[key] = account[key]
            if account.get("disabled"):
                item["disabled"] = True
            account_bindings = _bindings(get_policy(session, account_resource(account["email"])))
            if account_bindings:
                item["bindings"] = account_bindings
            accounts.append(item)
        if accounts:
            project["serviceAccounts"] = accounts
        pools = _export_pools(session, pid)
        if pools:
            project["workloadIdentityPools"] = pools
        policies = session.call("GET", f"/v2/projects/{pid}/policies").get("policies", [])
        if policies:
            project["orgPolicies"] = [
                {"constraint": str(p["name"]).rsplit("/policies/", 1)[-1], "rules": p["spec"]["rules"]}
                for p in sorted(policies, key=lambda p: str(p["name"]))]
        projects.append(project)
    if projects:
        state["projects"] = _ids_in_members(session, projects)
    attached = session.call("GET", "/keyless/v1/metadata").get("serviceAccount", "")
    if attached and not attached.startswith("deleted:"):
        state["metadata"] = {"serviceAccount": attached}
    return state


def _ids_in_members(session: Session, projects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The projects, their pools' members naming the project by id (as a seed may, apply writes the number back):
    an export applied to another server, where the project's number differs, binds the same pools."""
    ids = {str(session.call("GET", f"/v1/projects/{p['projectId']}")["projectNumber"]): p["projectId"]
           for p in projects}

    def by_id(member: str) -> str:
        for prefix in FEDERATED_PREFIXES:
            number, sep, rest = member[len(prefix):].partition("/")
            if member.startswith(prefix) and sep and number in ids:
                return f"{prefix}{ids[number]}/{rest}"
        return member

    def fix(bindings: list[dict[str, Any]]) -> None:
        for binding in bindings:
            binding["members"] = [by_id(m) for m in binding["members"]]

    for project in projects:
        fix(project.get("bindings", []))
        for account in project.get("serviceAccounts", []):
            fix(account.get("bindings", []))
    return projects


def _export_pools(session: Session, project: str) -> list[dict[str, Any]]:
    """A project's live workload identity pools and providers, in seed form."""
    base = f"/v1/projects/{project}/locations/global/workloadIdentityPools"
    out = []
    for pool in session.call("GET", f"{base}?pageSize=500").get("workloadIdentityPools", []):
        pool_id = str(pool["name"]).rsplit("/", 1)[-1]
        item: dict[str, Any] = {"poolId": pool_id, **{k: pool[k] for k in ("displayName", "description", "disabled")
                                                      if k in pool}}
        providers = session.call("GET", f"{base}/{pool_id}/providers?pageSize=500").get(
            "workloadIdentityPoolProviders", [])
        if providers:
            item["providers"] = [
                {"providerId": str(p["name"]).rsplit("/", 1)[-1],
                 **{k: p[k] for k in ("displayName", "description", "disabled", "attributeMapping",
                                      "attributeCondition", "oidc") if k in p}} for p in providers
                if "oidc" in p]  # X.509 providers are not in seed files yet
        out.append(item)
    return out


def dump_yaml(state: Mapping[str, Any]) -> str:
    import yaml

    return HEADER + str(yaml.safe_dump(dict(state), default_flow_style=False, sort_keys=False, allow_unicode=True,
                                       width=1 << 16))


# ---------------------------------------------------------------- commands


def apply_command(
    file: Annotated[str, typer.Argument(metavar="FILE", help="The seed file, YAML or JSON ('-' for stdin).")],
    credentials_dir: Annotated[Path | None, typer.Option(
        help="Where new users' credentials and key files go (default: the file's credentialsDir, else "
             "DATA_DIR/credentials).")] = None,
    var: Annotated[list[str] | None, typer.Option(
        "--var", help="NAME=VALUE: replace $NAME and ${NAME} in the file before reading it (repeatable).")] = None,
) -> None:
    """Create or update projects, accounts, users, groups, bindings and policies from a seed file."""
    variables: dict[str, str] = {}
    for item in var or []:
        name, eq, value = item.partition("=")
        if not eq or not name:
            raise CliError(f"--var {item!r}: use NAME=VALUE.", exit_code=2)
        variables[name] = value
    apply_file(file, options(), credentials_dir=credentials_dir, variables=variables, quiet=options().quiet)


def export_command(
    output: Annotated[Path | None, typer.Option(help="Write the file here (default: stdout).")] = None,
) -> None:
    """Write the server's state (everything but secrets) as a seed file that apply reproduces."""
    fmt = options().format or "yaml"
    state = export_state(Session())
    if fmt == "yaml":
        text = dump_yaml(state)
    elif fmt == "json":
        text = json.dumps(state, indent=2) + "\n"
    else:
        raise CliError("export writes yaml (the default) or json.", exit_code=2)
    if output is None:
        sys.stdout.write(text)
        return
    output.write_text(text)
    print(f"Exported the state to [{output}].", file=sys.stderr)
