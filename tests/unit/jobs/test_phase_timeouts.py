"""CAIRN_PLAN_TIMEOUT / CAIRN_APPLY_TIMEOUT: how long a phase (and its job token) may last."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest

from cairn.config import from_environment
from cairn.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("CAIRN_"):
            monkeypatch.delenv(name)


def test_two_hours_each_by_default(tmp_path: Path) -> None:
    settings = from_environment(data_dir=tmp_path)
    assert settings.plan_timeout == settings.apply_timeout == timedelta(hours=2)


def test_set_by_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAIRN_PLAN_TIMEOUT", "30m")
    monkeypatch.setenv("CAIRN_APPLY_TIMEOUT", "6h")
    settings = from_environment(data_dir=tmp_path)
    assert settings.plan_timeout == timedelta(minutes=30)
    assert settings.apply_timeout == timedelta(hours=6)


@pytest.mark.parametrize("value", ["0s", "30s", "3d", "soon"])
def test_refused_outside_one_minute_to_two_days(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("CAIRN_APPLY_TIMEOUT", value)
    with pytest.raises(ConfigError, match="CAIRN_APPLY_TIMEOUT"):
        from_environment(data_dir=tmp_path)
