"""The token service's tests run against the VCS rig (``tests/support/vcs``): ``op`` is its
GitLab token endpoint with GitLab's refresh semantics, ``op_strict`` the one with
oidc-provider's reuse detection. Each test registers its own OAuth client on them."""

from __future__ import annotations

import pytest

from tests.support.app import app
from tests.support.vcs.gitlab_op import GitLabOp

__all__ = ["app"]


@pytest.fixture
def op(gitlab_op: GitLabOp) -> GitLabOp:
    """The loser of a refresh race gets invalid_grant; the winner's pair keeps working."""
    return gitlab_op


@pytest.fixture
def op_strict(gitlab_op_strict: GitLabOp) -> GitLabOp:
    """A replayed refresh token revokes the whole grant."""
    return gitlab_op_strict
