"""Google API services a project enables (Service Usage): names, titles, and the ones a new project starts with."""

from __future__ import annotations

import re

from keyless.errors import InvalidArgument

IAM = "iam.googleapis.com"
IAM_CREDENTIALS = "iamcredentials.googleapis.com"
RESOURCE_MANAGER = "cloudresourcemanager.googleapis.com"
ORG_POLICY = "orgpolicy.googleapis.com"
SERVICE_USAGE = "serviceusage.googleapis.com"
# The APIs keyless serves, and so can refuse with SERVICE_DISABLED (``keyless serve --enforce-services``).
SERVED: dict[str, str] = {
    IAM: "Identity and Access Management (IAM) API",
    IAM_CREDENTIALS: "IAM Service Account Credentials API",
    RESOURCE_MANAGER: "Cloud Resource Manager API",
    ORG_POLICY: "Organization Policy API",
    SERVICE_USAGE: "Service Usage API",
    "sts.googleapis.com": "Security Token Service API",
}
# What Google enables on a project created with gcloud or the console: none of the APIs the impersonation guides
# need (they start with `gcloud services enable iam.googleapis.com iamcredentials.googleapis.com`).
DEFAULT_ENABLED: dict[str, str] = {
    "bigquery.googleapis.com": "BigQuery API",
    "bigquerystorage.googleapis.com": "BigQuery Storage API",
    "cloudapis.googleapis.com": "Google Cloud APIs",
    "cloudtrace.googleapis.com": "Cloud Trace API",
    "datastore.googleapis.com": "Cloud Datastore API",
    "logging.googleapis.com": "Cloud Logging API",
    "monitoring.googleapis.com": "Cloud Monitoring API",
    "servicemanagement.googleapis.com": "Service Management API",
    SERVICE_USAGE: "Service Usage API",
    "sql-component.googleapis.com": "Cloud SQL",
    "storage-api.googleapis.com": "Google Cloud Storage JSON API",
    "storage-component.googleapis.com": "Cloud Storage",
    "storage.googleapis.com": "Cloud Storage API",
}
CATALOGUE: dict[str, str] = {**DEFAULT_ENABLED, **SERVED}
# Never refused for being disabled: the API that enables the others (as on Google, where gcloud calls it on its
# own project's quota).
NEVER_DISABLED = frozenset({SERVICE_USAGE})
MAX_SERVICE_NAME = 100
MAX_BATCH = 20  # serviceIds of one batchEnable, as on Google
MAX_ENABLED = 1000  # services enabled on one project
_SERVICE_RE = re.compile(r"[a-z][a-z0-9-]{0,62}(\.[a-z0-9][a-z0-9-]{0,62})*\.googleapis\.com")


def check_service_name(name: object, *, field: str = "name") -> str:
    """A service name keyless records: any well-formed ``*.googleapis.com`` (the proxy sends every Service Usage
    call here, whatever service a script enables); 400 otherwise."""
    if not isinstance(name, str) or len(name) > MAX_SERVICE_NAME or not _SERVICE_RE.fullmatch(name):
        shown = name if isinstance(name, str) else repr(name)
        raise InvalidArgument(f"Invalid service name '{shown[:MAX_SERVICE_NAME]}': expected a service such as "
                              "iam.googleapis.com.", field=field)
    return name


def title_of(service: str) -> str:
    return CATALOGUE.get(service, service)
