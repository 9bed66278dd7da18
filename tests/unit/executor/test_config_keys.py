"""The executor's settings in cairn.config: CAIRN_WORKERS, CAIRN_TERRAFORM_PATH,
CAIRN_RUN_TF_CLI_CONFIG."""

from __future__ import annotations

from pathlib import Path

import pytest

from cairn.config import from_environment
from cairn.errors import ConfigError


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("CAIRN_WORKERS", "CAIRN_TERRAFORM_PATH", "CAIRN_RUN_TF_CLI_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CAIRN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("CAIRN_DATABASE_URL", raising=False)
    monkeypatch.delenv("CAIRN_SECRET_KEY", raising=False)


def test_defaults() -> None:
    settings = from_environment()
    assert settings.workers == 1
    assert settings.terraform_path is None and settings.run_tf_cli_config is None


def test_values(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "run.tfrc"
    config.write_text("")
    monkeypatch.setenv("CAIRN_WORKERS", "0")
    monkeypatch.setenv("CAIRN_TERRAFORM_PATH", str(tmp_path))
    monkeypatch.setenv("CAIRN_RUN_TF_CLI_CONFIG", str(config))
    settings = from_environment()
    assert settings.workers == 0
    assert settings.terraform_path == tmp_path and settings.run_tf_cli_config == config


@pytest.mark.parametrize("value", ["-1", "two", "65", "1.5"])
def test_bad_worker_counts(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CAIRN_WORKERS", value)
    with pytest.raises(ConfigError, match="CAIRN_WORKERS"):
        from_environment()


def test_missing_paths_are_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CAIRN_TERRAFORM_PATH", str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match=r"CAIRN_TERRAFORM_PATH .* is not a directory"):
        from_environment()
    monkeypatch.delenv("CAIRN_TERRAFORM_PATH")
    monkeypatch.setenv("CAIRN_RUN_TF_CLI_CONFIG", str(tmp_path))
    with pytest.raises(ConfigError, match=r"CAIRN_RUN_TF_CLI_CONFIG .* is not a file"):
        from_environment()
