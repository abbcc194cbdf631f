"""`keyless debug advance-clock`: a token minted by the CLI is refused once the server's clock passes its expiry."""

from __future__ import annotations

from pathlib import Path

import requests

from tests.cli.support import TOKEN_CREATOR, create_sa, kl, tokeninfo
from tests.conftest import Server, start_server


def test_advancing_the_clock_past_expiry_refuses_the_token(fresh_server: Server) -> None:
    target = create_sa(fresh_server, "clock")
    kl(fresh_server, "iam", "service-accounts", "add-iam-policy-binding", target,
       "--member=user:owner@keyless.local", f"--role={TOKEN_CREATOR}")
    token = kl(fresh_server, "auth", "print-access-token", "--impersonate-service-account", target,
               "--lifetime", "30m").stdout.strip()

    def describe_with(tok: str) -> requests.Response:
        return requests.get(f"{fresh_server.url}/v1/projects/-/serviceAccounts/{target}", timeout=30,
                            headers={"Authorization": f"Bearer {tok}"})

    assert tokeninfo(fresh_server, token).status_code == 200
    assert describe_with(token).status_code == 403  # authenticated; the target may not describe itself

    out = kl(fresh_server, "debug", "advance-clock", "29m")
    assert out.stderr.startswith("Advanced the clock by 1740s; server time is now [")
    assert tokeninfo(fresh_server, token).status_code == 200  # one minute left

    kl(fresh_server, "debug", "advance-clock", "2m", "--format=value(now)")
    assert tokeninfo(fresh_server, token).json() == {"error": "invalid_token", "error_description": "Invalid Value"}
    expired = describe_with(token)
    assert expired.status_code == 401 and expired.json()["error"]["status"] == "UNAUTHENTICATED"
    # A new token is minted on the server's new time and works.
    fresh = kl(fresh_server, "auth", "print-access-token", "--impersonate-service-account", target).stdout.strip()
    assert tokeninfo(fresh_server, fresh).status_code == 200


def test_advance_clock_is_refused_without_time_travel(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "data")
    try:
        refused = kl(srv, "debug", "advance-clock", "2h", expect=1)
        assert refused.stderr == ("ERROR: (keyless.debug.advance-clock) FAILED_PRECONDITION: Time travel is off: "
                                  "start the server with --allow-time-travel.\n")
        assert kl(srv, "debug", "advance-clock", "later", expect=2).stderr.startswith(
            "ERROR: (keyless.debug.advance-clock) DURATION: invalid duration 'later'")
    finally:
        srv.stop()
