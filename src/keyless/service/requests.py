"""The typed requests and results of the IAM Credentials operations.

A wire adapter (REST's JSON, gRPC's messages) parses its format into one of these requests, calls the core
(``keyless.service.credentials.Credentials``) and renders the result it gets back: the rules live in the core,
each wire shape in its adapter. What an adapter has already checked is the form (a list of strings, base64,
a Duration); what the core checks is the substance (how many scopes, which lifetime, who may).
"""

from __future__ import annotations

from dataclasses import dataclass

from keyless.domain.names import AccountRef


@dataclass(frozen=True, slots=True)
class GenerateAccessTokenRequest:
    account: AccountRef
    scopes: tuple[str, ...]
    delegates: tuple[AccountRef, ...] = ()
    lifetime: float | None = None  # seconds; None asks for the default


@dataclass(frozen=True, slots=True)
class AccessToken:
    token: str
    expire_time: int  # seconds since the epoch


@dataclass(frozen=True, slots=True)
class GenerateIdTokenRequest:
    account: AccountRef
    audience: str
    delegates: tuple[AccountRef, ...] = ()
    include_email: bool = False
    use_email_azp: bool = False
    organization_number_included: bool = False


@dataclass(frozen=True, slots=True)
class IdToken:
    token: str


@dataclass(frozen=True, slots=True)
class SignBlobRequest:
    account: AccountRef
    payload: bytes
    delegates: tuple[AccountRef, ...] = ()
    # IAM v1's deprecated projects.serviceAccounts.signBlob: a project may be named and the API is iam's.
    iam_v1: bool = False


@dataclass(frozen=True, slots=True)
class SignedBlob:
    key_id: str
    signature: bytes


@dataclass(frozen=True, slots=True)
class SignJwtRequest:
    account: AccountRef
    payload: str  # a JSON object serialized as text, signed as sent
    delegates: tuple[AccountRef, ...] = ()
    iam_v1: bool = False


@dataclass(frozen=True, slots=True)
class SignedJwt:
    key_id: str
    jwt: str
