"""An access token has exactly one spelling: altering any character, even one whose change base64 would
ignore (the unused trailing bits of the MAC), makes it invalid."""

from __future__ import annotations

import string

from keyless.crypto.tokens import TokenMinter

ALPHABET = string.ascii_letters + string.digits + "-_"


def test_every_variant_of_the_last_characters_is_refused() -> None:
    minter = TokenMinter(b"k" * 32)
    token, _ = minter.mint(principal_kind="serviceAccount", principal_id="1", scopes=("s",), issued_at=1,
                           expires_at=2)
    assert minter.parse(token) is not None
    for cut in (1, 2):
        for tail in (a + b for a in ALPHABET for b in ALPHABET) if cut == 2 else ALPHABET:
            variant = token[:-cut] + tail
            if variant != token:
                assert minter.parse(variant) is None, variant
    for odd in (token + "=", token + "A", token[:-1], token.replace("ya29.", "ya29..", 1), token + "\u00e9"):
        assert minter.parse(odd) is None
