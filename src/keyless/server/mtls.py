"""The mTLS listener (``keyless serve --mtls-port``): keyless's ``sts.mtls.googleapis.com`` and
``iamcredentials.mtls.googleapis.com``. It serves the API, and asks every client for a certificate, which
``/v1/token`` exchanges for a federated token when an X.509 provider trusts it.

Python's ``ssl`` cannot accept a client certificate without verifying it against the context's CA store, and which
provider's trust store applies is only known from the request's ``audience``. So the TLS layer is a gate, and the
application decides: the context trusts every CA certificate of every X.509 provider (anchors and intermediates
alike, ``VERIFY_X509_PARTIAL_CHAIN``), without checking times (``X509_V_FLAG_NO_CHECK_TIME``: keyless's clock,
not the machine's, decides in the application, and an expired certificate is refused there with an OAuth error);
the handshake proves the client holds the certificate's key. The exchange then verifies the chain against the one
provider the audience names (``keyless.crypto.x509_trust``).

The gate learns a provider's CAs at once when this process writes it (``Federation.trust_added``), and every
``REFRESH_INTERVAL`` from the store (providers written by other processes or replicas). CAs are only ever added:
a deleted provider's CA stays in the gate until restart, which the application's check makes harmless.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Sequence
from pathlib import Path

from keyless.crypto import x509_trust
from keyless.storage.base import Store

log = logging.getLogger("keyless.mtls")
REFRESH_INTERVAL = 5.0
# OpenSSL's X509_V_FLAG_NO_CHECK_TIME (1.1.0 and later), which the ssl module has no name for.
_NO_CHECK_TIME = 0x200000


class ClientCertificateGate:
    """The mTLS listener's TLS context, and the CA certificates it accepts clients' certificates under."""

    def __init__(self, cert_path: Path, key_path: Path) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(cert_path), str(key_path))
        ctx.set_alpn_protocols(["http/1.1"])
        ctx.verify_mode = ssl.CERT_OPTIONAL  # a client without a certificate still reaches the API
        ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN | _NO_CHECK_TIME
        self.context = ctx
        self._known: set[str] = set()

    def add(self, pems: Sequence[str]) -> None:
        """Accept client certificates issued under these CA certificates (PEM), from the next handshake on."""
        new = [pem.strip() for pem in pems if pem.strip() not in self._known]
        for pem in new:
            try:
                self.context.load_verify_locations(cadata=pem)
            except ssl.SSLError:
                log.warning("an X.509 provider's CA certificate could not be loaded into the mTLS listener")
                continue
            self._known.add(pem)

    async def refresh(self, store: Store) -> None:
        for provider in await store.list_x509_providers():
            if provider.deleted_at is None:
                anchors, intermediates = x509_trust.store_pems(provider.x509)
                self.add([*anchors, *intermediates])

    async def keep_fresh(self, store: Store) -> None:
        """Refresh from the store every REFRESH_INTERVAL, until cancelled."""
        while True:
            await asyncio.sleep(REFRESH_INTERVAL)
            try:
                await self.refresh(store)
            except Exception:  # the store unavailable for a moment: the next round tries again
                log.warning("the mTLS listener could not read the X.509 providers", exc_info=True)
