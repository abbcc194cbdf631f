"""A few HTTP/2 frames by hand, for what no gRPC client sends: a call that stops half-way, metadata that is not
UTF-8 or far too large. Only what the tests need: the client preface, HEADERS with literal (unindexed, not Huffman
coded) header fields, DATA, and reading frames back until a stream ends or the connection closes. Answers are not
HPACK-decoded in general: a test sees whether its stream was ended (trailers or RST_STREAM) or the connection closed,
and the ``grpc-status`` of the first answer on a connection, which grpc core sends as a literal field (a plain key
and value; later answers on the connection refer to its dynamic table)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterable

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, CONTINUATION = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7, 0x9
MAX_FRAME = 16384  # HTTP/2's default SETTINGS_MAX_FRAME_SIZE
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def _integer(value: int, prefix_bits: int) -> bytes:
    """HPACK's integer with an N-bit prefix (the prefix's flag bits zero)."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([value])
    out = bytearray([limit])
    value -= limit
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    out.append(value)
    return bytes(out)


def literal(name: bytes, value: bytes) -> bytes:
    """A literal header field without indexing, new name, neither Huffman coded."""
    return b"\x00" + _integer(len(name), 7) + name + _integer(len(value), 7) + value


def request_headers(method: str, authority: str, metadata: Iterable[tuple[bytes, bytes]] = ()) -> bytes:
    fields = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", method.encode()),
              (b":authority", authority.encode()), (b"content-type", b"application/grpc"), (b"te", b"trailers"),
              *metadata]
    return b"".join(literal(name, value) for name, value in fields)


def grpc_message(message: bytes) -> bytes:
    """gRPC's length-prefixed message: uncompressed flag, 4-byte length, the bytes."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def _literal_status(block: bytes) -> int | None:
    """The ``grpc-status`` of a header block when it is a literal field with a plain (not Huffman coded) key and
    value, else None."""
    at = block.find(b"\x0bgrpc-status")
    if at < 0:
        return None
    length_at = at + len(b"\x0bgrpc-status")
    if length_at >= len(block) or block[length_at] & 0x80:  # Huffman coded: not read here
        return None
    value = block[length_at + 1:length_at + 1 + block[length_at]]
    return int(value) if value.isdigit() else None


class RawConnection:
    """One HTTP/2 connection to a gRPC listener, written frame by frame."""

    def __init__(self, endpoint: str, *, timeout: float = 60.0) -> None:
        host, _, port = endpoint.rpartition(":")
        self.authority = endpoint
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.buffer = b""
        self.closed = False
        self.status: int | None = None  # the grpc-status of the stream ``wait_for_end`` waited for, when literal
        self.opened = False  # SETTINGS and PINGs are acknowledged only after the client preface

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def open(self) -> None:
        """The client preface and empty SETTINGS."""
        self.send(PREFACE + frame(SETTINGS, 0, 0))
        self.opened = True

    def start_call(self, stream: int, method: str, metadata: Iterable[tuple[bytes, bytes]] = (),
                   body: bytes | None = None, *, end: bool = True) -> None:
        """HEADERS (and CONTINUATION frames for a large block) for ``method`` on ``stream``; then ``body`` as DATA
        (END_STREAM when ``end``), or nothing."""
        block = request_headers(method, self.authority, metadata)
        chunks = [block[i:i + MAX_FRAME] for i in range(0, len(block), MAX_FRAME)]
        for index, chunk in enumerate(chunks):
            flags = END_HEADERS if index == len(chunks) - 1 else 0
            if index == 0:
                self.send(frame(HEADERS, flags | (END_STREAM if body is None and end else 0), stream, chunk))
            else:
                self.send(frame(CONTINUATION, flags, stream, chunk))
        if body is not None:
            self.send(frame(DATA, END_STREAM if end else 0, stream, body))

    def next_frame(self) -> tuple[int, int, int, bytes] | None:
        """The next frame (kind, flags, stream, payload), None once the server closed the connection. SETTINGS
        and PINGs are acknowledged as they come."""
        while True:
            if len(self.buffer) >= 9:
                length = int.from_bytes(self.buffer[:3], "big")
                if len(self.buffer) >= 9 + length:
                    head, payload = self.buffer[:9], self.buffer[9:9 + length]
                    self.buffer = self.buffer[9 + length:]
                    kind, flags, stream = head[3], head[4], int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
                    if kind == SETTINGS and not flags & ACK and self.opened:
                        self.send(frame(SETTINGS, ACK, 0))
                    elif kind == PING and not flags & ACK and self.opened:
                        self.send(frame(PING, ACK, 0, payload))
                    return kind, flags, stream, payload
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                chunk = b""
            if not chunk:
                self.closed = True
                return None
            self.buffer += chunk

    def wait_for_end(self, stream: int) -> str:
        """Read until ``stream`` ends: "trailers" (HEADERS with END_STREAM), "reset" (RST_STREAM), "goaway" or
        "closed" (the connection). Also how long it took, in ``self.waited``."""
        started = time.monotonic()
        try:
            while True:
                got = self.next_frame()
                if got is None:
                    return "closed"
                kind, flags, on, payload = got
                if kind == GOAWAY:
                    return "goaway"
                if on == stream and kind == RST_STREAM:
                    return "reset"
                if on == stream and kind == HEADERS:
                    self.status = self.status if self.status is not None else _literal_status(payload)
                    if flags & END_STREAM:
                        return "trailers"
        finally:
            self.waited = time.monotonic() - started

    def close(self) -> None:
        self.sock.close()
