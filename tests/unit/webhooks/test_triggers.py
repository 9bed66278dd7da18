"""HCP's VCS trigger rules (webhooks/triggers.py)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from cairn.webhooks.events import VcsEvent
from cairn.webhooks.triggers import WorkspaceTriggers, any_triggers, decide, glob_regex

SHA = "a" * 40
WS = WorkspaceTriggers(id="ws-1", name="net")


def push(**over: Any) -> VcsEvent:
    base: dict[str, Any] = dict(
        provider="gitlab", kind="push", repo="g/p", default_branch="main", sha=SHA, branch="main"
    )
    base.update(over)
    return VcsEvent(**base)


def pr(**over: Any) -> VcsEvent:
    return push(kind="pull_request", action="opened", pr_number=1, **over)


def tag(name: str = "v1.2.3", **over: Any) -> VcsEvent:
    return push(kind="tag", branch=None, tag=name, **over)


def verdict(
    event: VcsEvent, ws: WorkspaceTriggers = WS, files: Any = None, fork: bool = False
) -> str:
    return decide(event, ws, files=files, allow_fork_plans=fork).verdict


def test_push_to_default_branch_runs_when_branch_unset() -> None:
    assert verdict(push()) == "run"
    assert verdict(push(branch="dev")) == "skip"
    assert verdict(push(branch="dev"), replace(WS, branch="dev")) == "run"
    assert verdict(push(), replace(WS, branch="dev")) == "skip"


def test_deleted_branch_and_tag_start_nothing() -> None:
    assert verdict(push(deleted=True)) == "skip"
    assert verdict(tag(deleted=True), replace(WS, tags_regex=r"^v")) == "skip"


def test_tags_regex() -> None:
    ws = replace(WS, tags_regex=r"^v\d+\.\d+\.\d+$")
    assert verdict(tag("v1.2.3"), ws) == "run"
    assert verdict(tag("v1.2"), ws) == "skip"
    assert verdict(tag("v1.2.3"), WS) == "skip"  # no tags-regex: tags start nothing
    assert verdict(push(), ws) == "skip"  # tag-triggered workspaces ignore branch pushes
    assert verdict(tag("x"), replace(WS, tags_regex="(")) == "skip"  # invalid regex: no match


def test_tags_ignore_file_triggers() -> None:
    ws = replace(WS, tags_regex="v", working_directory="infra")
    assert verdict(tag("v1"), ws, files=["docs/readme.md"]) == "run"


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        ("opened", "plan"),
        ("reopened", "plan"),
        ("synchronize", "plan"),
        ("update", "skip"),
        ("closed", "skip"),
        ("edited", "skip"),
        (None, "skip"),
    ],
)
def test_change_request_actions(action: str | None, expected: str) -> None:
    assert verdict(push(kind="pull_request", action=action)) == expected


def test_change_request_branch_speculative_and_forks() -> None:
    assert verdict(pr(branch="dev")) == "skip"
    assert verdict(pr(), replace(WS, speculative_enabled=False)) == "skip"
    d = decide(pr(is_fork=True), WS, files=None, allow_fork_plans=False)
    assert d.verdict == "skip" and "fork" in d.reason
    assert verdict(pr(is_fork=True), fork=True) == "plan"


def test_queue_all_runs_guard() -> None:
    fresh = replace(WS, has_runs=False)
    d = decide(push(), fresh, files=None, allow_fork_plans=False)
    assert d.verdict == "skip" and "queue-all-runs" in d.reason
    assert verdict(push(), replace(fresh, queue_all_runs=True)) == "run"
    assert verdict(pr(), fresh) == "skip"


def test_a_commit_already_run_is_skipped() -> None:
    d = decide(push(), replace(WS, sha_already_run=True), files=None, allow_fork_plans=False)
    assert d.verdict == "skip" and "already" in d.reason


def test_file_triggers_working_directory_and_prefixes() -> None:
    ws = replace(WS, working_directory="/infra/net/", trigger_prefixes=["modules"])
    assert verdict(push(), ws, files=["infra/net/main.tf"]) == "run"
    assert verdict(push(), ws, files=["modules/vpc/main.tf"]) == "run"
    assert verdict(push(), ws, files=[]) == "skip"
    d = decide(push(), ws, files=["infra/network/x.tf", "README.md"], allow_fork_plans=False)
    assert (d.verdict, d.untouched) == ("skip", True)
    # unknown list (too many commits) → run; file triggers off → run
    assert verdict(push(), ws, files=None) == "run"
    assert verdict(push(), replace(ws, file_triggers_enabled=False), files=["README.md"]) == "run"
    # a change request is filtered the same way
    assert verdict(pr(), ws, files=["README.md"]) == "skip"
    assert verdict(pr(), ws, files=["infra/net/a.tf"]) == "plan"


def test_root_working_directory_takes_every_change() -> None:
    assert verdict(push(), WS, files=["anything/at/all"]) == "run"
    assert verdict(push(), replace(WS, working_directory="./"), files=["x"]) == "run"


def test_patterns_replace_the_directory_rule() -> None:
    ws = replace(WS, working_directory="infra", trigger_patterns=["/modules/**/*.tf"])
    assert verdict(push(), ws, files=["modules/a/b/c.tf"]) == "run"
    assert verdict(push(), ws, files=["modules/c.tf"]) == "run"
    assert verdict(push(), ws, files=["infra/main.tf"]) == "skip"


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("*.tf", "main.tf", True),
        ("*.tf", "sub/main.tf", False),
        ("/*.tf", "main.tf", True),
        ("**/*.tf", "main.tf", True),
        ("**/*.tf", "a/b/main.tf", True),
        ("**/networking/*", "x/networking/vpc.tf", True),
        ("**/networking/*", "networking/sub/vpc.tf", False),
        ("mod?/*.tf", "mod1/a.tf", True),
        ("mod?/*.tf", "mod12/a.tf", False),
        ("mod?/*.tf", "mod//a.tf", False),
        ("*", ".terraform.lock.hcl", True),
        ("**/.*", "a/.hidden", True),
        ("docs/", "docs/x/y.md", True),
        ("src/**", "src/a/b", True),
        ("a+b(c)/*.tf", "a+b(c)/x.tf", True),
        ("a+b(c)/*.tf", "aab(c)/x.tf", False),
    ],
)
def test_glob(pattern: str, path: str, matches: bool) -> None:
    assert (glob_regex(pattern).fullmatch(path) is not None) is matches


def test_any_triggers_ignores_leading_slash_on_paths() -> None:
    assert any_triggers(["/infra/a.tf"], replace(WS, working_directory="infra"))
