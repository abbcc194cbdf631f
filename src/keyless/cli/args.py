"""Argument helpers shared by the gcloud-shaped commands: durations, resource paths, input and output files."""

from __future__ import annotations

import os
import re
import sys
import urllib.parse
from pathlib import Path
from typing import Annotated

import typer

from keyless.cli.client import CliError, options
from keyless.private_files import write_private

_SA_EMAIL = re.compile(r"^[^@/]+@([a-z][-a-z0-9]{4,28}[a-z0-9])\.iam\.gserviceaccount\.com$")

ProjectOption = Annotated[str | None, typer.Option(
    "--project", help="Project id (default: $CLOUDSDK_CORE_PROJECT, else the server's default project).")]


def project_or_default(project: str | None) -> str:
    return project or options().default_project()


def account_resource(account: str) -> str:
    """The IAM v1 path of a service account given by email or unique id.

    An email names its project (``NAME@PROJECT.iam.gserviceaccount.com``), so a missing account is a 404 there;
    anything else goes through the ``-`` wildcard project, as gcloud does.
    """
    match = _SA_EMAIL.match(account)
    project = match.group(1) if match else "-"
    return f"/v1/projects/{project}/serviceAccounts/{urllib.parse.quote(account, safe='@')}"


def read_input(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise CliError(f"Unable to read file [{path}]: {err.strerror}") from None


def write_output(path: str, data: bytes, *, private: bool = False) -> None:
    if path == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    try:
        if private:
            write_private(path, data)
            return
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
    except OSError as err:
        raise CliError(f"Unable to write file [{path}]: {err.strerror}") from None


def confirm(message: str) -> None:
    """gcloud's prompt: asked on a terminal only, skipped with --quiet; no answer aborts."""
    if options().quiet or not sys.stdin.isatty():
        return
    if not typer.confirm(f"{message}\n\nDo you want to continue?", default=True, err=True):
        raise CliError("Aborted by user.")
