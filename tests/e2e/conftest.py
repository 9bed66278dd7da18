"""End-to-end fixtures: the offline provider mirror shared by every Terraform run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.terraform import build_provider_mirror


@pytest.fixture(scope="session")
def provider_mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A filesystem mirror holding hashicorp/null 2.1.2 (linux_amd64), built once."""
    return build_provider_mirror(tmp_path_factory.mktemp("provider-mirror"))
