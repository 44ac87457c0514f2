"""API keys and the per-key rate limit, checked before a /v1 request is read any further."""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass, field

from fastapi import HTTPException, Request, Security, status
from fastapi.security import APIKeyHeader

KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="One of API_KEYS")
WINDOW_S = 60.0


@dataclass
class RateLimit:
    """Fixed one-minute windows per caller: simple, and a burst is bounded by twice the limit."""

    per_minute: int
    _windows: dict[str, tuple[float, int]] = field(default_factory=dict)

    def admit(self, caller: str) -> float | None:
        """None when the request may go on, else the seconds until the caller's window ends."""
        now = time.monotonic()
        start, count = self._windows.get(caller, (now, 0))
        if now - start >= WINDOW_S:
            start, count = now, 0
        if count >= self.per_minute:
            return WINDOW_S - (now - start)
        self._windows[caller] = (start, count + 1)
        return None


@dataclass
class Guard:
    keys: frozenset[str]
    limit: RateLimit

    def caller(self, key: str | None, address: str) -> str:
        """Who the request counts against: its key, or its address when the API needs none."""
        if not self.keys:
            return f"address:{address}"
        if key is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing X-API-Key header")
        # Compared in constant time with every key, so timing tells nothing about any of them.
        matches = [hmac.compare_digest(key.encode(), known.encode()) for known in self.keys]
        if not any(matches):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "X-API-Key is not valid")
        return "key:" + hashlib.sha256(key.encode()).hexdigest()[:16]

    def admit(self, key: str | None, address: str) -> None:
        wait_s = self.limit.admit(self.caller(key, address))
        if wait_s is not None:
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                f"more than {self.limit.per_minute} requests a minute",
                headers={"Retry-After": str(max(1, round(wait_s)))},
            )


async def require_key(request: Request, key: str | None = Security(KEY_HEADER)) -> None:
    """The /v1 dependency: 401 without a key, 403 with a wrong one, 429 over the rate limit."""
    guard: Guard = request.app.state.guard
    guard.admit(key, request.client.host if request.client else "?")
