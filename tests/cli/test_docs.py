"""docs/cli.md and docs/seed.schema.json are generated and current; docs/gcloud.md covers the seed documents; the
docs stand on their own: no reference to files outside the repository, and every relative link resolves."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import jsonschema
import pytest
import typer.main
import yaml

from keyless.cli.docs import render_cli_markdown, render_schema
from keyless.cli.main import app
from keyless.cli.seed_schema import SCHEMA
from tests.conftest import REPO, Server

SEEDS = REPO.parent / "shared" / "seeds"
SEED_COMMANDS = Path(__file__).with_name("seed_gcloud_commands.txt")


def test_cli_reference_is_up_to_date() -> None:
    assert (REPO / "docs" / "cli.md").read_text() == render_cli_markdown(), "run scripts/gen-cli-docs"


def test_seed_schema_is_up_to_date_and_the_example_conforms() -> None:
    assert (REPO / "docs" / "seed.schema.json").read_text() == render_schema(), "run scripts/gen-cli-docs"
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert json.loads(render_schema()) == SCHEMA
    jsonschema.validate(yaml.safe_load((REPO / "docs" / "seed-example.yaml").read_text()), SCHEMA)
    bad = {"projects": [{"projectId": "keyless-dev", "serviceAccounts": [{"accountId": "UPPER"}]}]}
    assert list(jsonschema.Draft202012Validator(SCHEMA).iter_errors(bad))


def _commands() -> set[tuple[str, ...]]:
    found: set[tuple[str, ...]] = set()

    def walk(command: object, path: tuple[str, ...]) -> None:
        found.add(path)
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, (*path, name))

    walk(typer.main.get_command(app), ())
    return found


def _gcloud_commands_in(seeds: Path) -> set[str]:
    found = set()
    for seed in seeds.glob("*.txt"):
        for line in seed.read_text(errors="replace").splitlines():
            match = re.match(r"\s*(gcloud(?: [a-z][-a-z]*)+)", line)
            if match:
                found.add(match.group(1))
    return found


def test_gcloud_page_covers_every_seed_command_with_real_keyless_commands() -> None:
    page = (REPO / "docs" / "gcloud.md").read_text()
    # The seed documents live beside the repository, not in every clone of it: their gcloud commands are kept
    # in tests/cli/seed_gcloud_commands.txt, and checked against the documents wherever they are present.
    seen_in_seeds = set(SEED_COMMANDS.read_text().split("\n")) - {""}
    if SEEDS.is_dir():
        assert seen_in_seeds == _gcloud_commands_in(SEEDS)
    assert "gcloud auth print-access-token" in seen_in_seeds
    for command in seen_in_seeds:
        assert f"`{command}" in page, f"{command} is missing from docs/gcloud.md"

    commands = _commands()
    leaves = {c for c in commands if c and not any(len(d) > len(c) and d[: len(c)] == c for d in commands)}
    for code in re.findall(r"`keyless ([^`]*)`", page):
        words = tuple(code.split())
        assert any(words[: len(leaf)] == leaf for leaf in leaves), f"`keyless {code}` is not a keyless command"


def test_readme_command_line_block_runs_as_written(fresh_server: Server) -> None:
    readme = (REPO / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", readme.split("## The command line", 1)[1], re.S)
    assert block is not None
    keyless_bin = Path(sys.executable).parent / "keyless"
    script = block.group(1).replace("keyless ", f"{keyless_bin} ")
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, timeout=120,
                          env=fresh_server.env())
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "  - user:owner@keyless.local" in lines  # the policy add-iam-policy-binding prints
    assert sum(line.startswith("ya29.") for line in lines) == 1
    assert "signed_url: https://storage.googleapis.com/my-bucket/report.pdf?X-Goog-Algorithm=GOOG4-RSA-SHA256" \
        in proc.stdout


# The pages a reader of the repository alone gets: they must not send them to files beside the checkout.
PAGES = sorted([REPO / "README.md", *(p for p in (REPO / "docs").rglob("*") if p.is_file())])
OUTSIDE = re.compile(r"\.\./shared|shared/(?:spec|seeds)|section \d+(?:\.\d+)* of the spec|spec,? section \d", re.I)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def _page_id(path: Path) -> str:
    return str(path.relative_to(REPO))


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_page_refers_to_nothing_outside_the_repository(page: Path) -> None:
    text = page.read_text(errors="replace")
    found = [f"{_page_id(page)}:{n}: {line.strip()}" for n, line in enumerate(text.splitlines(), 1)
             if OUTSIDE.search(line)]
    assert not found, "references to files outside the repository:\n" + "\n".join(found)


def _strip_fences(markdown: str) -> str:
    return re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", markdown, flags=re.S | re.M)


def _prose(markdown: str) -> str:
    """The text outside fenced code blocks and inline code, where a ``[x](y)`` is a link."""
    return re.sub(r"(`+).*?\1", "", _strip_fences(markdown), flags=re.S)


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, repeats numbered."""
    seen: dict[str, int] = {}
    anchors = set()
    for heading in re.findall(r"^#{1,6}\s+(.*?)\s*#*\s*$", _strip_fences(markdown), flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


MARKDOWN_PAGES = [p for p in PAGES if p.suffix == ".md"]


@pytest.mark.parametrize("page", MARKDOWN_PAGES, ids=_page_id)
def test_relative_links_point_at_files_in_the_repository(page: Path) -> None:
    broken = []
    for target in LINK.findall(_prose(page.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):
            continue  # https:, mailto: ...
        path_part, _, anchor = target.partition("#")
        resolved = (page.parent / unquote(path_part)).resolve() if path_part else page
        if not resolved.is_relative_to(REPO) or not resolved.exists():
            broken.append(f"{target} (no such file in the repository)")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved.read_text()):
            broken.append(f"{target} (no heading with that anchor)")
    assert not broken, f"broken links in {_page_id(page)}:\n" + "\n".join(broken)
