"""Code that impersonates a service account to sign Cloud Storage URLs, tested against keyless.

This is the example of docs/pytest-plugin.md, as written there (tests/plugin/test_plugin_docs.py keeps the two
identical). The code under test is unchanged Google client code: `keyless.env()` points it at keyless.
"""

import datetime as dt

import google.auth
import pytest
from google.auth import exceptions, impersonated_credentials
from google.cloud import storage

CLOUD = "https://www.googleapis.com/auth/cloud-platform"


# --- The code under test (in your application) ---------------------------------------------------------

def download_link(bucket: str, name: str, signer: str) -> str:
    """A 15-minute V4 signed URL, signed as `signer` through IAM Credentials signBlob: no private key."""
    source, project = google.auth.default(scopes=[CLOUD])
    credentials = impersonated_credentials.Credentials(
        source_credentials=source, target_principal=signer, target_scopes=[CLOUD], lifetime=300)
    client = storage.Client(project=project, credentials=credentials)
    return client.bucket(bucket).blob(name).generate_signed_url(
        version="v4", expiration=dt.timedelta(minutes=15), method="GET")


# --- The tests -------------------------------------------------------------------------------------------

def test_a_service_account_signs_links_for_another(keyless):
    signer = keyless.service_account("url-signer")
    app = keyless.service_account("web-app")
    keyless.grant(signer, f"serviceAccount:{app}")  # roles/iam.serviceAccountTokenCreator on the signer

    with keyless.env(credentials=keyless.key_file(app)):
        url = download_link("reports", "2024/q1 summary.pdf", signer)

    assert url.startswith("https://storage.googleapis.com/reports/2024/q1%20summary.pdf?")
    assert "X-Goog-Expires=900" in url
    assert keyless.verify_signed_url(url) == signer


def test_a_developer_signs_links_with_her_user_credentials(keyless):
    signer = keyless.service_account("url-signer")
    keyless.grant(signer, "user:alice@example.com")

    with keyless.env(credentials=keyless.user("alice@example.com")):
        url = download_link("reports", "q1.pdf", signer)

    assert keyless.verify_signed_url(url) == signer


def test_without_token_creator_the_link_is_refused(keyless):
    signer = keyless.service_account("url-signer")
    app = keyless.service_account("web-app")

    with keyless.env(credentials=keyless.key_file(app)):
        with pytest.raises(exceptions.TransportError, match="PERMISSION_DENIED"):
            download_link("reports", "q1.pdf", signer)
