"""The one mapping from keyless's error tree to gRPC: the status code named by the error's canonical ``status``,
its message, and its ``details`` as a ``google.rpc.Status`` in the ``grpc-status-details-bin`` trailer, as Google's
front ends send them (google-api-core and grpc_status.rpc_status.from_call read them back)."""

from __future__ import annotations

import logging
from typing import Any

import grpc
from google.protobuf import any_pb2, json_format
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from keyless.errors import Internal, KeylessError

log = logging.getLogger("keyless.grpc")

_TYPE_PREFIX = "type.googleapis.com/google.rpc."
# The google.rpc detail messages keyless's errors carry (errors.ERROR_INFO, BAD_REQUEST, ...), by their short name.
_DETAIL_TYPES: dict[str, type[Message]] = {
    "ErrorInfo": error_details_pb2.ErrorInfo,
    "BadRequest": error_details_pb2.BadRequest,
    "PreconditionFailure": error_details_pb2.PreconditionFailure,
    "ResourceInfo": error_details_pb2.ResourceInfo,
    "Help": error_details_pb2.Help,
    "LocalizedMessage": error_details_pb2.LocalizedMessage,
}


def status_code(error: KeylessError) -> grpc.StatusCode:
    """The gRPC code of an error: its canonical status has the same name (UNKNOWN for a name gRPC lacks)."""
    return getattr(grpc.StatusCode, error.status, grpc.StatusCode.UNKNOWN)


def detail_message(detail: dict[str, Any]) -> any_pb2.Any | None:
    """One entry of an error's ``details`` (proto3 JSON with its ``@type``) packed as a protobuf ``Any``; None for
    a type this mapping does not know (it is left out rather than sent wrong)."""
    type_url = detail.get("@type", "")
    cls = _DETAIL_TYPES.get(type_url[len(_TYPE_PREFIX):]) if type_url.startswith(_TYPE_PREFIX) else None
    if cls is None:
        return None
    fields = {key: value for key, value in detail.items() if key != "@type"}
    message = json_format.ParseDict(fields, cls(), ignore_unknown_fields=True)
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def rpc_status_of(error: KeylessError) -> status_pb2.Status:
    """The ``google.rpc.Status`` of an error: code, message and the details it carries."""
    status = status_pb2.Status(code=status_code(error).value[0], message=error.message)
    for detail in error.details:
        packed = detail_message(detail)
        if packed is not None:
            status.details.append(packed)
    return status


def grpc_status(error: KeylessError) -> grpc.Status:
    """What a servicer aborts with: the code, the message and the details trailer."""
    return rpc_status.to_status(rpc_status_of(error))


def unexpected(method: str, exc: BaseException) -> Internal:
    """Any exception no part of keyless answered: never a traceback on the wire; the log names the method and the
    exception type only (its text may hold request data)."""
    log.error("internal error on gRPC %s: %s", method, type(exc).__name__)
    return Internal("Internal error encountered.")
