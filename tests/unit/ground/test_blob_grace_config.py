"""CAIRN_BLOB_GRACE: how long unreferenced blobs are kept (a duration, at least an hour)."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest

from cairn.config import from_environment
from cairn.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("CAIRN_"):
            monkeypatch.delenv(key)


def test_default_is_a_day(tmp_path: Path) -> None:
    assert from_environment(data_dir=tmp_path).blob_grace == timedelta(hours=24)


def test_a_duration_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAIRN_BLOB_GRACE", "3d")
    assert from_environment(data_dir=tmp_path).blob_grace == timedelta(days=3)


@pytest.mark.parametrize("value", ["59m", "0", "soon", "-1h"])
def test_too_short_or_malformed_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("CAIRN_BLOB_GRACE", value)
    with pytest.raises(ConfigError, match="CAIRN_BLOB_GRACE"):
        from_environment(data_dir=tmp_path)
