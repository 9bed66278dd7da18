"""pytest fixtures of the VCS rig: GitLab token endpoints and fake forges, stopped by pid.

Session servers are shared by every test that asks for them: a test isolates itself with its
own OAuth client (``gitlab_op.add_client()``) and its own repositories (unique paths), and reads
stats per client and records per repository. The factories start private ones (e.g. with a
delay or a short access TTL) that are stopped when the test ends. Listed in ``pytest_plugins``
of ``tests/conftest.py``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.vcs.forge import Forge, start_forge
from tests.support.vcs.gitlab_op import (
    DEFAULT_REDIRECT_URI,
    GitLabOp,
    GitLabOpUnavailable,
    check_installed,
    start_gitlab_op,
)

__all__ = [
    "forge",
    "forge_factory",
    "forge_strict",
    "gitlab_op",
    "gitlab_op_factory",
    "gitlab_op_strict",
]


def _require_node() -> None:
    try:
        check_installed()
    except GitLabOpUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {exc}", pytrace=False)
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def gitlab_op(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitLabOp]:
    """The session's GitLab token endpoint (GitLab-like refresh semantics)."""
    _require_node()
    op = start_gitlab_op(tmp_path_factory.mktemp("gitlab-op"))
    try:
        yield op
    finally:
        op.stop()


@pytest.fixture(scope="session")
def gitlab_op_strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitLabOp]:
    """The session's GitLab token endpoint with oidc-provider's strict reuse detection."""
    _require_node()
    op = start_gitlab_op(tmp_path_factory.mktemp("gitlab-op-strict"), strict=True)
    try:
        yield op
    finally:
        op.stop()


@pytest.fixture
def gitlab_op_factory(tmp_path: Path) -> Iterator[Callable[..., GitLabOp]]:
    """Start private token endpoints: ``(strict=False, access_ttl=7200, delay_ms=0,
    redirect_uris=(...)) -> GitLabOp``; all stopped at teardown."""
    _require_node()
    started: list[GitLabOp] = []

    def make(
        *,
        strict: bool = False,
        access_ttl: int = 7200,
        delay_ms: int = 0,
        redirect_uris: tuple[str, ...] | None = None,
    ) -> GitLabOp:
        op = start_gitlab_op(
            tmp_path / f"gitlab-op-{len(started)}",
            strict=strict,
            access_ttl=access_ttl,
            delay_ms=delay_ms,
            redirect_uris=redirect_uris or (DEFAULT_REDIRECT_URI,),
        )
        started.append(op)
        return op

    try:
        yield make
    finally:
        for op in started:
            op.stop()


@pytest.fixture(scope="session")
def forge(gitlab_op: GitLabOp, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Forge]:
    """The session's fake forge; its GitLab OAuth side is ``gitlab_op``."""
    srv = start_forge(tmp_path_factory.mktemp("forge"), gitlab_op)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def forge_strict(
    gitlab_op_strict: GitLabOp, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Forge]:
    """A fake forge whose GitLab OAuth side is ``gitlab_op_strict``."""
    srv = start_forge(tmp_path_factory.mktemp("forge-strict"), gitlab_op_strict)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def forge_factory(tmp_path: Path) -> Iterator[Callable[[GitLabOp], Forge]]:
    """Start private forges for a given token endpoint; stopped at teardown."""
    started: list[Forge] = []

    def make(op: GitLabOp) -> Forge:
        srv = start_forge(tmp_path / f"forge-{len(started)}", op)
        started.append(srv)
        return srv

    try:
        yield make
    finally:
        for srv in started:
            srv.stop()
