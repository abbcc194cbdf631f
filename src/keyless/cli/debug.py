"""``keyless debug advance-clock``: move a test server's clock forward (``keyless serve --allow-time-travel``).

Tokens, keys and signatures are judged by the server's clock, so advancing it past a token's expiry makes the
token fail exactly as it would once that time has passed. The server refuses unless it was started with
``--allow-time-travel``; a server backed by PostgreSQL refusing it is future work.
"""

from __future__ import annotations

from typing import Annotated

import typer

from keyless.cli.client import Session, parse_duration
from keyless.cli.formatting import display, status
from keyless.cli.help import plain_app

app = plain_app(help="Test helpers for servers started with --allow-time-travel.", no_args_is_help=True)


@app.command("advance-clock")
def advance_clock(
    duration: Annotated[str, typer.Argument(metavar="DURATION", help="How far: 90s, 10m, 2h, 1d, or seconds.")],
) -> None:
    """Move the server's clock forward (owner only)."""
    seconds = parse_duration(duration, "DURATION")
    result = Session().call("POST", "/keyless/v1/debug/clock:advance", {"seconds": seconds})
    status(f"Advanced the clock by {seconds}s; server time is now [{result['now']}].")
    display(result, "none")
