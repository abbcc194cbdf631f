"""gcloud's ``--format`` and ``--flatten`` for the resources commands print.

Supported formats: ``json``, ``yaml``, ``table``, ``value``, ``csv`` and ``none``, each with an optional
projection ``(KEY[:label=LABEL], ...)`` and the attribute ``[no-heading]``. Keys are dotted paths into the
resource (``bindings.role``), may index lists (``bindings[0].role``), and may end in ``.basename()``. As in
gcloud, ``value`` joins list values with ``;``, ``json`` and ``yaml`` sort keys, and a list printed as ``yaml``
puts ``---`` before each resource.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from typing import Any

from keyless.cli.client import CliError, options

FORMATS = ("json", "yaml", "table", "value", "csv", "none")
_SPEC = re.compile(r"^\s*(?P<name>[a-z]+)\s*(?:\[(?P<attrs>[^\]]*)\])?\s*(?:\((?P<keys>.*)\))?\s*$", re.DOTALL)


@dataclass
class Column:
    path: list[str | int | None]  # None: every element of a list
    label: str
    transform: str | None = None


@dataclass
class FormatSpec:
    name: str
    columns: list[Column] = field(default_factory=list)
    attrs: set[str] = field(default_factory=set)


def _split_top(text: str, sep: str = ",") -> list[str]:
    """Split on ``sep`` outside quotes, parentheses and brackets."""
    parts: list[str] = []
    depth = 0
    quote = ""
    current = ""
    for ch in text:
        if quote:
            current += ch
            if ch == quote:
                quote = ""
            continue
        if ch in "\"'":
            quote = ch
        elif ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(current)
            current = ""
            continue
        current += ch
    if current.strip():
        parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def _label_of(key: str) -> str:
    """gcloud's default heading: the last key name, camelCase as CAMEL_CASE, upper case."""
    last = re.sub(r"\(\)$", "", key.split(".")[-1])
    last = re.sub(r"\[\d*\]$", "", last)
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", last).upper()


def parse_key(key: str) -> tuple[list[str | int | None], str | None]:
    transform = None
    match = re.search(r"\.(basename)\(\)$", key)
    if match:
        transform = match.group(1)
        key = key[: match.start()]
    path: list[str | int | None] = []
    for part in key.split("."):
        item = re.fullmatch(r"([A-Za-z_][\w-]*)?((?:\[\d*\])*)", part)
        if item is None:
            raise CliError(f"Invalid --format key '{key}'.", exit_code=2)
        if item.group(1):
            path.append(item.group(1))
        for index in re.findall(r"\[(\d*)\]", item.group(2)):
            path.append(int(index) if index else None)
    return path, transform


def parse_format(text: str) -> FormatSpec:
    match = _SPEC.match(text)
    if not match or match.group("name") not in FORMATS:
        raise CliError(f"Unknown format '{text}': use {', '.join(FORMATS)}, optionally with (KEY, ...).",
                       exit_code=2)
    spec = FormatSpec(match.group("name"))
    spec.attrs = {a.strip() for a in (match.group("attrs") or "").split(",") if a.strip()}
    for item in _split_top(match.group("keys") or ""):
        key, *attrs = _split_top(item, ":")
        label = _label_of(key)
        for attr in attrs:
            name, _, value = attr.partition("=")
            if name.strip() == "label":
                label = value.strip().strip("\"'")
        path, transform = parse_key(key.strip())
        spec.columns.append(Column(path, label, transform))
    return spec


def resolve(resource: Any, path: list[str | int | None]) -> Any:
    value = resource
    for i, step in enumerate(path):
        if step is None:
            if not isinstance(value, list):
                return None
            return [resolve(v, path[i + 1:]) for v in value]
        if isinstance(step, int):
            value = value[step] if isinstance(value, list) and -len(value) <= step < len(value) else None
        elif isinstance(value, dict):
            value = value.get(step)
        elif isinstance(value, list):
            # gcloud lets a key step through a list: bindings.role is every binding's role.
            return [resolve(v, path[i:]) for v in value]
        else:
            return None
        if value is None:
            return None
    return value


def _transform(value: Any, transform: str | None) -> Any:
    if transform == "basename":
        if isinstance(value, list):
            return [_transform(v, transform) for v in value]
        return str(value).rsplit("/", 1)[-1] if value is not None else None
    return value


def scalar(value: Any, list_sep: str = ";") -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, list):
        return list_sep.join(scalar(v, list_sep) for v in value)
    if isinstance(value, dict):
        return list_sep.join(f"{k}={scalar(v, list_sep)}" for k, v in sorted(value.items()))
    return str(value)


def flatten(resources: list[Any], keys: list[str]) -> list[Any]:
    """``--flatten=bindings[].members``: one record per element of each named list."""
    for key in keys:
        path = [p for p in parse_key(key.replace("[]", ""))[0] if isinstance(p, str)]
        out: list[Any] = []
        for resource in resources:
            out.extend(_flatten_one(resource, path))
        resources = out
    return resources


def _flatten_one(resource: Any, path: list[str]) -> list[Any]:
    if not path or not isinstance(resource, dict):
        return [resource]
    head, rest = path[0], path[1:]
    value = resource.get(head)
    elements = value if isinstance(value, list) else [value]
    if isinstance(value, list) and not value:
        elements = [None]
    out = []
    for element in elements:
        for inner in _flatten_one(element, rest) if rest else [element]:
            copy = dict(resource)
            copy[head] = inner
            out.append(copy)
    return out


def _project(resource: Any, columns: list[Column]) -> Any:
    if not columns:
        return resource
    out: dict[str, Any] = {}
    for col in columns:
        value = _transform(resolve(resource, col.path), col.transform)
        keys = [p for p in col.path if isinstance(p, str)] or [col.label]
        target = out
        for k in keys[:-1]:
            target = target.setdefault(k, {})
        target[keys[-1]] = value
    return out


def _yaml(data: Any) -> str:
    import yaml

    return str(yaml.safe_dump(data, default_flow_style=False, sort_keys=True, allow_unicode=True, width=1 << 16))


def render(data: Any, spec: FormatSpec, *, is_list: bool) -> str:
    resources: list[Any] = data if is_list else [data]
    if spec.name == "none":
        return ""
    if spec.name == "json":
        projected = [_project(r, spec.columns) for r in resources]
        return json.dumps(projected if is_list else projected[0], indent=2, sort_keys=True) + "\n"
    if spec.name == "yaml":
        projected = [_project(r, spec.columns) for r in resources]
        if not is_list:
            return _yaml(projected[0])
        return "".join("---\n" + _yaml(r) for r in projected)
    columns = spec.columns
    if not columns:
        if spec.name == "table":
            keys = sorted({k for r in resources if isinstance(r, dict) for k in r})
            columns = [Column([k], _label_of(k)) for k in keys]
        else:
            # value and csv without keys print the resource's scalar fields, sorted by key.
            keys = sorted({k for r in resources if isinstance(r, dict) for k in r})
            columns = [Column([k], _label_of(k)) for k in keys]
    rows = [[_transform(resolve(r, c.path), c.transform) for c in columns] for r in resources]
    if spec.name == "value":
        return "".join("\t".join(scalar(v) for v in row) + "\n" for row in rows)
    if spec.name == "csv":
        import csv
        import io

        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        if "no-heading" not in spec.attrs:
            writer.writerow([c.label.lower() for c in columns])
        writer.writerows([[scalar(v) for v in row] for row in rows])
        return buffer.getvalue()
    return _table(columns, rows, heading="no-heading" not in spec.attrs)


def _table(columns: list[Column], rows: list[list[Any]], *, heading: bool) -> str:
    if not rows:
        return ""
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, show_header=heading, header_style="", pad_edge=False, show_edge=False,
                  padding=(0, 2, 0, 0))
    for col in columns:
        table.add_column(col.label, no_wrap=True, overflow="ignore")
    for row in rows:
        table.add_row(*[scalar(v, ",") for v in row])
    console = Console(width=1 << 14, color_system=None, highlight=False, soft_wrap=True)
    with console.capture() as capture:
        console.print(table)
    return "".join(line.rstrip() + "\n" for line in capture.get().splitlines())


def display(data: Any, default: str, *, is_list: bool = False) -> None:
    """Print ``data`` (a resource, or a list of them) with --format, or the command's default format."""
    opts = options()
    spec = parse_format(opts.format or default)
    if opts.flatten:
        data = flatten(data if is_list else [data], opts.flatten)
        is_list = True
    text = render(data, spec, is_list=is_list)
    sys.stdout.write(text)
    sys.stdout.flush()
    if is_list and not data and spec.name == "table":
        print("Listed 0 items.", file=sys.stderr)


def status(message: str) -> None:
    """A gcloud status line (``Created service account [x].``): stderr, so stdout stays parseable."""
    print(message, file=sys.stderr, flush=True)
