"""API_* settings of `runner serve`."""

from __future__ import annotations

import ipaddress
from functools import cached_property

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

GIB = 1 << 30


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=True, env_prefix="API_"
    )

    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(8000, ge=0, le=65535)
    # Comma-separated. A secret: it never reaches a log line or a repr.
    keys: SecretStr | None = Field(None, validate_default=True)
    max_upload_bytes: int = Field(2 * GIB, ge=1)
    # Requests per minute per API key (per client address when no keys are set).
    rate_limit: int = Field(600, ge=1)
    # The consumer group that assembles the server's videos (its commit point survives restarts).
    collector_group: str = Field("runner-serve", min_length=1)
    # Splits decode and encode on the CPU: a few at a time, the rest wait their turn.
    max_concurrent_splits: int = Field(2, ge=1, le=64)

    @field_validator("keys")
    @classmethod
    def _keys_off_loopback(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is not None and not [k for k in value.get_secret_value().split(",") if k.strip()]:
            value = None
        host = str(info.data.get("host", "127.0.0.1"))
        if value is None and not is_loopback(host):
            raise ValueError(f"must be set when API_HOST is not a loopback address ({host}): anyone could use the API")
        return value

    @cached_property
    def key_set(self) -> frozenset[str]:
        if self.keys is None:
            return frozenset()
        return frozenset(k.strip() for k in self.keys.get_secret_value().split(",") if k.strip())
