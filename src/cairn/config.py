"""Settings, read once from ``CAIRN_*`` environment variables and command-line options.

Everything configurable lives here so that a misconfiguration is found at start, never
halfway through a request. Nothing else in cairn reads the environment.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import platformdirs

from cairn.errors import ConfigError

BlobStoreKind = Literal["filesystem", "database"]

DEFAULT_LISTEN = "127.0.0.1:8443"
MiB = 1024 * 1024


@dataclass(frozen=True)
class Settings:
    """The whole configuration of one cairn process."""

    data_dir: Path
    listen_host: str = "127.0.0.1"
    listen_port: int = 8443
    public_url: str = ""
    database_url: str = ""
    tls_cert: Path | None = None
    tls_key: Path | None = None
    plain_http: bool = False
    blob_store: BlobStoreKind = "filesystem"
    secret_key: str | None = field(default=None, repr=False)
    admin_token: str | None = field(default=None, repr=False)
    # Limits. A state file is bounded; JSON:API bodies other than state uploads are small.
    max_state_bytes: int = 512 * MiB
    max_json_body_bytes: int = 1 * MiB
    upload_url_ttl_seconds: int = 3600
    # PostgreSQL: the longest one SQL statement of request work may run (0: no limit);
    # migrations and background maintenance are not bounded by it.
    db_statement_timeout: timedelta = timedelta(seconds=5)
    log_level: str = "info"
    log_json: bool = True
    # Workload identity (the OIDC issuer).
    oidc_rotation_period: timedelta = timedelta(days=90)
    oidc_prepublish: timedelta = timedelta(hours=24)
    oidc_max_token_ttl: timedelta = timedelta(hours=6)
    oidc_alg: str = "RS256"
    oidc_cache_ttl: timedelta = timedelta(seconds=60)
    oidc_listen: bool = True
    # People: the team's OpenID Provider (optional).
    idp_issuer: str | None = None
    idp_client_id: str | None = None
    idp_client_secret: str | None = field(default=None, repr=False)
    idp_scopes: tuple[str, ...] = ("openid", "email", "profile")
    idp_groups_claim: str = "groups"
    idp_ca_file: Path | None = None

    @property
    def is_postgres(self) -> bool:
        return self.database_url.startswith("postgresql")

    @property
    def scheme(self) -> str:
        return "http" if self.plain_http else "https"

    @property
    def tls_dir(self) -> Path:
        return self.data_dir / "tls"

    def with_defaults(self) -> Settings:
        """Fill in the values that derive from others (public URL, database URL)."""
        s = self
        if not s.public_url:
            host = (
                "localhost"
                if s.listen_host in ("127.0.0.1", "0.0.0.0", "::", "::1")  # noqa: S104
                else (s.listen_host)
            )
            s = replace(s, public_url=f"{s.scheme}://{host}:{s.listen_port}")
        s = replace(s, public_url=s.public_url.rstrip("/"))
        if not s.database_url:
            s = replace(s, database_url=f"sqlite:///{s.data_dir / 'cairn.db'}")
        return s

    def validate(self) -> None:
        """Refuse configurations that would misbehave later. Raises ConfigError."""
        parts = urlsplit(self.public_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"CAIRN_PUBLIC_URL {self.public_url!r} is not an http(s) URL; "
                "set it to the address clients use, e.g. https://cairn.example.com"
            )
        if parts.path not in ("", "/"):
            raise ConfigError("CAIRN_PUBLIC_URL must not have a path; serve cairn at a host root")
        if not (self.database_url.startswith("sqlite:///") or self.is_postgres):
            raise ConfigError(
                f"CAIRN_DATABASE_URL must be sqlite:///PATH or postgresql://…, "
                f"not {_redact_url(self.database_url)!r}"
            )
        if self.is_postgres and not self.secret_key:
            raise ConfigError(
                "CAIRN_SECRET_KEY is required with PostgreSQL: every replica must share it. "
                "Generate one with: python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"
            )
        if self.secret_key is not None and len(self.secret_key) < 32:
            raise ConfigError("CAIRN_SECRET_KEY must be at least 32 characters long")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("--tls-cert and --tls-key must be given together")
        if self.plain_http and self.tls_cert is not None:
            raise ConfigError("--plain-http and --tls-cert exclude each other")
        if self.blob_store not in ("filesystem", "database"):
            raise ConfigError(
                f"CAIRN_BLOB_STORE must be 'filesystem' or 'database', not {self.blob_store!r}"
            )
        if self.is_postgres and self.blob_store == "filesystem":
            # Allowed (shared disk), but only one data dir is visible to this process.
            pass
        idp = (self.idp_issuer, self.idp_client_id, self.idp_client_secret)
        if any(idp) and not all(idp):
            raise ConfigError(
                "to log people in through an IdP set all of CAIRN_OIDC_ISSUER, "
                "CAIRN_OIDC_CLIENT_ID and CAIRN_OIDC_CLIENT_SECRET"
            )
        for p in (self.tls_cert, self.tls_key):
            if p is not None and not p.is_file():
                raise ConfigError(f"TLS file {p} does not exist")


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("cairn", appauthor=False))


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not (0 < int(port) < 65536):
        raise ConfigError(f"--listen must be HOST:PORT (e.g. {DEFAULT_LISTEN}), not {value!r}")
    return host.strip("[]"), int(port)


def _truthy(v: str | None) -> bool:
    return (v or "").strip().lower() in ("1", "true", "yes", "on")


def env(name: str) -> str | None:
    v = os.environ.get(name)
    return v if v not in (None, "") else None


def from_environment(**overrides: object) -> Settings:
    """Build settings from CAIRN_* variables; keyword overrides (CLI options) win when not None."""
    listen = str(overrides.pop("listen", None) or env("CAIRN_LISTEN") or DEFAULT_LISTEN)
    host, port = parse_listen(listen)
    data_dir = overrides.pop("data_dir", None) or env("CAIRN_DATA_DIR") or default_data_dir()
    values: dict[str, object] = {
        "data_dir": Path(str(data_dir)).expanduser().resolve(),
        "listen_host": host,
        "listen_port": port,
        "public_url": env("CAIRN_PUBLIC_URL") or "",
        "database_url": env("CAIRN_DATABASE_URL") or "",
        "tls_cert": Path(v) if (v := env("CAIRN_TLS_CERT")) else None,
        "tls_key": Path(v) if (v := env("CAIRN_TLS_KEY")) else None,
        "plain_http": _truthy(env("CAIRN_PLAIN_HTTP")),
        "blob_store": env("CAIRN_BLOB_STORE") or "filesystem",
        "secret_key": env("CAIRN_SECRET_KEY"),
        "admin_token": env("CAIRN_ADMIN_TOKEN"),
        "log_level": (env("CAIRN_LOG_LEVEL") or "info").lower(),
        "log_json": not _truthy(env("CAIRN_LOG_PLAIN")),
    }
    for name, key in (
        ("CAIRN_OIDC_ROTATION_PERIOD", "oidc_rotation_period"),
        ("CAIRN_OIDC_PREPUBLISH", "oidc_prepublish"),
        ("CAIRN_OIDC_MAX_TOKEN_TTL", "oidc_max_token_ttl"),
        ("CAIRN_OIDC_CACHE_TTL", "oidc_cache_ttl"),
    ):
        if (v := env(name)) is not None:
            values[key] = parse_duration(v, name)
    if (v := env("CAIRN_OIDC_ALG")) is not None:
        if v not in ("RS256", "ES256"):
            raise ConfigError(f"CAIRN_OIDC_ALG must be RS256 or ES256, not {v!r}")
        values["oidc_alg"] = v
    if (v := env("CAIRN_OIDC_LISTEN")) is not None:
        values["oidc_listen"] = _truthy(v)
    values["idp_issuer"] = env("CAIRN_OIDC_ISSUER")
    values["idp_client_id"] = env("CAIRN_OIDC_CLIENT_ID")
    values["idp_client_secret"] = env("CAIRN_OIDC_CLIENT_SECRET")
    if (v := env("CAIRN_OIDC_SCOPES")) is not None:
        values["idp_scopes"] = tuple(v.replace(",", " ").split())
    if (v := env("CAIRN_OIDC_GROUPS_CLAIM")) is not None:
        values["idp_groups_claim"] = v
    if (v := env("CAIRN_OIDC_CA_FILE")) is not None:
        values["idp_ca_file"] = Path(v)
    if (v := env("CAIRN_DB_STATEMENT_TIMEOUT")) is not None:
        values["db_statement_timeout"] = parse_duration(v, "CAIRN_DB_STATEMENT_TIMEOUT")
    if (v := env("CAIRN_MAX_STATE_MB")) is not None:
        if not v.isdigit() or int(v) < 1:
            raise ConfigError(f"CAIRN_MAX_STATE_MB must be a positive integer, not {v!r}")
        values["max_state_bytes"] = int(v) * MiB
    for key, value in overrides.items():
        if value is None or value is False:
            continue
        if key in ("tls_cert", "tls_key"):
            value = Path(str(value))
        values[key] = value
    settings = Settings(**values).with_defaults()  # type: ignore[arg-type]
    settings.validate()
    return settings


_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: str, name: str = "duration") -> timedelta:
    """``90d``, ``24h``, ``15m``, ``300s`` or plain seconds."""
    m = _DURATION.match(value)
    if not m:
        raise ConfigError(f"{name} must be a duration like 90d, 24h, 15m or 300s, not {value!r}")
    return timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])


def _redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url


redact_url = _redact_url
