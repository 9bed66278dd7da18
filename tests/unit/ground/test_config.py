"""cairn.config: a configuration that cannot work is refused at start, saying what to change."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from cairn.config import MiB, Settings, from_environment, parse_listen
from cairn.errors import ConfigError

SECRET = "config-test-secret-key-0123456789abcdef"
PG_URL = "postgresql://cairn:s3cret-pw@db.example:5432/cairn"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CAIRN_* variable of the machine leaks into these tests."""
    for key in list(os.environ):
        if key.startswith("CAIRN_"):
            monkeypatch.delenv(key)


def settings(tmp_path: Path, **values: object) -> Settings:
    """Validated settings, the way cairn builds them (defaults filled in first)."""
    s = replace(Settings(data_dir=tmp_path), **values).with_defaults()  # type: ignore[arg-type]
    s.validate()
    return s


def refused(tmp_path: Path, **values: object) -> str:
    with pytest.raises(ConfigError) as caught:
        settings(tmp_path, **values)
    return str(caught.value)


# ---- defaults -------------------------------------------------------------------------------


def test_defaults(tmp_path: Path) -> None:
    s = settings(tmp_path)
    assert s.public_url == "https://localhost:8443"
    assert s.database_url == f"sqlite:///{tmp_path / 'cairn.db'}"
    assert s.blob_store == "filesystem" and not s.is_postgres
    assert s.max_state_bytes == 512 * MiB


def test_plain_http_public_url_and_trailing_slash(tmp_path: Path) -> None:
    assert settings(tmp_path, plain_http=True).public_url == "http://localhost:8443"
    s = settings(tmp_path, public_url="https://cairn.example.com/")
    assert s.public_url == "https://cairn.example.com"


# ---- refusals -------------------------------------------------------------------------------


def test_postgres_without_secret_key_is_refused(tmp_path: Path) -> None:
    message = refused(tmp_path, database_url=PG_URL)
    assert "CAIRN_SECRET_KEY is required" in message
    assert "s3cret-pw" not in message
    settings(tmp_path, database_url=PG_URL, secret_key=SECRET)  # accepted with a key


def test_short_secret_key_is_refused_without_echoing_it(tmp_path: Path) -> None:
    message = refused(tmp_path, secret_key="too-short-key")
    assert "at least 32 characters" in message
    assert "too-short-key" not in message


@pytest.mark.parametrize(
    "url", ["mysql://u:topsecret@h/db", "sqlite://relative.db", "postgres-ish://x", ""]
)
def test_unknown_database_url_is_refused_with_password_redacted(tmp_path: Path, url: str) -> None:
    s = replace(Settings(data_dir=tmp_path), database_url=url).with_defaults()
    if not url:  # empty means "the default SQLite file", which is fine
        s.validate()
        return
    with pytest.raises(ConfigError) as caught:
        s.validate()
    assert "CAIRN_DATABASE_URL" in str(caught.value)
    assert "topsecret" not in str(caught.value)


@pytest.mark.parametrize(
    "url", ["ftp://cairn.example.com", "cairn.example.com", "https://", "https://h/api"]
)
def test_bad_public_url_is_refused(tmp_path: Path, url: str) -> None:
    assert "CAIRN_PUBLIC_URL" in refused(tmp_path, public_url=url)


def test_plain_http_with_a_certificate_is_refused(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("cert")
    key.write_text("key")
    assert "exclude each other" in refused(tmp_path, plain_http=True, tls_cert=cert, tls_key=key)


def test_certificate_and_key_go_together(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("cert")
    assert "together" in refused(tmp_path, tls_cert=cert)
    assert "together" in refused(tmp_path, tls_key=cert)


def test_missing_tls_files_are_refused(tmp_path: Path) -> None:
    message = refused(tmp_path, tls_cert=tmp_path / "nope.pem", tls_key=tmp_path / "nokey.pem")
    assert "does not exist" in message


def test_unknown_blob_store_is_refused(tmp_path: Path) -> None:
    assert "CAIRN_BLOB_STORE" in refused(tmp_path, blob_store="s3-someday")


# ---- --listen ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:8443", ("127.0.0.1", 8443)),
        ("0.0.0.0:1", ("0.0.0.0", 1)),
        ("[::1]:65535", ("::1", 65535)),
        ("cairn.internal:443", ("cairn.internal", 443)),
    ],
)
def test_listen_values(value: str, expected: tuple[str, int]) -> None:
    assert parse_listen(value) == expected


@pytest.mark.parametrize(
    "value", ["8443", ":8443", "localhost:", "localhost:0", "localhost:65536", "h:https", "h:-1"]
)
def test_bad_listen_values_are_refused(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_listen(value)
    assert "HOST:PORT" in str(caught.value)
    assert repr(value) in str(caught.value)


# ---- the environment ------------------------------------------------------------------------


def test_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CAIRN_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CAIRN_LISTEN", "127.0.0.1:9000")
    monkeypatch.setenv("CAIRN_PLAIN_HTTP", "yes")
    monkeypatch.setenv("CAIRN_MAX_STATE_MB", "3")
    monkeypatch.setenv("CAIRN_BLOB_STORE", "database")
    s = from_environment()
    assert (s.data_dir, s.listen_port, s.plain_http) == (tmp_path.resolve(), 9000, True)
    assert s.public_url == "http://localhost:9000"
    assert s.max_state_bytes == 3 * MiB
    assert s.blob_store == "database"


def test_command_line_options_win_over_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CAIRN_DATA_DIR", str(tmp_path / "from-env"))
    monkeypatch.setenv("CAIRN_LISTEN", "127.0.0.1:9000")
    s = from_environment(data_dir=str(tmp_path / "from-cli"), listen="127.0.0.1:9001")
    assert s.data_dir == (tmp_path / "from-cli").resolve()
    assert s.listen_port == 9001


def test_postgres_from_environment_needs_the_secret_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CAIRN_DATABASE_URL", PG_URL)
    with pytest.raises(ConfigError, match="CAIRN_SECRET_KEY"):
        from_environment(data_dir=str(tmp_path))
    monkeypatch.setenv("CAIRN_SECRET_KEY", SECRET)
    assert from_environment(data_dir=str(tmp_path)).is_postgres


@pytest.mark.parametrize("value", ["0", "-5", "lots", "1.5"])
def test_bad_state_limit_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str
) -> None:
    monkeypatch.setenv("CAIRN_MAX_STATE_MB", value)
    with pytest.raises(ConfigError, match="CAIRN_MAX_STATE_MB"):
        from_environment(data_dir=str(tmp_path))


def test_bad_listen_in_environment_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CAIRN_LISTEN", "no-port")
    with pytest.raises(ConfigError, match="--listen"):
        from_environment(data_dir=str(tmp_path))


def test_settings_repr_hides_secrets(tmp_path: Path) -> None:
    s = settings(tmp_path, secret_key=SECRET, admin_token="cairn_admin_token_value")
    assert SECRET not in repr(s)
    assert "cairn_admin_token_value" not in repr(s)
