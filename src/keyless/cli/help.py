"""Help that reads at 80 columns: click's plain layout (wrapped, never truncated; typer's boxed panels cut
option names short in a narrow terminal), click's metavars (``TEXT``, ``INTEGER``) instead of Python type tags
(``<str>``, ``<list[str]>``), and a long command's options in named groups. ``docs/cli.md`` is rendered from
the same command tree (``keyless.cli.docs``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, get_args, get_origin

import typer
from typer.core import TyperCommand

OPTIONS = "Options"


class GroupedCommand(TyperCommand):
    """Options under headings, in the order of ``groups`` (title -> parameter names); the rest, ``--help``
    included, under "Options" at the end."""

    groups: dict[str, tuple[str, ...]] = {}

    def format_options(self, ctx: Any, formatter: Any) -> None:
        title_of = {name: title for title, names in self.groups.items() for name in names}
        sections: dict[str, list[tuple[str, str]]] = {title: [] for title in self.groups}
        sections[OPTIONS] = []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None:
                sections[title_of.get(param.name, OPTIONS)].append(record)
        for title, rows in sections.items():
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


def grouped_command(groups: dict[str, tuple[str, ...]]) -> type[GroupedCommand]:
    return type("GroupedCommand", (GroupedCommand,), {"groups": groups})


def plain_app(**kwargs: Any) -> typer.Typer:
    """A ``typer.Typer`` whose help is click's plain layout."""
    return typer.Typer(rich_markup_mode=None, **kwargs)


_METAVARS = {"str": "TEXT", "int": "INTEGER", "float": "NUMBER", "bool": "BOOL"}


def _metavar(param: Any) -> str | None:
    """Click's name for an option's type (None: keep typer's, e.g. a list of choices)."""
    desc = param.type_descriptor
    if desc.is_choice:
        return None
    if desc.is_path:
        return "PATH"
    annotation = desc.annotation
    if get_origin(annotation) is list:
        annotation = get_args(annotation)[0]
    return _METAVARS.get(getattr(annotation, "__name__", ""), "VALUE")


def _walk(command: Any) -> Iterator[Any]:
    yield command
    for sub in getattr(command, "commands", {}).values():
        yield from _walk(sub)


def _no_type_tag(ctx: Any) -> None:
    return None


def tidy(root: Any) -> Any:
    """Give every option that takes a value a click metavar, and show arguments by name alone (``NAME``, as
    click does, rather than ``NAME <str>``), in the whole tree; returns ``root``."""
    for command in _walk(root):
        for param in command.params:
            if param.param_type_name == "argument":
                param.display_type_rich = _no_type_tag
            elif not param.is_flag and param.metavar is None:
                param.metavar = _metavar(param)
    return root
