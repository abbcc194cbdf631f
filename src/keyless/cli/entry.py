"""The ``keyless`` console entry point.

``keyless auth print-access-token`` sits in scripts' hot loops, so it is answered with the standard library
alone (typer and the command tree cost most of a start-up); anything else, including that command with an
option this path does not know, goes to the full CLI in ``keyless.cli.main``.
"""

from __future__ import annotations

import sys

_FAST_OPTIONS = ("--lifetime", "--scopes")


def _fast_print_access_token(argv: list[str]) -> bool:
    from keyless.cli.client import CliError, extract_global_options, print_access_token, use_options

    try:
        options, rest = extract_global_options(argv)
    except CliError:
        return False
    values: dict[str, str] = {}
    words: list[str] = []
    i = 0
    while i < len(rest):
        arg = rest[i]
        name, eq, value = arg.partition("=")
        if name in _FAST_OPTIONS:
            if not eq:
                if i + 1 >= len(rest):
                    return False
                value = rest[i + 1]
                i += 1
            values[name] = value
        elif arg.startswith("-"):
            return False  # --help and the like: the full CLI answers them
        else:
            words.append(arg)
        i += 1
    if words != ["auth", "print-access-token"] or options.format is not None:
        return False
    use_options(options)
    try:
        print_access_token(values.get("--lifetime"), values.get("--scopes"))
    except CliError as err:
        print(f"ERROR: (keyless.auth.print-access-token) {err}", file=sys.stderr, flush=True)
        raise SystemExit(err.exit_code) from None
    return True


def main() -> None:
    if not _fast_print_access_token(sys.argv[1:]):
        from keyless.cli.main import main as full_main

        full_main()
