"""The JSON Schema of seed files (``keyless apply``, ``keyless serve --seed``, ``keyless export``).

``scripts/gen-cli-docs`` writes it to ``docs/seed.schema.json``; a test keeps the two identical.
"""

from __future__ import annotations

from typing import Any

SCHEMA_ID = "urn:keyless:seed-file:v1"
_ID = r"^[a-z][-a-z0-9]{4,28}[a-z0-9]$"
_EMAIL = r"^[^@\s:/]+@[^@\s:/]+$"

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": SCHEMA_ID,
    "title": "keyless seed file",
    "description": (
        "Projects, service accounts, users, groups, allow-policy bindings (with conditions), org-policy "
        "constraints, workload identity pools and their OIDC providers, and the metadata server's attached "
        "account, applied idempotently by `keyless apply FILE` "
        "and `keyless serve --seed FILE`, and written by `keyless export`. Apply creates what is missing and "
        "updates what differs; it adds bindings and never removes one."),
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "credentialsDir": {
            "type": "string",
            "description": (
                "Where apply writes the secrets it creates: EMAIL.json for each new user (an authorized_user "
                "file) and for each service account with `key: true` (a service_account key file). Relative to "
                "the seed file's directory. `--credentials-dir` overrides it; the default is "
                "DATA_DIR/credentials."),
        },
        "users": {"type": "array", "items": {"$ref": "#/$defs/user"},
                  "description": "Human callers (user: members). Existing users are kept as they are."},
        "groups": {"type": "array", "items": {"$ref": "#/$defs/group"},
                   "description": "Groups for group: members. A group's members are set to exactly this list."},
        "projects": {"type": "array", "items": {"$ref": "#/$defs/project"}},
        "metadata": {"$ref": "#/$defs/metadata"},
    },
    "$defs": {
        "email": {"type": "string", "pattern": _EMAIL},
        "member": {
            "type": "string",
            "description": "user:EMAIL, serviceAccount:EMAIL, group:EMAIL, domain:DOMAIN, allUsers, ...",
            "pattern": r"^((user|serviceAccount|group|domain):\S+|allUsers|allAuthenticatedUsers"
                       r"|principal(Set)?://\S+)$",
        },
        "user": {
            "type": "object",
            "additionalProperties": False,
            "required": ["email"],
            "properties": {"email": {"$ref": "#/$defs/email"}},
        },
        "group": {
            "type": "object",
            "additionalProperties": False,
            "required": ["email", "members"],
            "properties": {
                "email": {"$ref": "#/$defs/email"},
                "members": {"type": "array", "items": {
                    "type": "string", "pattern": r"^(user|serviceAccount):\S+$"}},
            },
        },
        "condition": {
            "type": "object",
            "additionalProperties": False,
            "required": ["expression", "title"],
            "properties": {
                "expression": {"type": "string", "minLength": 1,
                               "description": "CEL over request.time, resource.name, resource.type, ..."},
                "title": {"type": "string", "minLength": 1},
                "description": {"type": "string"},
            },
        },
        "binding": {
            "type": "object",
            "additionalProperties": False,
            "required": ["role", "members"],
            "properties": {
                "role": {"type": "string", "pattern": r"^roles/\S+$"},
                "members": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/member"}},
                "condition": {"$ref": "#/$defs/condition"},
            },
        },
        "bindings": {"type": "array", "items": {"$ref": "#/$defs/binding"},
                     "description": "Added to the resource's allow policy (existing bindings are kept)."},
        "serviceAccount": {
            "type": "object",
            "additionalProperties": False,
            "required": ["accountId"],
            "properties": {
                "accountId": {"type": "string", "pattern": _ID, "description": "EMAIL is accountId@PROJECT."
                              "iam.gserviceaccount.com"},
                "displayName": {"type": "string", "maxLength": 100},
                "description": {"type": "string", "maxLength": 256},
                "disabled": {"type": "boolean", "description": "Absent: left as it is."},
                "key": {"type": "boolean", "description": (
                    "Keep a user-managed key file at CREDENTIALS_DIR/EMAIL.json: created when the file is "
                    "missing or names a key the account no longer has. Never exported.")},
                "bindings": {"$ref": "#/$defs/bindings"},
            },
        },
        "orgPolicy": {
            "type": "object",
            "additionalProperties": False,
            "required": ["constraint", "rules"],
            "properties": {
                "constraint": {"type": "string",
                               "enum": ["iam.allowServiceAccountCredentialLifetimeExtension",
                                        "constraints/iam.allowServiceAccountCredentialLifetimeExtension"]},
                "rules": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/orgPolicyRule"},
                          "description": "The Org Policy v2 spec.rules, set as given."},
            },
        },
        "orgPolicyRule": {
            "oneOf": [
                {"type": "object", "additionalProperties": False, "required": ["allowAll"],
                 "properties": {"allowAll": {"const": True}}},
                {"type": "object", "additionalProperties": False, "required": ["denyAll"],
                 "properties": {"denyAll": {"const": True}}},
                {"type": "object", "additionalProperties": False, "required": ["values"],
                 "properties": {"values": {
                     "type": "object", "additionalProperties": False, "required": ["allowedValues"],
                     "properties": {"allowedValues": {"type": "array", "items": {"type": "string"}}}}}},
            ],
        },
        "project": {
            "type": "object",
            "additionalProperties": False,
            "required": ["projectId"],
            "properties": {
                "projectId": {"type": "string", "pattern": _ID},
                "bindings": {"$ref": "#/$defs/bindings"},
                "serviceAccounts": {"type": "array", "items": {"$ref": "#/$defs/serviceAccount"}},
                "orgPolicies": {"type": "array", "items": {"$ref": "#/$defs/orgPolicy"}},
                "workloadIdentityPools": {"type": "array", "items": {"$ref": "#/$defs/workloadIdentityPool"}},
            },
        },
        "workloadIdentityPool": {
            "type": "object",
            "additionalProperties": False,
            "required": ["poolId"],
            "description": ("A workload identity pool (workload identity federation). A binding may name its "
                            "members with the project's id in place of its number (principalSet://iam."
                            "googleapis.com/projects/PROJECT_ID/locations/global/workloadIdentityPools/...): "
                            "apply writes the number."),
            "properties": {
                "poolId": {"type": "string", "pattern": r"^[a-z0-9-]{4,32}$"},
                "displayName": {"type": "string", "maxLength": 32},
                "description": {"type": "string", "maxLength": 256},
                "disabled": {"type": "boolean"},
                "providers": {"type": "array", "items": {"$ref": "#/$defs/workloadIdentityPoolProvider"}},
            },
        },
        "workloadIdentityPoolProvider": {
            "type": "object",
            "additionalProperties": False,
            "required": ["providerId", "oidc", "attributeMapping"],
            "description": "An OIDC provider of the pool.",
            "properties": {
                "providerId": {"type": "string", "pattern": r"^[a-z0-9-]{4,32}$"},
                "displayName": {"type": "string", "maxLength": 32},
                "description": {"type": "string", "maxLength": 256},
                "disabled": {"type": "boolean"},
                "attributeMapping": {"type": "object", "additionalProperties": {"type": "string"},
                                     "description": "google.subject (required), google.groups, attribute.NAME: "
                                                    "CEL over assertion."},
                "attributeCondition": {"type": "string"},
                "oidc": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["issuerUri"],
                    "properties": {
                        "issuerUri": {"type": "string", "pattern": "^(https://|http://(127\\.|\\[::1\\]|localhost))"},
                        "allowedAudiences": {"type": "array", "items": {"type": "string"}},
                        "jwksJson": {"type": "string", "description": "The issuer's JWKS; without it keyless "
                                                                      "discovers the issuer's keys."},
                    },
                },
            },
        },
        "metadata": {
            "type": "object",
            "additionalProperties": False,
            "required": ["serviceAccount"],
            "properties": {"serviceAccount": {"$ref": "#/$defs/email",
                                              "description": "The account the metadata server serves."}},
        },
    },
}
