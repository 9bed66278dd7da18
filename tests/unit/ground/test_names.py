"""cairn.names: what organization, workspace, project and tag names may contain."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cairn.errors import Invalid
from cairn.names import check_project_name, check_slug, check_tag

GO_TFE_NAME = re.compile(r"^[a-zA-Z0-9\-\._]+$")  # go-tfe validations.go (client side)


@pytest.mark.parametrize("name", ["a", "acme", "my-org", "my_org", "Org-2", "A" * 90])
def test_valid_slugs(name: str) -> None:
    assert check_slug("workspace", name, max_len=90) == name


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("team/app", "'/'"),
        ("team:app", "':'"),
        ("team app", "' '"),
        ("a.b", "'.'"),
        ("caf\u00e9", "'\u00e9'"),
        ("x\ny", "'\\n'"),
        ("a/b:c d", "' ' '/' ':'"),
    ],
)
def test_reserved_characters_are_named_in_the_error(name: str, shown: str) -> None:
    with pytest.raises(Invalid) as caught:
        check_slug("workspace", name, max_len=90)
    err = caught.value
    assert err.status == 422
    assert err.pointer == "/data/attributes/name"
    assert repr(name) in err.detail
    assert shown in err.detail
    assert "letters, numbers" in err.detail


def test_empty_and_too_long_names() -> None:
    with pytest.raises(Invalid, match="must not be empty"):
        check_slug("organization", "", max_len=100)
    with pytest.raises(Invalid, match="at most 100 characters"):
        check_slug("organization", "a" * 101, max_len=100)


def test_pointer_is_configurable() -> None:
    with pytest.raises(Invalid) as caught:
        check_slug("workspace", "a:b", max_len=90, pointer="/data/attributes/new-name")
    assert caught.value.pointer == "/data/attributes/new-name"


@given(st.text(max_size=40))
def test_accepted_slugs_are_safe_for_urls_and_subjects(name: str) -> None:
    """Whatever check_slug accepts, go-tfe accepts too, and it cannot break a path or a
    workload-identity subject (`organization:{org}:workspace:{ws}:…`)."""
    try:
        check_slug("workspace", name, max_len=90)
    except Invalid:
        assert not re.fullmatch(r"[A-Za-z0-9_-]+", name)
        return
    assert GO_TFE_NAME.match(name)
    assert not set(name) & set("/: \t\n.%?#")


@pytest.mark.parametrize("name", ["Default Project", "infra", "team_a-1"])
def test_valid_project_names(name: str) -> None:
    assert check_project_name(name) == name


@pytest.mark.parametrize("name", ["", "   ", "a/b", "a:b", "x" * 41])
def test_invalid_project_names(name: str) -> None:
    with pytest.raises(Invalid) as caught:
        check_project_name(name)
    assert caught.value.pointer == "/data/attributes/name"


@pytest.mark.parametrize("tag", ["prod", "team:infra", "a-b_c", "0day", " padded "])
def test_valid_tags(tag: str) -> None:
    assert check_tag(tag, pointer="/data/0") == tag.strip()


@pytest.mark.parametrize("tag", ["", "Prod", "-lead", ":x", "has space", "x" * 256, "caf\u00e9"])
def test_invalid_tags(tag: str) -> None:
    with pytest.raises(Invalid) as caught:
        check_tag(tag, pointer="/data/attributes/tag-names/3")
    assert caught.value.pointer == "/data/attributes/tag-names/3"
    assert "lowercase" in caught.value.detail
