"""Migration text both backends share."""

from __future__ import annotations

# The services every project made before Service Usage was recorded has enabled: the APIs keyless served it (so
# `keyless serve --enforce-services` refuses nothing it answered before) and those Google enables on a new project.
# Frozen here, as migrations are: later changes to the catalogue do not rewrite it.
_BACKFILLED = (
    "iam.googleapis.com", "iamcredentials.googleapis.com", "cloudresourcemanager.googleapis.com",
    "orgpolicy.googleapis.com", "serviceusage.googleapis.com", "sts.googleapis.com",
    "bigquery.googleapis.com", "bigquerystorage.googleapis.com", "cloudapis.googleapis.com",
    "cloudtrace.googleapis.com", "datastore.googleapis.com", "logging.googleapis.com", "monitoring.googleapis.com",
    "servicemanagement.googleapis.com", "sql-component.googleapis.com", "storage-api.googleapis.com",
    "storage-component.googleapis.com", "storage.googleapis.com",
)
PROJECT_SERVICES_BACKFILL = (
    "INSERT INTO project_services (project_id, service) SELECT p.project_id, s.service FROM projects p CROSS JOIN ("
    + " UNION ALL ".join(f"SELECT '{name}' AS service" for name in _BACKFILLED) + ") s"
)
