"""Google's proto3 JSON shapes of service accounts, keys and key files: REST sends them as they are, gRPC parses
them into Google's messages (``json_format.ParseDict``), so that both wires give the same answer."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote

import orjson
from cryptography.hazmat.primitives import serialization

from keyless.crypto.keys import public_key_of_cert
from keyless.domain.lifetimes import format_timestamp
from keyless.storage.base import KeyRecord, Project, ServiceAccount

SA_ETAG = base64.b64encode(b"keyless!").decode()
# The forms of a key's public half ``keys.get`` renders (``publicKeyType``).
PUBLIC_KEY_TYPES = ("TYPE_NONE", "TYPE_X509_PEM_FILE", "TYPE_RAW_PUBLIC_KEY")


def service_account_json(sa: ServiceAccount) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": f"projects/{sa.project_id}/serviceAccounts/{sa.email}",
        "projectId": sa.project_id,
        "uniqueId": sa.unique_id,
        "email": sa.email,
        "etag": SA_ETAG,
        "oauth2ClientId": sa.unique_id,
    }
    if sa.display_name:
        out["displayName"] = sa.display_name
    if sa.description:
        out["description"] = sa.description
    if sa.disabled:
        out["disabled"] = True
    return out


def key_json(sa: ServiceAccount, key: KeyRecord, public_key_type: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": f"projects/{sa.project_id}/serviceAccounts/{sa.email}/keys/{key.key_id}",
        "validAfterTime": format_timestamp(key.valid_after),
        "validBeforeTime": format_timestamp(key.valid_before),
        "keyAlgorithm": "KEY_ALG_RSA_2048",
        "keyOrigin": key.key_origin,
        "keyType": key.key_type,
    }
    if key.disabled:
        out["disabled"] = True
    if public_key_type == "TYPE_X509_PEM_FILE":
        out["publicKeyData"] = base64.b64encode(key.certificate_pem).decode()
    elif public_key_type == "TYPE_RAW_PUBLIC_KEY":
        der = public_key_of_cert(key.certificate_pem).public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        out["publicKeyData"] = base64.b64encode(der).decode()
    return out


def key_file(sa: ServiceAccount, key: KeyRecord, private_pem: bytes, base: str | None) -> dict[str, str]:
    """The ``service_account`` credentials file (``TYPE_GOOGLE_CREDENTIALS_FILE``). ``base`` is keyless's URL;
    None (a client that reached keyless as Google's host) gives Google's own URLs, as Google writes them."""
    if base is None:
        token_uri = "https://oauth2.googleapis.com/token"
        certs = "https://www.googleapis.com/oauth2/v1/certs"
        x509 = f"https://www.googleapis.com/robot/v1/metadata/x509/{quote(sa.email)}"
    else:
        token_uri = f"{base}/token"
        certs = f"{base}/oauth2/v1/certs"
        x509 = f"{base}/robot/v1/metadata/x509/{quote(sa.email)}"
    return {
        "type": "service_account",
        "project_id": sa.project_id,
        "private_key_id": key.key_id,
        "private_key": private_pem.decode(),
        "client_email": sa.email,
        "client_id": sa.unique_id,
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": certs,
        "client_x509_cert_url": x509,
        "universe_domain": "googleapis.com",
    }


def created_key_json(sa: ServiceAccount, key: KeyRecord, private_pem: bytes, base: str | None) -> dict[str, Any]:
    out = key_json(sa, key)
    out["privateKeyType"] = "TYPE_GOOGLE_CREDENTIALS_FILE"
    out["privateKeyData"] = base64.b64encode(orjson.dumps(key_file(sa, key, private_pem, base),
                                                          option=orjson.OPT_INDENT_2)).decode()
    return out


def project_v3_json(project: Project) -> dict[str, Any]:
    """Resource Manager v3's Project (REST's ``/v3/projects/{project}`` builds the same in ``http/projects.py``)."""
    return {"name": f"projects/{project.number}", "projectId": project.project_id, "state": "ACTIVE",
            "displayName": project.project_id}
