"""Forge clients: the GitLab v4 and GitHub REST calls cairn makes with a ``ForgeCredential``.

``forge_for(credential)`` picks the client for the connection's kind; build one per call
site (it holds the token of that moment). A 401 from the forge means the token was rotated
or revoked since it was read: ``with_fresh_credential`` asks ``VcsTokens`` once more and
retries the call once (never a loop). Every error is a ``ForgeError`` (502, the forge's status
in the message, never a token), ``ForgeUnreachable`` (network, timeout, 5xx: try later) or
``PayloadTooLarge`` (an archive over ``CAIRN_MAX_CONFIG_MB``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Protocol, TypeVar

import httpx

from cairn.vcs.forges.base import (
    DEFAULT_MAX_ARCHIVE_BYTES,
    CommitInfo,
    ForgeUnauthorized,
)
from cairn.vcs.tokens import ForgeCredential, ForgeError, ForgeUnreachable

T = TypeVar("T")


class Forge(Protocol):
    """What cairn asks of a forge (GitLab ``group/project`` or GitHub ``owner/repo`` ids)."""

    def whoami(self) -> tuple[str, datetime | None]: ...
    def default_branch(self, repo: str) -> str: ...
    def archive(self, repo: str, sha: str) -> Iterator[bytes]: ...
    def commit(self, repo: str, sha: str) -> CommitInfo: ...
    def compare_files(self, repo: str, base: str, head: str) -> list[str] | None: ...
    def merge_request_files(self, repo: str, number: int) -> list[str] | None: ...
    def set_status(
        self,
        repo: str,
        sha: str,
        state: str,
        context: str,
        description: str,
        target_url: str | None,
    ) -> None: ...
    def create_hook(self, repo: str, url: str, secret: str) -> str: ...
    def delete_hook(self, repo: str, hook_id: str) -> None: ...


def forge_for(
    credential: ForgeCredential,
    *,
    http: httpx.Client | None = None,
    max_archive_bytes: int = DEFAULT_MAX_ARCHIVE_BYTES,
) -> Forge:
    """The client for ``credential``'s forge."""
    from cairn.vcs.forges.github import GitHubForge
    from cairn.vcs.forges.gitlab import GitLabForge

    if credential.kind.startswith("gitlab"):
        return GitLabForge(credential, http=http, max_archive_bytes=max_archive_bytes)
    return GitHubForge(credential, http=http, max_archive_bytes=max_archive_bytes)


def with_fresh_credential(
    credential: Callable[[], ForgeCredential],
    call: Callable[[Forge], T],
    *,
    http: httpx.Client | None = None,
    max_archive_bytes: int = DEFAULT_MAX_ARCHIVE_BYTES,
) -> T:
    """``call(forge)``; on a 401, read the credential once more (it may have been rotated by
    another replica) and call once more. A second 401 is the forge's final word."""
    try:
        return call(forge_for(credential(), http=http, max_archive_bytes=max_archive_bytes))
    except ForgeUnauthorized:
        return call(forge_for(credential(), http=http, max_archive_bytes=max_archive_bytes))


__all__ = [
    "CommitInfo",
    "Forge",
    "ForgeError",
    "ForgeUnauthorized",
    "ForgeUnreachable",
    "forge_for",
    "with_fresh_credential",
]
