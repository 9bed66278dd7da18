"""The fake forge's records, registry entries, repositories and merge requests.

Plain data the forge keeps (and the tests assert on), plus the small response helpers both API
flavours share. Secrets (tokens, keys, webhook secrets) are kept out of reprs.
"""

from __future__ import annotations

import functools
import json
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tests.support.vcs.gitrepo import GitRepo

if TYPE_CHECKING:
    from tests.support.vcs.state import ForgeState

GITLAB_REVOKED = "Token was revoked. You have to re-authorize from the user."
GITLAB_EXPIRED = "Token is expired. You can either do re-authorization or token refresh."
GITLAB_STATES = ("pending", "running", "success", "failed", "canceled")
GITHUB_STATES = ("pending", "success", "failure", "error")
GITHUB_DOCS = "https://docs.github.com/rest"
GITLAB_CHANGES_LIMIT = 1000  # GitLab's default max files in a diff
GITHUB_COMPARE_FILES = 300
GITHUB_PR_FILES = 3000
INSTALLATION_TOKEN_TTL = timedelta(hours=1)
BODY_LIMIT = 1024 * 1024

Handler = Callable[[Request, "Principal"], Awaitable[Response]]


@functools.cache
def http_backend() -> Path:
    """``git http-backend`` (Debian: /usr/lib/git-core/git-http-backend)."""
    exec_path = subprocess.run(
        ["git", "--exec-path"], capture_output=True, text=True, check=True
    ).stdout.strip()
    return Path(exec_path) / "git-http-backend"


def now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---- records and registry ----------------------------------------------------------------------
@dataclass(frozen=True)
class StatusRecord:
    flavor: str
    repo: str
    sha: str
    state: str
    context: str
    description: str | None
    target_url: str | None
    user: str
    at: datetime


@dataclass
class HookRecord:
    id: int
    flavor: str
    repo: str
    url: str
    secret: str | None = field(repr=False)
    events: tuple[str, ...]
    deleted: bool = False


@dataclass(frozen=True)
class CallRecord:
    method: str
    path: str
    flavor: str
    status: int
    user: str | None
    token: str | None = field(repr=False)


@dataclass
class IssuedToken:
    """A credential the forge issued itself (PAT, installation token, GitHub OAuth token)."""

    token: str = field(repr=False)
    kind: str  # gitlab_pat | github_pat | installation | github_oauth
    user: str
    scopes: tuple[str, ...]
    expires_at: datetime | None
    installation_id: int | None = None
    revoked: bool = False
    created_at: datetime = field(default_factory=now)

    def expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= now()


@dataclass(frozen=True)
class GitHubApp:
    app_id: str
    client_id: str
    slug: str
    private_key_pem: str = field(repr=False)
    public_key_pem: str = field(repr=False)


@dataclass
class Installation:
    id: int
    app: GitHubApp
    account: str
    repos: tuple[str, ...]


@dataclass(frozen=True)
class Principal:
    user: str
    kind: str  # gitlab_oauth | gitlab_pat | github_pat | installation | github_oauth | app
    token: str = field(repr=False)
    scopes: tuple[str, ...] = ()
    installation: Installation | None = None
    app: GitHubApp | None = None
    pat: IssuedToken | None = None


class Repo:
    """A repository of the forge: a real bare git repo plus its forge identity."""

    def __init__(self, forge: ForgeState, path: str, git_repo: GitRepo, number: int, private: bool):
        self.forge = forge
        self.path = path
        self.git = git_repo
        self.project_id = number
        self.github_id = number
        self.private = private
        self.forked_from: Repo | None = None

    def __repr__(self) -> str:
        return f"Repo({self.path!r}, project_id={self.project_id})"

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def namespace(self) -> str:
        return self.path.rsplit("/", 1)[0]

    @property
    def default_branch(self) -> str:
        return self.git.default_branch

    @property
    def clone_url(self) -> str:
        return f"{self.forge.url}/{self.path}.git"

    @property
    def web_url(self) -> str:
        return f"{self.forge.url}/{self.path}"

    def commit(
        self,
        files: dict[str, str | bytes | None],
        message: str = "change",
        branch: str | None = None,
        author: str = "alice",
    ) -> str:
        return self.git.commit(files, message, branch, author)

    def create_branch(self, name: str, from_ref: str | None = None) -> str:
        return self.git.create_branch(name, from_ref)

    def tag(self, name: str, ref: str | None = None, message: str | None = None) -> str:
        return self.git.tag(name, ref, message)

    def head(self, ref: str | None = None) -> str:
        sha = self.git.resolve(ref)
        if sha is None:
            raise KeyError(f"{self.path} has no ref {ref or self.default_branch}")
        return sha

    def files(self, sha: str) -> dict[str, bytes]:
        return self.git.files(sha)

    def changed_files(self, base: str, head: str) -> list[str]:
        return self.git.changed_files(base, head)

    def log(self, base: str | None, head: str) -> list[str]:
        return self.git.log(base, head)

    def fork(self, path: str) -> Repo:
        return self.forge.fork_repo(self, path)

    def commit_status(self, sha: str) -> dict[str, str]:
        """The latest state per context posted for ``sha``."""
        latest: dict[str, str] = {}
        for record in self.forge.statuses(self, sha):
            latest[record.context] = record.state
        return latest


@dataclass
class MergeRequest:
    """A GitLab merge request / GitHub pull request (one number space per target repo)."""

    number: int
    repo: Repo
    source_repo: Repo
    source_branch: str
    target_branch: str
    title: str
    state: str = "opened"  # opened | closed | merged
    merge_sha: str | None = None

    @property
    def iid(self) -> int:
        return self.number

    @property
    def head_sha(self) -> str:
        return self.source_repo.head(self.source_branch)

    @property
    def base_sha(self) -> str:
        target = self.repo.head(self.target_branch)
        if self.source_repo is not self.repo:
            self.repo.git.copy_objects_from(
                self.source_repo.git, f"refs/heads/{self.source_branch}"
            )
        return self.repo.git.merge_base(target, self.head_sha)

    @property
    def is_fork(self) -> bool:
        return self.source_repo is not self.repo

    def changed_files(self) -> list[str]:
        return [path for _, path, _ in self.changed_files_detailed()]

    def changed_files_detailed(self) -> list[tuple[str, str, str | None]]:
        """(status, path, old path) of the merge request's diff against the merge base."""
        base, head = self.base_sha, self.head_sha
        return self.repo.git.diff(base, head)


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers)


def presented_token(request: Request) -> str | None:
    """The credential a call carried (recorded even when it was refused)."""
    token = request.headers.get("private-token")
    if token:
        return token
    _, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() or None


def gitlab_404(what: str = "Project") -> JSONResponse:
    return json_response(404, {"message": f"404 {what} Not Found"})


def github_404() -> JSONResponse:
    return json_response(404, {"message": "Not Found", "documentation_url": GITHUB_DOCS})


async def form_or_json(request: Request) -> dict[str, Any]:
    body = await request.body()
    if len(body) > BODY_LIMIT:
        raise HTTPException(413, f"request body over {BODY_LIMIT} bytes")
    params: dict[str, Any] = dict(request.query_params)
    ctype = request.headers.get("content-type", "")
    if body and "json" in ctype:
        loaded = json.loads(body)
        if isinstance(loaded, dict):
            params.update(loaded)
    elif body:
        params.update(dict(parse_qsl(body.decode(), keep_blank_values=True)))
    return params
