"""In-process RSA-2048 PKCS#1 v1.5 SHA-256 signing rate, on one core and on all cores.

cryptography releases the GIL while OpenSSL signs, so threads scale; all-cores uses one process per core
anyway, so the figure does not depend on that.
"""

from __future__ import annotations

import multiprocessing
import os
import time

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa


def _worker(args: tuple[float, float]) -> tuple[int, float]:
    """Sign for ``seconds`` from the wall-clock instant ``start_at``; answers (signatures, elapsed seconds)."""
    start_at, seconds = args
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pkcs1, sha256 = padding.PKCS1v15(), hashes.SHA256()
    data = b"x" * 200  # about the size of a JWT signing input
    key.sign(data, pkcs1, sha256)  # warm up (blinding, Montgomery contexts)
    while time.time() < start_at:
        time.sleep(0.001)
    count = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds
    while time.perf_counter() < deadline:
        for _ in range(20):
            key.sign(data, pkcs1, sha256)
        count += 20
    return count, time.perf_counter() - t0


def rsa_sign_rates(seconds: float = 3.0) -> dict[str, float]:
    """Signs per second on one core and on all cores (one process each, started together)."""
    cores = os.cpu_count() or 1
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(cores) as pool:
        single = pool.map(_worker, [(0.0, seconds)])[0]
        start_at = time.time() + 1.0  # every process has generated its key and waits for this instant
        results = pool.map(_worker, [(start_at, seconds)] * cores)
    return {
        "cores": cores,
        "one_core_signs_per_s": single[0] / single[1],
        "all_cores_signs_per_s": sum(n / t for n, t in results),
    }


if __name__ == "__main__":
    print(rsa_sign_rates())
