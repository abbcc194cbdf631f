"""A bounded fuzz run of the gRPC surface, in process: every served method of every service gets random bytes and
mutated valid messages as its request (sent raw, as bytes, through a grpc.aio channel), as the owner. Every call
must end with a gRPC status that is not ``INTERNAL`` or ``UNKNOWN`` (an answer of keyless, not an exception that
escaped it), and the server keeps answering: a valid call afterwards succeeds. Methods keyless does not serve, and
``google.iam.v1.IAMPolicy`` (which Google does not serve at these hosts either), answer ``UNIMPLEMENTED``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.cloud import iam_credentials_v1
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from keyless.grpc import admin, credentials, projects
from tests.security.test_forgery import World, _world
from tests.security.test_grpc_forgery import GrpcWorld, _serving

EXAMPLES = 40
CREDENTIAL_TYPES = {name: getattr(iam_credentials_v1.types, f"{name}Request").pb() for name in credentials.METHODS}
METHODS: dict[str, Any] = {
    **{f"/{credentials.SERVICE}/{name}": cls for name, cls in CREDENTIAL_TYPES.items()},
    **{f"/{admin.SERVICE}/{name}": method.request for name, method in admin.METHODS.items()},
    **{f"/{projects.SERVICE}/{name}": method.request for name, method in projects.METHODS.items()},
}
REFUSED = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcWorld]:
    with _world(tmp_path_factory.mktemp("grpc-fuzz")) as w:
        yield from _serving(w)


def _valid(world: World, cls: Any) -> bytes:
    """A message of ``cls`` that names the victim account (or the project) where it has a name."""
    message = cls()
    account = f"projects/-/serviceAccounts/{world.victim.email}"
    for field, value in (("name", account), ("resource", account), ("parent", "projects/keyless-dev")):
        if field in cls.DESCRIPTOR.fields_by_name:
            setattr(message, field, value)
    if "payload" in cls.DESCRIPTOR.fields_by_name:
        message.payload = b'{"sub": "x"}' if isinstance(message.payload, bytes) else '{"sub": "x"}'
    return bytes(message.SerializeToString())


@st.composite
def requests(draw: st.DrawFn, valid: bytes) -> bytes:
    kind = draw(st.sampled_from(["random", "flipped", "truncated", "appended", "repeated"]))
    if kind == "random" or not valid:
        return draw(st.binary(max_size=512))
    if kind == "flipped":
        at = draw(st.integers(0, len(valid) - 1))
        return valid[:at] + bytes([valid[at] ^ draw(st.integers(1, 255))]) + valid[at + 1:]
    if kind == "truncated":
        return valid[:draw(st.integers(0, len(valid) - 1))]
    if kind == "appended":
        return valid + draw(st.binary(min_size=1, max_size=64))
    return valid * draw(st.integers(2, 4))


def _call(fuzzed: GrpcWorld, method: str, body: bytes) -> tuple[grpc.StatusCode, str]:
    token = fuzzed.world.api.owner_token

    async def call() -> tuple[grpc.StatusCode, str]:
        async with grpc.aio.insecure_channel(fuzzed.endpoint) as channel:
            stub = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
            try:
                await stub(body, metadata=[("authorization", f"Bearer {token}")], timeout=20)
            except grpc.aio.AioRpcError as exc:
                return exc.code(), exc.details() or ""
            return grpc.StatusCode.OK, ""

    return fuzzed.world.api.inproc.run(call())  # type: ignore[no-any-return]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_answers_garbage_with_a_status(fuzzed: GrpcWorld, method: str) -> None:
    valid = _valid(fuzzed.world, METHODS[method])
    failures: list[str] = []

    @settings(max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(body=requests(valid))
    def run(body: bytes) -> None:
        code, details = _call(fuzzed, method, body)
        if code in REFUSED:
            failures.append(f"{code.name} {details!r} for {body[:200]!r}")

    run()
    assert not failures, f"{len(failures)} bad answers on {method}:\n" + "\n".join(failures[:10])
    # The server still answers a valid call.
    code, details = _call(fuzzed, f"/{projects.SERVICE}/GetProject",
                          projects.METHODS["GetProject"].request(name="projects/keyless-dev").SerializeToString())
    assert code == grpc.StatusCode.OK, (code, details)


@pytest.mark.parametrize("method", ["/google.iam.admin.v1.IAM/ListRoles", "/google.iam.v1.IAMPolicy/GetIamPolicy",
                                    "/google.iam.v1.IAMPolicy/SetIamPolicy", "/no.such.Service/Method"])
def test_methods_not_served_are_unimplemented(fuzzed: GrpcWorld, method: str) -> None:
    assert _call(fuzzed, method, b"\x0a\x03abc")[0] == grpc.StatusCode.UNIMPLEMENTED


@pytest.mark.parametrize("seconds, nanos", [(10**12, 0), (5, -3), (-5, 3), (0, 10**9)])
def test_a_duration_out_of_protobufs_range_is_invalid_argument(fuzzed: GrpcWorld, seconds: int, nanos: int) -> None:
    """A ``lifetime`` that parses but is no valid Duration (beyond 10,000 years, a sign mismatch, nanos of a whole
    second): the method's ``INVALID_ARGUMENT`` naming the field, as REST's bad ``"lifetime"`` (it was ``INTERNAL``:
    recording the request's fields for the audit entry failed on it)."""
    cls = CREDENTIAL_TYPES["GenerateAccessToken"]
    message = cls.FromString(_valid(fuzzed.world, cls))
    message.lifetime.seconds, message.lifetime.nanos = seconds, nanos
    code, details = _call(fuzzed, f"/{credentials.SERVICE}/GenerateAccessToken", message.SerializeToString())
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)
    assert "lifetime" in details


@given(scope=st.lists(st.text(max_size=20), max_size=3), delegates=st.lists(st.text(max_size=20), max_size=3),
       lifetime=st.none() | st.tuples(st.integers(0, 10**6), st.integers(0, 10**9 - 1)),
       audience=st.text(max_size=20), include_email=st.booleans())
@settings(max_examples=200, deadline=None, database=None)
def test_the_recorded_request_fields_are_the_messages_json(scope: list[str], delegates: list[str],
                                                           lifetime: tuple[int, int] | None, audience: str,
                                                           include_email: bool) -> None:
    """The fields an entry records are read off the message directly (proto3 JSON was built for each call, a tenth
    of keyless's own time per call): the same as ``MessageToDict`` names them, field for field."""
    from google.protobuf import json_format

    from keyless.service import audit

    name = "projects/-/serviceAccounts/a@p.iam.gserviceaccount.com"
    for method, cls in CREDENTIAL_TYPES.items():
        message = cls(name=name, delegates=delegates)
        if method == "GenerateAccessToken":
            message.scope.extend(scope)
            if lifetime is not None:
                message.lifetime.seconds, message.lifetime.nanos = lifetime
        elif method == "GenerateIdToken":
            message.audience, message.include_email = audience, include_email
        as_json = json_format.MessageToDict(message)
        expected = {"name": name, **{key: as_json[key] for key in audit.CREDENTIAL_REQUEST_FIELDS if key in as_json}}
        assert credentials.request_fields(message) == expected
