"""Organization, project and entitlement-set documents, shaped as HCP Terraform shapes them."""

from __future__ import annotations

from typing import Any

from cairn import authz
from cairn.authz.permissions import (
    ORG_MANAGE,
    ORG_MANAGE_AGENT_POOLS,
    VARIABLES_READ,
    WORKSPACE_MANAGE,
)
from cairn.authz.subject import Subject
from cairn.clock import iso8601
from cairn.organizations.model import Organization, Project


def organization(
    org: Organization, caller: Subject, default_project_id: str | None = None
) -> dict[str, Any]:
    manage = authz.allowed(caller, ORG_MANAGE, authz.Org(org.id, org.name))
    doc: dict[str, Any] = {
        "id": org.name,
        "type": "organizations",
        "attributes": {
            "name": org.name,
            "email": org.email,
            "external-id": org.id,
            "created-at": iso8601(org.created_at),
            "default-execution-mode": org.default_execution_mode,
            # cairn's: the default of its workspaces' speculative-plan-credentials.
            "speculative-plan-credentials": org.speculative_plan_credentials,
            "collaborator-auth-policy": "password",
            "cost-estimation-enabled": False,
            "assessments-enforced": False,
            "allow-force-delete-workspaces": False,
            "two-factor-conformant": False,
            "saml-enabled": False,
            "session-remember": None,
            "session-timeout": None,
            "owners-team-saml-role-id": None,
            "permissions": {
                "can-update": manage,
                "can-destroy": manage,
                "can-access-via-teams": True,
                "can-create-module": False,
                "can-create-team": manage,
                "can-create-workspace": manage,
                "can-manage-users": manage,
                "can-manage-subscription": False,
                "can-manage-sso": False,
                "can-update-oauth": manage,
                "can-update-sentinel": False,
                "can-update-ssh-keys": manage,
                "can-update-api-token": manage,
                "can-traverse": True,
                "can-start-trial": False,
                "can-update-agent-pools": authz.allowed(
                    caller, ORG_MANAGE_AGENT_POOLS, authz.Org(org.id, org.name)
                ),
                "can-manage-tags": manage,
                "can-manage-varsets": authz.allowed(
                    caller, WORKSPACE_MANAGE, authz.Org(org.id, org.name)
                ),
                "can-read-varsets": authz.allowed(
                    caller, VARIABLES_READ, authz.Org(org.id, org.name)
                ),
                "can-manage-public-providers": False,
                "can-create-provider": False,
                "can-manage-public-modules": False,
                "can-manage-custom-providers": False,
                "can-manage-run-tasks": False,
                "can-read-run-tasks": False,
                "can-create-project": manage,
            },
        },
        "relationships": {
            "entitlement-set": {
                "data": {"id": org.id, "type": "entitlement-sets"},
                "links": {"related": f"/api/v2/organizations/{org.name}/entitlement-set"},
            },
            "default-project": {"data": None},
            "default-agent-pool": {"data": None},
        },
        "links": {"self": f"/api/v2/organizations/{org.name}"},
    }
    if default_project_id:
        doc["relationships"]["default-project"] = {
            "data": {"id": default_project_id, "type": "projects"}
        }
    return doc


def entitlement_set(org: Organization) -> dict[str, Any]:
    # operations: cairn executes runs (remote and agent execution modes); the CLI runs plan
    # and apply remotely for a workspace whose execution mode is not local (reference §4).
    return {
        "id": org.id,
        "type": "entitlement-sets",
        "attributes": {
            "operations": True,
            "state-storage": True,
            "private-module-registry": False,
            "sentinel": False,
            "teams": False,
            "vcs-integrations": False,
            "cost-estimation": False,
            "sso": False,
            "agents": True,
            "audit-logging": False,
            "global-run-tasks": False,
            "module-tests-generation": False,
            "private-run-tasks": False,
            "run-tasks": False,
            "self-serve-billing": False,
            "configuration-designer": False,
            "usage-reporting": False,
            "user-limit": None,
        },
        "links": {"self": f"/api/v2/entitlement-sets/{org.id}"},
    }


def project(
    org: Organization, prj: Project, caller: Subject, workspace_count: int
) -> dict[str, Any]:
    manage = authz.allowed(caller, ORG_MANAGE, authz.Org(org.id, org.name))
    return {
        "id": prj.id,
        "type": "projects",
        "attributes": {
            "name": prj.name,
            "description": prj.description,
            "created-at": iso8601(prj.created_at),
            "is-default": prj.is_default,
            "workspace-count": workspace_count,
            "permissions": {
                "can-read": True,
                "can-update": manage,
                "can-destroy": manage and not prj.is_default,
                "can-create-workspace": manage,
                "can-move-workspace": manage,
                "can-move-stack": False,
                "can-deploy-no-code-modules": False,
                "can-read-teams": manage,
                "can-manage-tags": manage,
                "can-manage-teams": manage,
                "can-manage-in-hcp": False,
                "can-manage-varsets": manage,
            },
        },
        "relationships": {"organization": {"data": {"id": org.name, "type": "organizations"}}},
        "links": {"self": f"/api/v2/projects/{prj.id}"},
    }
