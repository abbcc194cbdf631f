"""What the gRPC compatibility tests share: a client whose every call carries the bearer token, without retries."""

from __future__ import annotations

from typing import Any

CALL = {"timeout": 20, "retry": None}  # an error is answered at once: no retries of UNAVAILABLE for a minute


class Authorized:
    """The client's methods with the bearer token in each call's metadata (and no retries)."""

    def __init__(self, client: Any, token: str) -> None:
        self.client = client
        self.token = token

    def __getattr__(self, method: str) -> Any:
        def call(**kwargs: Any) -> Any:
            return getattr(self.client, method)(**kwargs, metadata=[("authorization", f"Bearer {self.token}")],
                                                **CALL)
        return call
