"""Pre-signed URLs as strict as S3's: the signature covers the path and the raw query.

The sandbox signs over the exact bytes of the query it hands out and checks
them against the exact bytes it receives, so a client that re-encodes the
query (``%2B`` to ``+``, ``%2F`` to ``/``) fails here as it would on S3. The
security token deliberately holds ``+``, ``/`` and ``=``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, unquote

__all__ = ["Signer", "Verdict"]

_AMZ_DATE = "%Y%m%dT%H%M%SZ"
MAX_EXPIRES = 7 * 24 * 3600


@dataclass(frozen=True)
class Verdict:
    """Outcome of checking a pre-signed request: ``ok`` or an S3 error code and message."""

    ok: bool
    code: str = ""
    message: str = ""


class Signer:
    """Signs and verifies URLs with a secret known only to this sandbox."""

    def __init__(self) -> None:
        self._secret = secrets.token_bytes(32)
        raw = secrets.token_bytes(45)
        # base64 of these bytes, forced to contain the characters that break naive clients
        self.security_token = "IQoJb3JpZ2luX2Vj+/" + base64.b64encode(raw).decode() + "+/=="
        self.access_key = "ASIASANDBOX" + secrets.token_hex(4).upper()

    def sign(self, path: str, signed_at: datetime, expires: int) -> str:
        """The query string for ``path``, valid ``expires`` seconds from ``signed_at``."""
        params = [
            ("X-Amz-Algorithm", "AWS4-HMAC-SHA256"),
            ("X-Amz-Credential", f"{self.access_key}/{signed_at:%Y%m%d}/us-east-1/s3/aws4_request"),
            ("X-Amz-Date", signed_at.strftime(_AMZ_DATE)),
            ("X-Amz-Expires", str(max(1, min(MAX_EXPIRES, expires)))),
            ("X-Amz-Security-Token", self.security_token),
            ("X-Amz-SignedHeaders", "host"),
        ]
        query = "&".join(f"{k}={quote(v, safe='')}" for k, v in params)
        return f"{query}&X-Amz-Signature={self._signature(path, query)}"

    def verify(self, path: str, raw_query: str, now: datetime | None = None) -> Verdict:
        """Check a received request's raw path and query (as they came off the wire)."""
        parts = raw_query.split("&") if raw_query else []
        signature = ""
        unsigned = []
        for part in parts:
            if part.startswith("X-Amz-Signature="):
                signature = part.split("=", 1)[1]
            else:
                unsigned.append(part)
        if not signature:
            return Verdict(
                False,
                "AccessDenied",
                "Query-string authentication requires the Signature parameter",
            )
        expected = self._signature(path, "&".join(unsigned))
        if not hmac.compare_digest(signature, expected):
            return Verdict(
                False,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided.",
            )
        fields = dict(p.split("=", 1) for p in unsigned if "=" in p)
        try:
            signed_at = datetime.strptime(unquote(fields["X-Amz-Date"]), _AMZ_DATE).replace(
                tzinfo=UTC
            )
            expires = int(fields["X-Amz-Expires"])
        except (KeyError, ValueError):
            return Verdict(
                False, "AuthorizationQueryParametersError", "X-Amz-Date or X-Amz-Expires is missing"
            )
        if (now or datetime.now(UTC)) > signed_at + timedelta(seconds=expires):
            return Verdict(False, "AccessDenied", "Request has expired")
        return Verdict(True)

    def _signature(self, path: str, query: str) -> str:
        message = f"GET\n{path}\n{query}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()
