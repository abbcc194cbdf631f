"""keyless: a self-hosted implementation of Google Cloud's Service Account Credentials system."""

__version__ = "0.1.0"
