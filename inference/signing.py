"""SigV4 headers for the fetch stage's GETs, with the signing key derived once per day.

botocore's signer builds an AWSRequest and an email.message header map and derives the signing
key (four HMACs) again for every request: per frame that was the largest part of a GET's cost
in the event loop. A frame's GET needs a small part of SigV4 (no query, no body, three or four
headers) and gives the Authorization header botocore gives for it (tests/unit/test_signing.py
compares the two). The credentials still come from botocore's chain, frozen per request, so a
rotated key or a refreshed session token signs the next GET.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from typing import Protocol
from urllib.parse import SplitResult, urlsplit

ALGORITHM = "AWS4-HMAC-SHA256"
# The hash of an empty body: a GET sends none, and S3 accepts it over HTTP and HTTPS alike.
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_DEFAULT_PORTS = {"http": 80, "https": 443}


class Credentials(Protocol):
    """What botocore's frozen credentials (ReadOnlyCredentials) carry."""

    @property
    def access_key(self) -> str: ...

    @property
    def secret_key(self) -> str: ...

    @property
    def token(self) -> str | None: ...


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def host_header(parts: SplitResult) -> str:
    """The Host value the client sends and the signature covers: lowercase, the port unless the default."""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None and parts.port != _DEFAULT_PORTS.get(parts.scheme):
        host = f"{host}:{parts.port}"
    return host


class GetSigner:
    """Signs GETs of already encoded object URLs for one region and service."""

    def __init__(self, region: str, service: str = "s3") -> None:
        self._region = region
        self._service = service
        # (secret key, day) -> the day's signing key; a new day or a rotated secret derives it again.
        self._key: tuple[str, str, bytes] | None = None

    def headers(self, url: str, credentials: Credentials, now: dt.datetime | None = None) -> dict[str, str]:
        """The headers that sign a GET of `url` (its path encoded as sent, no query) at `now` (UTC)."""
        parts = urlsplit(url)
        if parts.query:
            raise ValueError(f"{url}: a frame GET carries no query")
        stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
        day = stamp[:8]
        signed = {"host": host_header(parts), "x-amz-content-sha256": EMPTY_SHA256, "x-amz-date": stamp}
        if credentials.token:
            signed["x-amz-security-token"] = credentials.token
        names = ";".join(signed)  # in sorted order as built, as SigV4 wants them
        canonical = "\n".join(
            ["GET", parts.path or "/", "", "".join(f"{k}:{v}\n" for k, v in signed.items()), names, EMPTY_SHA256]
        )
        scope = f"{day}/{self._region}/{self._service}/aws4_request"
        to_sign = "\n".join([ALGORITHM, stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
        signature = _hmac(self._signing_key(credentials.secret_key, day), to_sign).hex()
        headers = {
            "X-Amz-Date": stamp,
            "X-Amz-Content-SHA256": EMPTY_SHA256,
            "Authorization": f"{ALGORITHM} Credential={credentials.access_key}/{scope}, "
            f"SignedHeaders={names}, Signature={signature}",
        }
        if credentials.token:
            headers["X-Amz-Security-Token"] = credentials.token
        return headers

    def _signing_key(self, secret: str, day: str) -> bytes:
        if self._key is not None and self._key[:2] == (secret, day):
            return self._key[2]
        key = _hmac(("AWS4" + secret).encode(), day)
        for part in (self._region, self._service, "aws4_request"):
            key = _hmac(key, part)
        self._key = (secret, day, key)
        return key
