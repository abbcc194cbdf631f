"""Google's JSON shapes of service accounts, keys and key files, as REST's routes import them: they live in
``keyless.service.shapes``, shared with the gRPC wire."""

from keyless.service.shapes import SA_ETAG, created_key_json, key_file, key_json, service_account_json

__all__ = ["SA_ETAG", "created_key_json", "key_file", "key_json", "service_account_json"]
