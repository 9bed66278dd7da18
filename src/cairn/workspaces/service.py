"""Workspaces: creation, lookup, search, settings and deletion, one unit of work each.

The lock is in ``workspaces.locks``, tags in ``workspaces.tags``, row access in
``workspaces.store`` (what other domains use).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError

from cairn import authz, ids
from cairn.authz.permissions import ORG_MANAGE, WORKSPACE_MANAGE
from cairn.authz.subject import Subject, holder_of
from cairn.clock import Clock
from cairn.db.engine import Database, affected
from cairn.errors import Conflict, Invalid
from cairn.names import check_slug
from cairn.organizations import store as orgs
from cairn.paging import Page
from cairn.workspaces import store, tags
from cairn.workspaces.events import WorkspaceHooks
from cairn.workspaces.model import Workspace
from cairn.workspaces.store import ListFilter, WorkspaceView

__all__ = [
    "MAX_WORKSPACE_NAME",
    "ListFilter",
    "VcsRepoChange",
    "WorkspaceService",
    "WorkspaceSettings",
    "WorkspaceView",
    "apply_vcs_repo",
]

MAX_WORKSPACE_NAME = 90


@dataclass
class VcsRepoChange:
    """A workspace's ``vcs-repo`` change; None fields: leave as is (``remove``: disconnect).
    ``branch``/``tags_regex`` "" clear them. The ``vcs`` domain's check_settings hook checks
    the token or installation and fills the connection's columns."""

    remove: bool = False
    identifier: str | None = None
    branch: str | None = None
    ingress_submodules: bool | None = None
    oauth_token_id: str | None = None
    github_app_installation_id: str | None = None
    tags_regex: str | None = None


def apply_vcs_repo(ws: Workspace, change: VcsRepoChange) -> None:
    """Write a ``vcs-repo`` change on the row (before the hooks check it)."""
    if change.remove:
        ws.vcs_oauth_token_id = None
        ws.vcs_oauth_client_id = None
        ws.vcs_identifier = None
        ws.vcs_branch = None
        ws.vcs_tags_regex = None
        ws.vcs_ingress_submodules = False
        ws.vcs_service_provider = None
        ws.vcs_repository_http_url = None
        ws.vcs_github_app_installation_id = None
        return
    if change.identifier is not None:
        ws.vcs_identifier = change.identifier
    if change.branch is not None:
        ws.vcs_branch = change.branch or None
    if change.ingress_submodules is not None:
        ws.vcs_ingress_submodules = change.ingress_submodules
    if change.tags_regex is not None:
        ws.vcs_tags_regex = change.tags_regex or None
    # An installation is named by its ``ghain-…`` ID; the vcs hook resolves it to its token.
    if change.github_app_installation_id is not None:
        ws.vcs_oauth_token_id = change.github_app_installation_id
    elif change.oauth_token_id is not None:
        ws.vcs_oauth_token_id = change.oauth_token_id
        ws.vcs_github_app_installation_id = None  # named by its token from now on


@dataclass
class WorkspaceSettings:
    """Attributes a create or update may set; None means "leave as is" (or default)."""

    name: str | None = None
    description: str | None = None
    execution_mode: str | None = None
    terraform_version: str | None = None
    auto_apply: bool | None = None
    working_directory: str | None = None
    allow_destroy_plan: bool | None = None
    global_remote_state: bool | None = None
    speculative_enabled: bool | None = None
    queue_all_runs: bool | None = None
    # The agent pool (``execution-mode: agent``); "" clears it. Checked by the agents domain
    # (``WorkspaceHooks.check_settings``). Changing the mode to another one clears it too.
    agent_pool_id: str | None = None
    # same | distinct_subject | none; "" clears it (the organization's default again).
    speculative_plan_credentials: str | None = None
    project_id: str | None = None
    tags: list[str] = field(default_factory=list)
    vcs_repo: VcsRepoChange | None = None  # None: no change
    file_triggers_enabled: bool | None = None
    trigger_prefixes: list[str] | None = None
    trigger_patterns: list[str] | None = None


_SETTABLE = (
    "description",
    "execution_mode",
    "terraform_version",
    "auto_apply",
    "working_directory",
    "allow_destroy_plan",
    "global_remote_state",
    "speculative_enabled",
    "queue_all_runs",
    "file_triggers_enabled",
    "trigger_prefixes",
    "trigger_patterns",
)


def _taken(where: str) -> Invalid:
    return Invalid(
        f"Name has already been taken: workspace {where} exists", pointer="/data/attributes/name"
    )


class WorkspaceService:
    def __init__(self, db: Database, clock: Clock, hooks: WorkspaceHooks | None = None) -> None:
        self._db = db
        self._clock = clock
        self.hooks = hooks if hooks is not None else WorkspaceHooks()

    # ---- lookups ----------------------------------------------------------------------------

    def get(self, caller: Subject, ws_id: str) -> WorkspaceView:
        # Core on the request's connection (a hot path: no Session, store.show).
        with self._db.read_transaction() as conn:
            return store.show(conn, caller, ws_id)

    def get_by_name(self, caller: Subject, org_name: str, name: str) -> WorkspaceView:
        with self._db.read_transaction() as conn:
            return store.show_by_name(conn, caller, org_name, name)

    def resolve(self, caller: Subject, org_name: str | None, name_or_id: str) -> str:
        """The ID of a workspace named by ID, or by organization and name."""
        with self._db.unit_of_work() as s:
            if org_name is None:
                return store.find(s, caller, name_or_id)[1].id
            return store.find_by_name(s, caller, org_name, name_or_id)[1].id

    def search(
        self, caller: Subject, org_name: str, flt: ListFilter, page: Page
    ) -> tuple[list[WorkspaceView], int]:
        with self._db.unit_of_work() as s:
            org = orgs.readable(s, caller, org_name)
            rows, total = store.search(s, caller, org, flt, page)
            return store.views(s, caller, org, rows), total

    # ---- create / update / delete ------------------------------------------------------------

    def create(self, caller: Subject, org_name: str, change: WorkspaceSettings) -> WorkspaceView:
        name = check_slug("workspace", change.name or "", max_len=MAX_WORKSPACE_NAME)
        now = self._clock.now()
        with self._db.unit_of_work(write=True) as s:
            org = orgs.readable(s, caller, org_name)
            # A grant of workspace:manage on a matching name pattern (or on the workspaces of
            # the project named: team-project access) suffices; otherwise the organization's
            # managers (403: the caller may see the organization).
            wanted = authz.Ws(org.id, org.name, "", name, change.project_id)
            if not authz.allowed(caller, WORKSPACE_MANAGE, wanted):
                authz.require(caller, ORG_MANAGE, orgs.target(org), doing="create workspaces in")
            ws = Workspace(
                id=ids.new_id("workspace"),
                organization_id=org.id,
                project_id=store.placement(
                    s, caller, org, change.project_id, doing="create workspaces in"
                ),
                name=name,
                description=change.description or "",
                execution_mode=change.execution_mode or org.default_execution_mode,
                terraform_version=change.terraform_version or "latest",
                auto_apply=bool(change.auto_apply),
                working_directory=change.working_directory or "",
                allow_destroy_plan=True
                if change.allow_destroy_plan is None
                else change.allow_destroy_plan,
                global_remote_state=bool(change.global_remote_state),
                speculative_enabled=True
                if change.speculative_enabled is None
                else change.speculative_enabled,
                queue_all_runs=bool(change.queue_all_runs),
                agent_pool_id=change.agent_pool_id or None,
                speculative_plan_credentials=change.speculative_plan_credentials or None,
                file_triggers_enabled=True
                if change.file_triggers_enabled is None
                else change.file_triggers_enabled,
                trigger_prefixes=list(change.trigger_prefixes or []),
                trigger_patterns=list(change.trigger_patterns or []),
                vcs_ingress_submodules=False,
                created_at=now,
                updated_at=now,
            )
            if change.vcs_repo is not None:
                apply_vcs_repo(ws, change.vcs_repo)
            self.hooks.checked(s, org, ws)
            s.add(ws)
            try:
                s.flush()
            except IntegrityError:
                raise _taken(f"{org_name}/{name}") from None
            tags.add_tags(s, org, ws, change.tags, "/data/attributes/tag-names")
            s.commit()
            return store.view(s, caller, org, ws)

    def update(self, caller: Subject, ws_id: str, change: WorkspaceSettings) -> WorkspaceView:
        with self._db.unit_of_work(write=True) as s:
            org, ws = store.find(s, caller, ws_id)
            authz.require(
                caller, WORKSPACE_MANAGE, store.target(org, ws), doing="change the settings of"
            )
            if change.name is not None and change.name != ws.name:
                ws.name = check_slug("workspace", change.name, max_len=MAX_WORKSPACE_NAME)
            for attr in _SETTABLE:
                value = getattr(change, attr)
                if value is not None:
                    setattr(ws, attr, value)
            if change.agent_pool_id is not None:
                ws.agent_pool_id = change.agent_pool_id or None
            elif change.execution_mode is not None and change.execution_mode != "agent":
                ws.agent_pool_id = None  # leaving agent execution leaves its pool
            if change.speculative_plan_credentials is not None:
                ws.speculative_plan_credentials = change.speculative_plan_credentials or None
            if change.project_id is not None and change.project_id != ws.project_id:
                moved_to = store.placement(
                    s, caller, org, change.project_id, doing="move workspaces into"
                )
                store.leave_project(s, caller, org, ws)
                ws.project_id = moved_to
            if change.vcs_repo is not None:
                apply_vcs_repo(ws, change.vcs_repo)
            ws.updated_at = self._clock.now()
            self.hooks.checked(s, org, ws)
            taken = f"{org.name}/{change.name}"  # read before a failed flush spoils the objects
            try:
                s.flush()
            except IntegrityError:
                raise _taken(taken) from None
            s.commit()
            return store.view(s, caller, org, ws)

    def delete(self, caller: Subject, ws_id: str, *, safe: bool) -> None:
        with self._db.unit_of_work(write=True) as s:
            org, ws = store.find(s, caller, ws_id)
            where = f"workspace {org.name}/{ws.name}"
            authz.require(caller, WORKSPACE_MANAGE, store.target(org, ws), doing="delete")
            # Its lock holder may delete it (terraform workspace delete holds the lock).
            if ws.locked and not ws.held_by(holder_of(caller)):
                raise Conflict(f"{where} is locked; unlock it before deleting it")
            if safe and ws.resource_count > 0:
                raise Conflict(
                    f"{where} still manages {ws.resource_count} resource instance(s); destroy "
                    "them first, or delete the workspace without safe-delete"
                )
            self.hooks.deleting(s, org, ws)
            # Conditional on the lock as read above, so a lock taken meanwhile wins.
            gone = affected(
                s.execute(
                    delete(Workspace).where(Workspace.id == ws.id, Workspace.lock_is(ws.holder))
                )
            )
            if gone != 1:
                raise Conflict(f"{where} was locked meanwhile; try again")
            s.commit()
