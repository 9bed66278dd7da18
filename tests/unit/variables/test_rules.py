"""The rules of a variable's key, category and value, on the model (no database)."""

from __future__ import annotations

import pytest

from cairn.errors import Invalid
from cairn.variables.model import (
    MAX_KEY,
    MAX_VALUE_BYTES,
    check_category,
    check_key,
    check_value,
    sealing_aad,
)


@pytest.mark.parametrize("key", ["a", "_", "region", "Name_2", "with-dash", "_x-1", "A" * MAX_KEY])
def test_terraform_keys_are_hcl_identifiers(key: str) -> None:
    assert check_key(key, "terraform") == key


@pytest.mark.parametrize(
    "key", ["", "1abc", "-x", "a b", "a.b", "a=b", "é", "a\nb", "${x}", "A" * (MAX_KEY + 1)]
)
def test_other_terraform_keys_are_refused(key: str) -> None:
    with pytest.raises(Invalid) as caught:
        check_key(key, "terraform")
    assert caught.value.pointer == "/data/attributes/key"


@pytest.mark.parametrize("key", ["A", "_", "TF_LOG", "aws_region", "X1"])
def test_env_keys_are_portable_names(key: str) -> None:
    assert check_key(key, "env") == key


@pytest.mark.parametrize("key", ["1A", "A-B", "A=B", "A B", "Ä"])
def test_other_env_keys_are_refused(key: str) -> None:
    with pytest.raises(Invalid, match="environment variable name"):
        check_key(key, "env")
    with pytest.raises(Invalid, match="must not be empty"):
        check_key("", "env")


def test_categories() -> None:
    assert check_category("terraform") == "terraform"
    assert check_category("env") == "env"
    with pytest.raises(Invalid, match="policy sets"):
        check_category("policy-set")
    with pytest.raises(Invalid, match="'terraform' or 'env'") as caught:
        check_category("TERRAFORM")
    assert caught.value.pointer == "/data/attributes/category"


def test_value_limit_is_in_utf8_bytes_and_the_error_does_not_quote_it() -> None:
    assert check_value("x" * MAX_VALUE_BYTES) == b"x" * MAX_VALUE_BYTES
    too_big = "é" * (MAX_VALUE_BYTES // 2 + 1)  # fewer characters than the limit, more bytes
    with pytest.raises(Invalid) as caught:
        check_value(too_big)
    assert "é" not in caught.value.detail
    assert caught.value.pointer == "/data/attributes/value"


def test_the_sealing_aad_names_the_variable_and_its_sensitivity() -> None:
    assert sealing_aad("var-1", sensitive=True) != sealing_aad("var-1", sensitive=False)
    assert sealing_aad("var-1", sensitive=True) != sealing_aad("var-2", sensitive=True)
