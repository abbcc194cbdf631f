"""The in-process fixtures of tests/http (``api``, ``sa``), for the security tests that drive the app in process."""

from tests.http.conftest import api, sa

__all__ = ["api", "sa"]
