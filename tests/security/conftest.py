"""Fixtures of the security suite: ``api`` (the in-process app on the frozen clock with an owner session), as in
``tests/http``."""

from __future__ import annotations

from tests.http.conftest import api

__all__ = ["api"]
