"""The forgery suite on the gRPC surface: forged, altered and expired credentials in the ``authorization`` metadata
are refused with ``UNAUTHENTICATED``, exactly as REST refuses them in its header (``test_forgery.py`` builds them).

In process, on a frozen clock (so expiry is exact): keyless's gRPC server over the world's keyless, on the world's
event loop, called through a grpc.aio channel on the same loop. Each case has its control: the same call with a
good credential is answered."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.iam.v1 import iam_policy_pb2

from keyless.grpc.server import bind, build_server
from tests.security.test_forgery import (
    API_AUD,
    FORGED_ACCESS,
    SIGNATURE_FORGERIES,
    SKEW,
    World,
    _access_forgeries,
    _world,
)

PROBE = "/google.iam.admin.v1.IAM/TestIamPermissions"


@dataclass
class GrpcWorld:
    world: World
    endpoint: str

    def probe(self, bearer: str) -> grpc.StatusCode:
        """TestIamPermissions on the victim (any authenticated caller may ask) with ``bearer``: OK or the error."""
        request = iam_policy_pb2.TestIamPermissionsRequest(
            resource=f"projects/-/serviceAccounts/{self.world.victim.email}", permissions=["iam.serviceAccounts.get"])

        async def call() -> grpc.StatusCode:
            async with grpc.aio.insecure_channel(self.endpoint) as channel:
                method = channel.unary_unary(PROBE, request_serializer=None, response_deserializer=None)
                try:
                    await method(request.SerializeToString(), metadata=[("authorization", f"Bearer {bearer}")],
                                 timeout=20)
                except grpc.aio.AioRpcError as exc:
                    return exc.code()
                return grpc.StatusCode.OK

        return self.world.api.inproc.run(call())  # type: ignore[no-any-return]


def _serving(world: World) -> Iterator[GrpcWorld]:
    inproc = world.api.inproc

    async def start() -> tuple[grpc.aio.Server, int]:
        server = build_server(inproc.keyless, inproc.keyless.limits)  # grpc.aio takes the running loop
        port = bind(server, "127.0.0.1", 0)
        await server.start()
        return server, port

    server, port = inproc.run(start())
    try:
        yield GrpcWorld(world, f"127.0.0.1:{port}")
    finally:
        inproc.run(server.stop(None))


@pytest.fixture
def grpc_world(tmp_path: Path) -> Iterator[GrpcWorld]:
    with _world(tmp_path) as w:
        yield from _serving(w)


@pytest.fixture(scope="module")
def grpc_shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcWorld]:
    with _world(tmp_path_factory.mktemp("grpc-forgery")) as w:
        yield from _serving(w)


def test_controls_are_answered(grpc_shared: GrpcWorld) -> None:
    world = grpc_shared.world
    assert grpc_shared.probe(world.access_token()) == grpc.StatusCode.OK
    assert grpc_shared.probe(world.self_signed()) == grpc.StatusCode.OK


@pytest.mark.parametrize("forgery", list(SIGNATURE_FORGERIES))
def test_forged_self_signed_jwt_is_unauthenticated(grpc_shared: GrpcWorld, forgery: str) -> None:
    world = grpc_shared.world
    forged = SIGNATURE_FORGERIES[forgery](world, world.claims(aud=API_AUD))
    assert grpc_shared.probe(forged) == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("forgery", FORGED_ACCESS)
def test_tampered_access_token_is_unauthenticated(grpc_shared: GrpcWorld, forgery: str) -> None:
    world = grpc_shared.world
    forged = _access_forgeries(world, world.access_token())[forgery]
    assert grpc_shared.probe(forged) == grpc.StatusCode.UNAUTHENTICATED


def test_expired_and_revoked_credentials_are_unauthenticated(grpc_world: GrpcWorld) -> None:
    world = grpc_world.world
    token, revoked, self_signed = world.access_token(), world.access_token(), world.self_signed(lifetime=600)
    assert world.api.client.post("/revoke", data={"token": revoked}).status_code == 200
    assert grpc_world.probe(token) == grpc.StatusCode.OK
    assert grpc_world.probe(revoked) == grpc.StatusCode.UNAUTHENTICATED
    world.api.clock.advance(3600 + SKEW + 1)
    assert grpc_world.probe(token) == grpc.StatusCode.UNAUTHENTICATED
    assert grpc_world.probe(self_signed) == grpc.StatusCode.UNAUTHENTICATED
