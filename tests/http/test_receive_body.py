"""``receive_body``: the bounded request body read straight from ASGI messages (the credential verbs use it)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import pytest
from starlette.requests import ClientDisconnect
from starlette.types import Message

from keyless.errors import PayloadTooLarge
from keyless.http.common import receive_body


def _receiver(messages: Iterable[Message]) -> object:
    queue = list(messages)

    async def receive() -> Message:
        return queue.pop(0)

    return receive


def _read(messages: list[Message], limit: int = 10, declared: str | None = None) -> bytes:
    return asyncio.run(receive_body(_receiver(messages), limit, declared))  # type: ignore[arg-type]


def test_a_body_sent_in_chunks_is_joined() -> None:
    chunks = [{"type": "http.request", "body": b"ab", "more_body": True},
              {"type": "http.request", "body": b"", "more_body": True},
              {"type": "http.request", "body": b"cde", "more_body": False}]
    assert _read(chunks) == b"abcde"


def test_a_body_of_exactly_the_limit_is_read() -> None:
    assert _read([{"type": "http.request", "body": b"x" * 10}]) == b"x" * 10
    assert _read([{"type": "http.request", "body": b"x" * 5, "more_body": True},
                  {"type": "http.request", "body": b"x" * 5}]) == b"x" * 10


@pytest.mark.parametrize("messages", [
    [{"type": "http.request", "body": b"x" * 11}],
    [{"type": "http.request", "body": b"x" * 6, "more_body": True}, {"type": "http.request", "body": b"x" * 5}],
    # Refused as soon as the chunks so far are over the limit: the rest is never waited for.
    [{"type": "http.request", "body": b"x" * 11, "more_body": True}],
])
def test_a_body_over_the_limit_is_refused(messages: list[Message]) -> None:
    with pytest.raises(PayloadTooLarge):
        _read(messages)


def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    with pytest.raises(PayloadTooLarge):
        _read([], declared="11")
    assert _read([{"type": "http.request", "body": b"ok"}], declared="2") == b"ok"


@pytest.mark.parametrize("messages", [
    [{"type": "http.disconnect"}],
    [{"type": "http.request", "body": b"ab", "more_body": True}, {"type": "http.disconnect"}],
])
def test_a_client_that_leaves_mid_body_is_a_disconnect(messages: list[Message]) -> None:
    with pytest.raises(ClientDisconnect):
        _read(messages)
