"""Unknown JSON field names are refused at every depth, as Google's API front end refuses them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from keyless.errors import InvalidArgument


def check_fields(obj: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
    known = set(allowed)
    for name in obj:
        if name not in known:
            raise InvalidArgument(f"Invalid JSON payload received. Unknown name \"{name}\" at '{where}': "
                                  "Cannot find field.", field=f"{where}.{name}")
