"""The platform's signing key: published as the JWKS at registration, used to sign callback JWTs.

pycti 7 parses ``registerConnector.jwks`` with ``PyJWKSet.from_json`` (it must hold at least one valid
key) and, with the API listen protocol, only accepts callbacks carrying a JWT signed by one of those keys
(``iss=opencti``, ``sub=connector``).  The key is generated per simulator with ``cryptography`` (a pycti
dependency already).
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any, Dict

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _int_bytes(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


class SigningKey:
    """An RSA key with its public JWK."""

    def __init__(self) -> None:
        self.kid = str(uuid.uuid4())
        self._private = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwk(self) -> Dict[str, Any]:
        """The public key as a JWK."""
        numbers = self._private.public_key().public_numbers()
        return {"kty": "RSA", "kid": self.kid, "use": "sig", "alg": "RS256",
                "n": _b64url(_int_bytes(numbers.n)), "e": _b64url(_int_bytes(numbers.e))}

    def jwks_json(self) -> str:
        """The JWKS document, as the JSON string the platform returns."""
        return json.dumps({"keys": [self.jwk()]})

    def sign(self, claims: Dict[str, Any], ttl: int = 300) -> str:
        """An RS256 JWT as the platform sends to ``listen_callback_uri``."""
        now = int(time.time())
        payload = {"iss": "opencti", "sub": "connector", "iat": now, "exp": now + ttl, **claims}
        header = {"alg": "RS256", "typ": "JWT", "kid": self.kid}
        signing_input = (_b64url(json.dumps(header, separators=(",", ":")).encode()) + "."
                         + _b64url(json.dumps(payload, separators=(",", ":")).encode()))
        signature = self._private.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
        return signing_input + "." + _b64url(signature)
