"""Workspace and tag documents. Every attribute the CLI reads is always present (reference §8):
``permissions`` (all booleans), ``actions``, ``vcs-repo: null``, both ``operations`` and
``execution-mode``, timestamps ending in ``Z``."""

from __future__ import annotations

from typing import Any

from cairn.authz.permissions import (
    ORG_MANAGE,
    RUN_APPLY,
    RUN_PLAN,
    STATE_READ,
    STATE_READ_OUTPUTS,
    STATE_WRITE,
    VARIABLES_READ,
    VARIABLES_WRITE,
    WORKSPACE_LOCK,
    WORKSPACE_MANAGE,
    WORKSPACE_READ,
    WORKSPACE_WRITE,
)
from cairn.clock import iso8601
from cairn.workspaces.model import Tag, Workspace
from cairn.workspaces.store import WorkspaceView

INCLUDABLE = (
    "organization",
    "project",
    "locked_by",
    "outputs",
    "current_state_version",
    "current_state_version.outputs",
    "current_run",
    "current_run.plan",
    "current_run.configuration_version",
    "current_run.configuration_version.ingress_attributes",
    "current_configuration_version",
    "current_configuration_version.ingress_attributes",
    "effective_tag_bindings",
    "readme",
)
"""The relationships HCP Terraform documents as includable on workspaces."""


def vcs_repo(ws: Workspace, public_url: str = "") -> dict[str, Any] | None:
    """The ``vcs-repo`` object (pytfe's ``VCSRepo``), or None without a repository.
    A repository connected through a GitHub App installation names the installation
    (``github-app-installation-id``) and no OAuth token, as HCP Terraform does."""
    if not ws.vcs_identifier:
        return None
    return {
        "identifier": ws.vcs_identifier,
        "display-identifier": ws.vcs_identifier,
        "branch": ws.vcs_branch or "",
        "ingress-submodules": ws.vcs_ingress_submodules,
        "oauth-token-id": None if ws.vcs_github_app_installation_id else ws.vcs_oauth_token_id,
        "github-app-installation-id": ws.vcs_github_app_installation_id,
        "tags-regex": ws.vcs_tags_regex,
        "repository-http-url": ws.vcs_repository_http_url,
        "service-provider": ws.vcs_service_provider,
        "webhook-url": f"{public_url}/api/cairn/v1/vcs-hooks/{ws.vcs_oauth_client_id}"
        if ws.vcs_oauth_client_id
        else None,
    }


def workspace(v: WorkspaceView, public_url: str = "") -> dict[str, Any]:
    ws, org, p = v.ws, v.org, v.permissions
    manage = WORKSPACE_MANAGE in p
    rels: dict[str, Any] = {
        "organization": {"data": {"id": org.name, "type": "organizations"}},
        "project": {"data": {"id": ws.project_id, "type": "projects"}},
        "agent-pool": {
            "data": {"id": ws.agent_pool_id, "type": "agent-pools"} if ws.agent_pool_id else None
        },
        "ssh-key": {"data": None},
        "current-run": {
            "data": {"id": ws.current_run_id, "type": "runs"} if ws.current_run_id else None
        },
        "latest-run": {"data": None},
        "current-configuration-version": {"data": None},
        "current-state-version": {
            "data": {"id": ws.current_state_version_id, "type": "state-versions"}
            if ws.current_state_version_id
            else None,
            **(
                {"links": {"related": f"/api/v2/workspaces/{ws.id}/current-state-version"}}
                if ws.current_state_version_id
                else {}
            ),
        },
        "outputs": {"data": []},
        "readme": {"data": None},
        "remote-state-consumers": {
            "links": {"related": f"/api/v2/workspaces/{ws.id}/relationships/remote-state-consumers"}
        },
        "locked-by": {
            "data": {"id": ws.locked_by_id, "type": ws.locked_by_kind} if ws.locked_by_id else None
        },
    }
    return {
        "id": ws.id,
        "type": "workspaces",
        "attributes": {
            "name": ws.name,
            "description": ws.description or None,
            "environment": "default",
            "execution-mode": ws.execution_mode,
            "operations": ws.execution_mode != "local",
            "locked": ws.locked,
            "locked-reason": ws.lock_reason if ws.locked else "",
            "terraform-version": ws.terraform_version,
            "auto-apply": ws.auto_apply,
            "auto-apply-run-trigger": False,
            "auto-destroy-at": None,
            "allow-destroy-plan": ws.allow_destroy_plan,
            "assessments-enabled": False,
            "file-triggers-enabled": ws.file_triggers_enabled,
            "global-remote-state": ws.global_remote_state,
            "queue-all-runs": ws.queue_all_runs,
            "speculative-enabled": ws.speculative_enabled,
            # cairn's: what a speculative plan's workload-identity tokens look like (its own
            # setting, else the organization's default; setting-overwrites tells which).
            "speculative-plan-credentials": (
                ws.speculative_plan_credentials or org.speculative_plan_credentials
            ),
            "structured-run-output-enabled": False,
            "source": ws.source,
            "source-name": None,
            "source-url": None,
            "vcs-repo": vcs_repo(ws, public_url),
            "vcs-repo-identifier": ws.vcs_identifier,
            "working-directory": ws.working_directory,
            "trigger-prefixes": list(ws.trigger_prefixes or []),
            "trigger-patterns": list(ws.trigger_patterns or []),
            "tag-names": v.tags,
            "resource-count": ws.resource_count,
            "apply-duration-average": None,
            "plan-duration-average": None,
            "policy-check-failures": None,
            "run-failures": None,
            "workspace-kpis-runs-count": None,
            "latest-change-at": iso8601(ws.updated_at),
            "created-at": iso8601(ws.created_at),
            "updated-at": iso8601(ws.updated_at),
            # Set on the workspace itself, not inherited from the organization's defaults.
            "setting-overwrites": {
                "execution-mode": True,
                "agent-pool": True,
                "speculative-plan-credentials": ws.speculative_plan_credentials is not None,
            },
            "actions": {"is-destroyable": manage},
            "permissions": {
                "can-update": manage,
                "can-destroy": manage,
                "can-queue-run": RUN_PLAN in p,
                "can-queue-apply": RUN_APPLY in p,
                "can-queue-destroy": RUN_APPLY in p,
                "can-read-variable": VARIABLES_READ in p,
                "can-update-variable": VARIABLES_WRITE in p,
                "can-lock": WORKSPACE_LOCK in p,
                "can-unlock": WORKSPACE_LOCK in p,
                "can-force-unlock": manage,
                "can-read-settings": WORKSPACE_READ in p,
                "can-read-state-versions": STATE_READ in p,
                "can-create-state-versions": STATE_WRITE in p,
                "can-read-run-state-outputs": STATE_READ_OUTPUTS in p,
                "can-manage-tags": WORKSPACE_WRITE in p,
                "can-manage-run-tasks": False,
                "can-force-delete": manage and ORG_MANAGE in p,
                "can-manage-assessments": False,
                "can-read-assessment-results": False,
                "can-queue-destroy-plan": RUN_APPLY in p,
                "can-change-terraform-version": manage,
            },
        },
        "relationships": rels,
        "links": {
            "self": f"/api/v2/organizations/{org.name}/workspaces/{ws.name}",
            "self-html": f"/app/{org.name}/workspaces/{ws.name}",
        },
    }


def tag(t: Tag, instance_count: int | None = None) -> dict[str, Any]:
    attrs: dict[str, Any] = {"name": t.name, "created-at": iso8601(t.created_at)}
    if instance_count is not None:
        attrs["instance-count"] = instance_count
    return {"id": t.id, "type": "tags", "attributes": attrs}
