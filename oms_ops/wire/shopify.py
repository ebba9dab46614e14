"""Shopify webhook signatures, shared by the store simulator (signs) and the OMS webhook receiver (verifies).

Shopify signs the *raw request body* with the app's client secret: ``X-Shopify-Hmac-SHA256`` =
base64(HMAC-SHA256(body, secret)). Verification must use the exact bytes received (never re-serialised JSON)
and a constant-time comparison, hence :func:`hmac.compare_digest`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac


def shopify_hmac(body: bytes, secret: str) -> str:
    """The value Shopify puts in ``X-Shopify-Hmac-SHA256`` for ``body``."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def verify_shopify_hmac(body: bytes, header: str | None, secret: str) -> bool:
    """True when ``header`` is the valid signature of ``body``; False for a missing or wrong one."""
    if not header or not secret:
        return False
    expected = shopify_hmac(body, secret)
    return hmac.compare_digest(expected.encode("ascii"), header.strip().encode("ascii", "replace"))
