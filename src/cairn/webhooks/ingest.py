"""The ingest: what a verified webhook delivery does (called by the worker, in a worker thread,
outside any transaction — it talks to the forge).

For one delivery (``handle``):

1. parse the body into a :class:`~cairn.webhooks.events.VcsEvent` (a malformed one fails the
   delivery with the field it lacks);
2. find the workspaces linked to this connection and repository, and decide for each
   (``webhooks.triggers``, HCP's rules) with what the payload says; when some workspace's file
   triggers need the changed files and the payload cannot list them, ask the forge once
   (compare API for a push, the change request's files for a merge/pull request), then decide
   again;
3. fetch the commit's archive once (``webhooks.archives``: cached per connection, repository
   and commit);
4. per workspace to run, one transaction: a configuration version from the commit with its
   ingress attributes (``configversions``) and a run (``runs.service.queue_from_vcs``: a
   speculative plan for a change request, so the workspace's speculative-plan credentials
   apply; otherwise a run that auto-applies when the workspace does). The run's first
   transition writes the commit status (``webhooks.statuses.StatusHook``);
5. a commit whose changes concern none of the workspaces gets a passing status (HCP).

Idempotent per delivery: a workspace's (commit, speculative) is unique in the ingress table,
so a redelivered event, or one claimed again after a worker died, starts nothing twice — the
second transaction fails on the unique index and that workspace is reported "already run".

The forge credential of a workspace is its ``vcs-repo`` token's (``vcs.tokens.VcsTokens``: a
refresh, when due, happens here, single-flight across replicas). A token needing
re-authorisation raises ``NeedsReauth`` (a 409): the delivery fails at once saying so. Forge
errors (5xx, unreachable) are retried by the worker.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from sqlalchemy import exists, func, select
from sqlalchemy.exc import IntegrityError

from cairn.blobs.store import BlobStore
from cairn.clock import Clock
from cairn.configversions.model import ConfigurationVersionIngress
from cairn.configversions.service import ConfigVersions
from cairn.db.engine import Database
from cairn.organizations.model import Organization
from cairn.runs.model import Run
from cairn.runs.scheduler import lock_workspace_row
from cairn.runs.service import RunService
from cairn.vcs.model import OAuthClient
from cairn.vcs.tokens import ForgeError
from cairn.webhooks import archives, statuses
from cairn.webhooks.events import ZERO_SHA, VcsEvent, parse
from cairn.webhooks.model import Delivery, DeliveryFailed, one_line
from cairn.webhooks.triggers import Decision, WorkspaceTriggers, decide
from cairn.workspaces.model import Workspace

log = logging.getLogger("cairn.webhooks")


class IngestForge(Protocol):
    """What the ingest and the status poster need of a forge client (``vcs.forges.Forge``)."""

    def archive(self, repo: str, sha: str) -> Iterator[bytes]: ...
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


@dataclass(frozen=True)
class IngestServices:
    """What ``handle`` needs, bound once in ``app.py``. ``forge_for`` gives a forge client
    for a token ID (``forge_for(vcs_tokens.credential(token_id))``)."""

    db: Database
    clock: Clock
    blobs: BlobStore
    configs: ConfigVersions
    runs: RunService
    forge_for: Callable[[str], IngestForge]
    public_url: str


@dataclass(frozen=True)
class _Target:
    ws: WorkspaceTriggers
    token_id: str | None
    execution_mode: str
    has_pool: bool


def handle(services: IngestServices, delivery: Delivery) -> str:
    """Handle one delivery; its outcome, one line for the vcs-events list."""
    event = parse(delivery.provider, delivery.event, delivery.body)
    if event is None:
        return f"{delivery.event} events start nothing"
    if event.kind == "ping":
        return "ping received: the webhook reaches cairn"
    what = _describe(event)
    client, targets = _targets(services, delivery, event)
    if not targets:
        return one_line(f"{what}: no workspace uses {event.repo} through this connection")
    allow_forks = client.allow_fork_plans
    decisions = {t.ws.id: _decide(event, t, event.changed_files, allow_forks) for t in targets}
    files: Sequence[str] | None = event.changed_files
    if files is None and any(
        _needs_files(t.ws) and decisions[t.ws.id].verdict != "skip" for t in targets
    ):
        files = _changed_files(services, event, _token(targets))
        if files is not None:
            decisions = {t.ws.id: _decide(event, t, files, allow_forks) for t in targets}
    to_run = [t for t in targets if decisions[t.ws.id].verdict != "skip"]
    report: list[str] = []
    started = 0
    if to_run:
        blob = _archive(services, delivery.oauth_client_id, event, _token(to_run))
        for t in to_run:
            started_run = _start(services, delivery, event, t, decisions[t.ws.id], blob)
            if started_run is None:
                report.append(f"{t.ws.name}: commit already run")
            else:
                started += 1
                report.append(f"{t.ws.name}: {decisions[t.ws.id].reason} {started_run}")
    for t in targets:
        d = decisions[t.ws.id]
        if d.verdict == "skip":
            report.append(f"{t.ws.name}: skipped ({d.reason})")
    untouched = [t for t in targets if decisions[t.ws.id].untouched]
    if not started and untouched:
        _passing_status(services, delivery, event, _token(untouched))
    return one_line(f"{what}: " + "; ".join(report))


def _describe(event: VcsEvent) -> str:
    if event.kind == "pull_request":
        return f"change request !{event.pr_number} {event.action} on {event.repo}@{event.sha[:12]}"
    ref = f"tag {event.tag}" if event.kind == "tag" else f"push to {event.branch}"
    return f"{ref} on {event.repo}@{event.sha[:12]}"


def _targets(
    services: IngestServices, delivery: Delivery, event: VcsEvent
) -> tuple[OAuthClient, list[_Target]]:
    speculative = event.kind == "pull_request"
    with services.db.unit_of_work() as s:
        client = s.get(OAuthClient, delivery.oauth_client_id)
        if client is None:
            raise DeliveryFailed("the connection was deleted; nothing to do")
        s.expunge(client)
        rows = s.scalars(
            select(Workspace)
            .where(
                Workspace.vcs_oauth_client_id == client.id,
                func.lower(Workspace.vcs_identifier) == event.repo.lower(),
            )
            .order_by(Workspace.name)
        ).all()
        targets: list[_Target] = []
        for ws in rows:
            has_runs = s.scalar(select(exists().where(Run.workspace_id == ws.id)))
            already = s.scalar(
                select(
                    exists().where(
                        ConfigurationVersionIngress.workspace_id == ws.id,
                        ConfigurationVersionIngress.commit_sha == event.sha,
                        ConfigurationVersionIngress.speculative.is_(speculative),
                    )
                )
            )
            targets.append(
                _Target(
                    ws=WorkspaceTriggers(
                        id=ws.id,
                        name=ws.name,
                        branch=ws.vcs_branch or None,
                        tags_regex=ws.vcs_tags_regex or None,
                        working_directory=ws.working_directory,
                        file_triggers_enabled=ws.file_triggers_enabled,
                        trigger_prefixes=tuple(ws.trigger_prefixes or ()),
                        trigger_patterns=tuple(ws.trigger_patterns or ()),
                        speculative_enabled=ws.speculative_enabled,
                        queue_all_runs=ws.queue_all_runs,
                        has_runs=bool(has_runs),
                        sha_already_run=bool(already),
                    ),
                    token_id=ws.vcs_oauth_token_id,
                    execution_mode=ws.execution_mode,
                    has_pool=ws.agent_pool_id is not None,
                )
            )
        return client, targets


def _decide(
    event: VcsEvent, t: _Target, files: Sequence[str] | None, allow_forks: bool
) -> Decision:
    d = decide(event, t.ws, files=files, allow_fork_plans=allow_forks)
    if d.verdict == "skip":
        return d
    if t.execution_mode == "local":
        return replace(d, verdict="skip", reason="the workspace uses local execution")
    if t.execution_mode == "agent" and not t.has_pool:
        return replace(d, verdict="skip", reason="the workspace names no agent pool")
    if t.token_id is None:
        return replace(d, verdict="skip", reason="the workspace's vcs-repo has no token")
    return d


def _needs_files(ws: WorkspaceTriggers) -> bool:
    """Whether the workspace's file triggers can skip a change (a root working directory with
    no prefixes or patterns takes every change)."""
    if not ws.file_triggers_enabled:
        return False
    if ws.trigger_patterns or ws.trigger_prefixes:
        return True
    return bool((ws.working_directory or "").strip().strip("/").strip("."))


def _token(targets: Sequence[_Target]) -> str:
    for t in targets:
        if t.token_id:
            return t.token_id
    raise DeliveryFailed("no workspace on this repository has a VCS token to read it with")


def _changed_files(services: IngestServices, event: VcsEvent, token_id: str) -> list[str] | None:
    """The changed files as the forge lists them; None when it cannot say (a new branch, a
    force push whose old head is gone: the forge answers 404/422) — then every workspace runs,
    as in HCP. A forge that is down or a token refused is raised (the delivery is retried or
    fails with the reason)."""
    forge = services.forge_for(token_id)
    try:
        if event.kind == "pull_request" and event.pr_number is not None:
            return forge.merge_request_files(event.repo, event.pr_number)
        if event.kind == "push" and event.before and event.before != ZERO_SHA:
            return forge.compare_files(event.repo, event.before, event.sha)
    except ForgeError as exc:
        if exc.forge_status not in (404, 422):
            raise
        log.info("the forge cannot list the changed files", extra={"why": exc.detail})
    return None


def _archive(
    services: IngestServices, oauth_client_id: str, event: VcsEvent, token_id: str
) -> tuple[str, int]:
    hit = archives.cached(services.db, oauth_client_id, event.repo, event.sha)
    if hit is not None:
        return hit
    forge = services.forge_for(token_id)
    return archives.store_archive(
        services.db,
        services.blobs,
        forge.archive(event.repo, event.sha),
        oauth_client_id=oauth_client_id,
        repo=event.repo,
        sha=event.sha,
        max_bytes=services.configs.max_bytes,
        now=services.clock.now(),
    )


def ingress_attributes(event: VcsEvent) -> dict[str, object]:
    """HCP's ingress attributes of the commit (``GET /configuration-versions/:id/
    ingress-attributes``)."""
    branch = event.pr_head_branch if event.kind == "pull_request" else event.branch
    return {
        "branch": branch,
        "clone-url": event.clone_url,
        "commit-message": event.commit_message,
        "commit-sha": event.sha,
        "commit-url": event.commit_url,
        "compare-url": event.compare_url,
        "identifier": event.repo,
        "is-pull-request": event.kind == "pull_request",
        "on-default-branch": event.kind == "push" and event.branch == event.default_branch,
        "pull-request-number": event.pr_number,
        "pull-request-url": event.pr_url,
        "pull-request-title": event.pr_title,
        "pull-request-body": event.pr_body,
        "tag": event.tag,
        "sender-username": event.sender,
        "sender-avatar-url": event.sender_avatar_url,
        "sender-html-url": event.sender_html_url,
    }


def _start(
    services: IngestServices,
    delivery: Delivery,
    event: VcsEvent,
    t: _Target,
    decision: Decision,
    blob: tuple[str, int],
) -> str | None:
    """The run started in ``t`` (its ID), or None when the commit already ran there."""
    speculative = decision.verdict == "plan"
    message = event.pr_title if speculative else event.commit_message
    message = message or f"Triggered by {event.provider} ({event.sha[:12]})"
    try:
        with services.db.unit_of_work(write=True) as s:
            # The workspace row first (as every run admission does): a second handler of the
            # same delivery waits here, then fails on the unique ingress row — without it,
            # each would hold what the other needs (the version's foreign key share lock and
            # the run's row lock) and PostgreSQL would abort one as a deadlock.
            ws = lock_workspace_row(s, t.ws.id)
            if ws is None:
                return None
            org = s.get(Organization, ws.organization_id)
            assert org is not None
            cv = services.configs.create_from_commit(
                s,
                ws,
                source=delivery.provider,
                blob_sha256=blob[0],
                size=blob[1],
                speculative=speculative,
                ingress=ConfigurationVersionIngress(
                    oauth_client_id=delivery.oauth_client_id,
                    oauth_token_id=t.token_id,
                    repo=event.repo,
                    commit_sha=event.sha,
                    attributes=ingress_attributes(event),
                ),
            )
            run = services.runs.queue_from_vcs(
                s,
                org,
                ws,
                cv,
                speculative=speculative,
                message=message,
                actor=f"cairn (VCS connection {delivery.oauth_client_id})",
            )
            if run is None:
                return None  # not committed: the unit of work rolls the version back
            s.commit()
            return run.id
    except IntegrityError:
        # The unique (workspace, commit, speculative): another delivery or worker ran it.
        return None


def _passing_status(
    services: IngestServices, delivery: Delivery, event: VcsEvent, token_id: str
) -> None:
    with services.db.unit_of_work(write=True) as s:
        statuses.record(
            s,
            oauth_client_id=delivery.oauth_client_id,
            organization_id=delivery.organization_id,
            oauth_token_id=token_id,
            repo=event.repo,
            sha=event.sha,
            public_url=services.public_url,
            now=services.clock.now(),
        )
        s.commit()
