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

BlobStoreKind = Literal["filesystem", "database", "s3"]

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
    # The S3 blob store (CAIRN_BLOB_STORE=s3): bucket, optional endpoint (MinIO, Ceph…) and
    # key prefix. Region and credentials come from the AWS SDK's standard chain, never here.
    s3_bucket: str | None = None
    s3_endpoint: str | None = None
    s3_prefix: str = ""
    # The S3-compatible endpoint's virtual-host buckets: <organization>.<s3_domain> (a wildcard
    # DNS name and certificate), besides the path style /s3/<organization>.
    s3_domain: str | None = None
    secret_key: str | None = field(default=None, repr=False)
    admin_token: str | None = field(default=None, repr=False)
    # Limits. A state file is bounded; JSON:API bodies other than state uploads are small.
    max_state_bytes: int = 512 * MiB
    max_json_body_bytes: int = 1 * MiB
    upload_url_ttl_seconds: int = 3600
    # A configuration version's .tar.gz (CAIRN_MAX_CONFIG_MB); inflated, at most ten times that.
    max_config_bytes: int = 100 * MiB
    # Blobs no row references are deleted once last written longer ago than this: an upload
    # writes its blob before its row commits, so a younger blob may be about to be referenced.
    blob_grace: timedelta = timedelta(hours=24)
    # PostgreSQL: the longest one SQL statement of request work may run (0: no limit);
    # migrations and background maintenance are not bounded by it.
    db_statement_timeout: timedelta = timedelta(seconds=5)
    log_level: str = "info"
    # auto: text a person reads when stderr is a terminal, JSON lines otherwise (cairn.logs).
    log_format: str = "auto"
    # Access log (CAIRN_ACCESS_LOG): on (a line per request, the public doors one in 100), all
    # (every request), off, or sample:N (one in N, and every 5xx); cairn.tfeapi.observe.
    access_log: str = "on"
    # HTTP: proxies whose X-Forwarded-For/-Proto are believed (IPs or CIDRs; none by default);
    # how long a client may take to send a request's headers, and between two body chunks.
    trusted_proxies: tuple[str, ...] = ()
    header_timeout: timedelta = timedelta(seconds=10)
    body_timeout: timedelta = timedelta(seconds=60)
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
    # terraform login's anonymous endpoints, per client address and per process: failed logins
    # and token requests and redirects to the IdP spend a bucket of `login_rate_burst` tokens
    # refilled at `login_rate_per_minute` (0: no limit; then 429 + Retry-After); logins pending
    # at the IdP per address; failed logins audited once per address and window, with a count.
    login_rate_burst: int = 30
    login_rate_per_minute: int = 30
    login_pending_per_address: int = 50
    login_audit_window: timedelta = timedelta(minutes=10)
    # Remote runs: built-in workers in this process (CAIRN_WORKERS, 0: none), where the
    # Terraform binaries are (CAIRN_TERRAFORM_PATH: terraform-<version> or terraform; default
    # PATH), and a CLI configuration given to every run (CAIRN_RUN_TF_CLI_CONFIG).
    workers: int = 1
    terraform_path: Path | None = None
    run_tf_cli_config: Path | None = None
    # Remote runs: the longest a plan or an apply may run (CAIRN_PLAN_TIMEOUT,
    # CAIRN_APPLY_TIMEOUT); a job token is valid until its phase's timeout.
    plan_timeout: timedelta = timedelta(hours=2)
    apply_timeout: timedelta = timedelta(hours=2)
    # VCS: create cairn's webhook on the forge when a workspace gets a repository
    # (CAIRN_VCS_REGISTER_HOOKS=false: an admin adds hooks by hand, or the forge cannot reach
    # cairn).
    vcs_register_hooks: bool = True

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
        if self.blob_store not in ("filesystem", "database", "s3"):
            raise ConfigError(
                "CAIRN_BLOB_STORE must be 'filesystem', 'database' or 's3', "
                f"not {self.blob_store!r}"
            )
        if self.blob_store == "s3":
            _validate_s3(self)
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
        if self.terraform_path is not None and not self.terraform_path.is_dir():
            raise ConfigError(
                f"CAIRN_TERRAFORM_PATH {str(self.terraform_path)!r} is not a directory; point it "
                "at a directory holding terraform-<version> or terraform binaries"
            )
        if self.run_tf_cli_config is not None and not self.run_tf_cli_config.is_file():
            raise ConfigError(
                f"CAIRN_RUN_TF_CLI_CONFIG {str(self.run_tf_cli_config)!r} is not a file; point it "
                "at a Terraform CLI configuration (e.g. provider_installation for a mirror)"
            )


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("cairn", appauthor=False))


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not (0 < int(port) < 65536):
        raise ConfigError(f"--listen must be HOST:PORT (e.g. {DEFAULT_LISTEN}), not {value!r}")
    return host.strip("[]"), int(port)


def _truthy(v: str | None) -> bool:
    return (v or "").strip().lower() in ("1", "true", "yes", "on")


def _log_format() -> str:
    """``CAIRN_LOG_FORMAT`` (auto, json, text); the older ``CAIRN_LOG_PLAIN=1`` means text."""
    value = (env("CAIRN_LOG_FORMAT") or "").strip().lower()
    if not value:
        return "text" if _truthy(env("CAIRN_LOG_PLAIN")) else "auto"
    if value not in ("auto", "json", "text"):
        raise ConfigError(f"CAIRN_LOG_FORMAT must be auto, json or text, not {value!r}")
    return value


def _access_log() -> str:
    """``CAIRN_ACCESS_LOG``: on (default), all, off, or sample:N with N >= 1."""
    value = (env("CAIRN_ACCESS_LOG") or "on").strip().lower()
    kind, _, n = value.partition(":")
    if value in ("on", "all", "off") or (
        kind == "sample" and n.isascii() and n.isdigit() and int(n) >= 1
    ):
        return value
    raise ConfigError(
        f"CAIRN_ACCESS_LOG must be on, all, off or sample:N (log one request in N), not {value!r}"
    )


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
        "s3_bucket": env("CAIRN_S3_BUCKET"),
        "s3_endpoint": env("CAIRN_S3_ENDPOINT"),
        "s3_prefix": normalize_s3_prefix(env("CAIRN_S3_PREFIX") or ""),
        "s3_domain": (env("CAIRN_S3_DOMAIN") or "").strip().strip(".").lower() or None,
        "secret_key": env("CAIRN_SECRET_KEY"),
        "admin_token": env("CAIRN_ADMIN_TOKEN"),
        "log_level": (env("CAIRN_LOG_LEVEL") or "info").lower(),
        "log_format": _log_format(),
        "access_log": _access_log(),
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
    if (v := env("CAIRN_TRUSTED_PROXIES")) is not None:
        values["trusted_proxies"] = parse_proxies(v)
    for name, key in (
        ("CAIRN_HEADER_TIMEOUT", "header_timeout"),
        ("CAIRN_BODY_TIMEOUT", "body_timeout"),
    ):
        if (v := env(name)) is not None:
            timeout = parse_duration(v, name)
            if timeout <= timedelta(0):
                raise ConfigError(f"{name} must be longer than 0s, not {v!r}")
            values[key] = timeout
    if (v := env("CAIRN_BLOB_GRACE")) is not None:
        grace = parse_duration(v, "CAIRN_BLOB_GRACE")
        if grace < timedelta(hours=1):
            raise ConfigError(
                f"CAIRN_BLOB_GRACE must be at least 1h (an upload's row commits after its "
                f"blob is written; a shorter grace could delete a blob about to be used), "
                f"not {v!r}"
            )
        values["blob_grace"] = grace
    if (v := env("CAIRN_MAX_STATE_MB")) is not None:
        if not v.isdigit() or int(v) < 1:
            raise ConfigError(f"CAIRN_MAX_STATE_MB must be a positive integer, not {v!r}")
        values["max_state_bytes"] = int(v) * MiB
    if (v := env("CAIRN_MAX_CONFIG_MB")) is not None:
        if not (v.isascii() and v.isdigit()) or int(v) < 1:
            raise ConfigError(f"CAIRN_MAX_CONFIG_MB must be a positive integer, not {v!r}")
        values["max_config_bytes"] = int(v) * MiB
    for name, key, least in (
        ("CAIRN_LOGIN_RATE_BURST", "login_rate_burst", 1),
        ("CAIRN_LOGIN_RATE_PER_MINUTE", "login_rate_per_minute", 0),
        ("CAIRN_LOGIN_PENDING_PER_ADDRESS", "login_pending_per_address", 1),
    ):
        if (v := env(name)) is not None:
            if not (v.isascii() and v.isdigit()) or int(v) < least:
                raise ConfigError(f"{name} must be an integer of at least {least}, not {v!r}")
            values[key] = int(v)
    if (v := env("CAIRN_WORKERS")) is not None:
        if not (v.isascii() and v.isdigit()) or int(v) > 64:
            raise ConfigError(
                f"CAIRN_WORKERS must be a number of built-in workers from 0 (none) to 64, not {v!r}"
            )
        values["workers"] = int(v)
    if (v := env("CAIRN_VCS_REGISTER_HOOKS")) is not None:
        if v.strip().lower() not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            raise ConfigError(f"CAIRN_VCS_REGISTER_HOOKS must be true or false, not {v!r}")
        values["vcs_register_hooks"] = _truthy(v)
    if (v := env("CAIRN_TERRAFORM_PATH")) is not None:
        values["terraform_path"] = Path(v).expanduser()
    if (v := env("CAIRN_RUN_TF_CLI_CONFIG")) is not None:
        values["run_tf_cli_config"] = Path(v).expanduser()
    if (v := env("CAIRN_LOGIN_AUDIT_WINDOW")) is not None:
        window = parse_duration(v, "CAIRN_LOGIN_AUDIT_WINDOW")
        if not timedelta(seconds=1) <= window <= timedelta(days=1):
            raise ConfigError(f"CAIRN_LOGIN_AUDIT_WINDOW must be from 1s to 1d, not {v!r}")
        values["login_audit_window"] = window
    for name, key in (
        ("CAIRN_PLAN_TIMEOUT", "plan_timeout"),
        ("CAIRN_APPLY_TIMEOUT", "apply_timeout"),
    ):
        if (v := env(name)) is not None:
            phase_timeout = parse_duration(v, name)
            if not timedelta(minutes=1) <= phase_timeout <= timedelta(days=2):
                raise ConfigError(f"{name} must be from 1m to 2d, not {v!r}")
            values[key] = phase_timeout
    for key, value in overrides.items():
        if value is None or value is False:
            continue
        if key in ("tls_cert", "tls_key"):
            value = Path(str(value))
        values[key] = value
    settings = Settings(**values).with_defaults()  # type: ignore[arg-type]
    settings.validate()
    return settings


def parse_proxies(value: str) -> tuple[str, ...]:
    """``CAIRN_TRUSTED_PROXIES``: a comma list of IP addresses or CIDR networks."""
    import ipaddress

    proxies: list[str] = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        try:
            network = ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ConfigError(
                f"CAIRN_TRUSTED_PROXIES must list IP addresses or CIDR networks "
                f"(e.g. 10.0.0.5,10.1.0.0/16), not {item!r}"
            ) from None
        proxies.append(str(network.network_address if network.num_addresses == 1 else network))
    return tuple(proxies)


_S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


def normalize_s3_prefix(value: str) -> str:
    """``CAIRN_S3_PREFIX``: keys start with it; ``cairn``, ``/cairn/`` → ``cairn/``."""
    value = value.strip().strip("/")
    return f"{value}/" if value else ""


def _validate_s3(s: Settings) -> None:
    if not s.s3_bucket:
        raise ConfigError(
            "CAIRN_BLOB_STORE=s3 needs CAIRN_S3_BUCKET: set it to the name of the bucket that "
            "holds the blobs (region and credentials come from the usual AWS settings: "
            "AWS_REGION, AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or a role)"
        )
    if not _S3_BUCKET.match(s.s3_bucket):
        raise ConfigError(
            f"CAIRN_S3_BUCKET {s.s3_bucket!r} is not a bucket name (3-63 characters: "
            "lower-case letters, digits, dots and hyphens)"
        )
    if s.s3_endpoint is not None:
        parts = urlsplit(s.s3_endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"CAIRN_S3_ENDPOINT must be an http(s) URL such as https://minio.example.com:9000, "
                f"not {_redact_url(s.s3_endpoint)!r}"
            )
        if parts.username or parts.password:
            raise ConfigError(
                "CAIRN_S3_ENDPOINT must not carry credentials; use AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or a profile or role) instead"
            )
    if ".." in s.s3_prefix.split("/"):
        raise ConfigError(f"CAIRN_S3_PREFIX must not contain '..', not {s.s3_prefix!r}")


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
