"""Cryptography behind a safe API: key generation, encryption at rest, JWT signing and verification."""
