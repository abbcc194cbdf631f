"""Bad input on the gRPC listener that no gRPC client sends, written as raw HTTP/2 frames (``grpc_wire``): calls
that stall before or in the middle of their message, connections that never finish their handshake or sit idle,
oversized metadata, metadata that is not UTF-8, a huge number of entries. Each is answered with a gRPC status or a
closed connection, never a crash or a hang, and the server keeps answering; a credential in metadata that is not
UTF-8 is not written to the log. A real server with short deadlines (``--body-timeout`` and friends at 0.5 s) and
``--max-connections 4``, so that a stall shows up well within the client socket's own timeout."""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc
import pytest

from tests.conftest import Server, start_server
from tests.security.grpc_wire import GOAWAY, HEADERS, RawConnection, frame, grpc_message, request_headers

SIGN_BLOB = "/google.iam.credentials.v1.IAMCredentials/SignBlob"
MAX_CALLS = 4
DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, UNAUTHENTICATED = 4, 8, 16
MARKER = b"SECRET-CREDENTIAL-MARKER"


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    srv = start_server(tmp_path_factory.mktemp("grpc-strict") / "data", "--grpc-port", "0", "--proxy-port", "-1",
                       "--metadata-port", "-1", "--header-timeout", "0.5", "--body-timeout", "0.5",
                       "--keep-alive-timeout", "0.5", "--max-connections", str(MAX_CALLS))
    try:
        yield srv, json.loads((srv.data_dir / "endpoints.json").read_text())["grpc"]
    finally:
        srv.stop()


def connect(endpoint: str) -> RawConnection:
    return RawConnection(endpoint, timeout=10)  # a server that hangs fails the test with the socket's timeout


def assert_still_answering(endpoint: str) -> None:
    """A well-formed call (without credentials) is answered by keyless: UNAUTHENTICATED."""
    with grpc.insecure_channel(endpoint) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            channel.unary_unary(SIGN_BLOB)(b"", timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED, refused.value


@pytest.mark.parametrize("sent", ["headers only", "half a message", "the frame header only"])
def test_a_call_whose_message_never_arrives_is_ended(strict: tuple[Server, str], sent: str) -> None:
    _, endpoint = strict
    conn = connect(endpoint)
    conn.open()
    body = {"headers only": None, "half a message": b"\x00\x00\x00\x00\x64" + b"x" * 10,
            "the frame header only": b"\x00\x00\x00"}[sent]
    conn.start_call(1, SIGN_BLOB, body=body, end=False)
    assert conn.wait_for_end(1) == "trailers"
    assert conn.status == DEADLINE_EXCEEDED
    conn.close()
    assert_still_answering(endpoint)


def test_stalled_calls_at_the_limit_do_not_lock_the_server(strict: tuple[Server, str]) -> None:
    _, endpoint = strict
    stalled = []
    for _ in range(MAX_CALLS + 2):
        conn = connect(endpoint)
        conn.open()
        conn.start_call(1, SIGN_BLOB, end=False)
        stalled.append(conn)
    # Those over the limit are refused at once, the others ended at the deadline.
    for conn in stalled:
        assert conn.wait_for_end(1) == "trailers"
        assert conn.status in (DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED), conn.status
        conn.close()
    assert sum(conn.status == DEADLINE_EXCEEDED for conn in stalled) >= 1
    assert_still_answering(endpoint)


@pytest.mark.parametrize("sent", ["nothing", "the preface only", "a header block never finished"])
def test_a_connection_that_stalls_outside_a_call_is_closed(strict: tuple[Server, str], sent: str) -> None:
    _, endpoint = strict
    conn = connect(endpoint)
    if sent != "nothing":
        conn.open()
    if sent == "a header block never finished":  # HEADERS without END_HEADERS, and no CONTINUATION
        conn.send(frame(HEADERS, 0, 1, request_headers(SIGN_BLOB, endpoint)))
        conn.opened = False  # acknowledge nothing more: any frame now would break the header block
    while (got := conn.next_frame()) is not None:
        if got[0] == GOAWAY:
            break
    conn.close()
    assert_still_answering(endpoint)


BAD_METADATA = {
    "an oversized value": [(b"x-padding", b"a" * 64 * 1024)],
    "an oversized credential": [(b"authorization", b"Bearer " + b"a" * 2 * 1024 * 1024)],
    "a huge number of entries": [(b"x-entry-%d" % i, b"v") for i in range(20000)],
    "a credential that is not UTF-8": [(b"authorization", b"Bearer \xff\xfe" + MARKER)],
    "a user project that is not UTF-8": [(b"x-goog-user-project", b"\xc3\x28" + MARKER)],
    "a user agent that is not UTF-8": [(b"user-agent", b"\xed\xa0\x80" + MARKER)],
    "control characters": [(b"authorization", b"Bearer \x00\x01\r\n" + MARKER)],
}


@pytest.mark.parametrize("case", list(BAD_METADATA))
def test_bad_metadata_is_answered_with_a_status(strict: tuple[Server, str], case: str) -> None:
    srv, endpoint = strict
    conn = connect(endpoint)
    conn.open()
    conn.start_call(1, SIGN_BLOB, BAD_METADATA[case], body=grpc_message(b""))
    ended = conn.wait_for_end(1)
    conn.close()
    if ended == "trailers":
        expected = RESOURCE_EXHAUSTED if "oversized" in case or "number" in case else UNAUTHENTICATED
        assert conn.status == expected, conn.status
    else:  # grpcio may refuse at the HTTP/2 level instead
        assert ended in ("reset", "goaway", "closed"), ended
    assert_still_answering(endpoint)
    log = (srv.data_dir / "server.log").read_bytes()
    assert MARKER not in log and b"Traceback" not in log, log[-2000:]


def test_metadata_http2_forbids_is_refused_before_keyless(strict: tuple[Server, str]) -> None:
    """Upper-case or non-ASCII names, binary values that are not base64: grpcio's HTTP/2 layer ends the stream
    (INTERNAL, its status for a malformed stream) before any handler runs; the server keeps answering."""
    _, endpoint = strict
    for metadata in ([(b"X-Upper", b"v")], [(b"\xff\xfe", b"v")], [(b"x-bin", b"!!!")], [(b"", b"v")]):
        conn = connect(endpoint)
        conn.open()
        conn.start_call(1, SIGN_BLOB, metadata, body=grpc_message(b""))
        assert conn.wait_for_end(1) in ("trailers", "reset", "goaway", "closed")
        conn.close()
    assert_still_answering(endpoint)
