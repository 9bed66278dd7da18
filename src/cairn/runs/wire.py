"""Run, plan, apply and run-event documents. Every attribute go-tfe v0.15 and pytfe 1.5.0 read
is present; ``plan`` and ``apply`` always carry linkage (a nil one panics the CLI);
timestamps end in ``Z``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from cairn.authz.permissions import RUN_APPLY, RUN_PLAN, WORKSPACE_MANAGE
from cairn.authz.subject import USER_TYPE
from cairn.clock import iso8601
from cairn.runs import model as m
from cairn.runs.model import RunEvent, RunPhase
from cairn.runs.store import RunView

ReadUrl = Callable[[str], str]
"""``phase_id`` → the absolute, signed URL its log is read at (``LogStore.read_url``)."""

INCLUDABLE = (
    "plan",
    "apply",
    "created_by",
    "configuration_version",
    "configuration_version.ingress_attributes",
    "workspace",
    "cost_estimate",
    "task_stages",
)


def run(v: RunView, now: datetime) -> dict[str, Any]:
    r, p = v.run, v.permissions
    acts = m.actions(r, now)
    return {
        "id": r.id,
        "type": "runs",
        "attributes": {
            "status": r.status,
            "status-timestamps": dict(r.status_timestamps or {}),
            "has-changes": r.has_changes,
            "is-destroy": r.is_destroy,
            "message": r.message,
            "plan-only": r.plan_only,
            "source": r.source,
            "created-at": iso8601(r.created_at),
            "canceled-at": iso8601(r.canceled_at),
            "refresh": r.refresh,
            "refresh-only": r.refresh_only,
            "replace-addrs": list(r.replace_addrs or []),
            "target-addrs": list(r.target_addrs or []),
            "auto-apply": r.auto_apply,
            "allow-empty-apply": r.allow_empty_apply,
            "allow-config-generation": False,
            "save-plan": False,
            "position-in-queue": v.position_in_queue,
            "trigger-reason": r.trigger_reason,
            "terraform-version": r.terraform_version,
            "variables": [],
            "policy-paths": [],
            "actions": acts.as_wire(),
            "permissions": {
                "can-apply": RUN_APPLY in p,
                "can-cancel": RUN_PLAN in p,
                "can-comment": RUN_PLAN in p,
                "can-discard": RUN_APPLY in p,
                "can-force-cancel": WORKSPACE_MANAGE in p,
                "can-force-execute": WORKSPACE_MANAGE in p,
                "can-override-policy": False,
            },
            "force-cancel-available-at": iso8601(r.force_cancel_available_at),
            "error-message": r.error_message or None,
        },
        "relationships": {
            "workspace": {"data": {"id": v.ws.id, "type": "workspaces"}},
            "configuration-version": {
                "data": {"id": r.configuration_version_id, "type": "configuration-versions"}
            },
            "plan": {
                "data": {"id": v.plan.id, "type": "plans"},
                "links": {"related": f"/api/v2/runs/{r.id}/plan"},
            },
            "apply": {
                "data": {"id": v.apply.id, "type": "applies"},
                "links": {"related": f"/api/v2/runs/{r.id}/apply"},
            },
            "created-by": {
                "data": {"id": r.created_by_id, "type": USER_TYPE} if r.created_by_id else None
            },
            "confirmed-by": {"data": None},
            "cost-estimate": {"data": None},
            "policy-checks": {"data": []},
            "run-events": {
                "data": [],
                "links": {"related": f"/api/v2/runs/{r.id}/run-events"},
            },
            "task-stages": {"data": []},
            "comments": {"data": []},
        },
        "links": {"self": f"/api/v2/runs/{r.id}"},
    }


def _phase(v: RunView, ph: RunPhase, read_url: ReadUrl) -> dict[str, Any]:
    details: dict[str, Any] = {"mode": "agent" if v.run.execution_mode == "agent" else "remote"}
    if v.run.pool_id:
        details["agent-pool-id"] = v.run.pool_id
    return {
        "status": ph.status,
        "status-timestamps": dict(ph.status_timestamps or {}),
        "has-changes": ph.has_changes,
        "resource-additions": ph.resource_additions,
        "resource-changes": ph.resource_changes,
        "resource-destructions": ph.resource_destructions,
        "resource-imports": ph.resource_imports,
        "log-read-url": read_url(ph.id),
        "execution-details": details,
    }


def plan(v: RunView, read_url: ReadUrl) -> dict[str, Any]:
    ph = v.plan
    attrs = _phase(v, ph, read_url)
    attrs["generated-configuration"] = False
    return {
        "id": ph.id,
        "type": "plans",
        "attributes": attrs,
        "relationships": {
            "run": {"data": {"id": v.run.id, "type": "runs"}},
            "state-versions": {"data": []},
            "exports": {"data": []},
        },
        "links": {
            "self": f"/api/v2/plans/{ph.id}",
            "json-output": f"/api/v2/plans/{ph.id}/json-output",
        },
    }


def apply(v: RunView, read_url: ReadUrl) -> dict[str, Any]:
    ph = v.apply
    return {
        "id": ph.id,
        "type": "applies",
        "attributes": _phase(v, ph, read_url),
        "relationships": {
            "run": {"data": {"id": v.run.id, "type": "runs"}},
            "state-versions": {"data": []},
        },
        "links": {"self": f"/api/v2/applies/{ph.id}"},
    }


def run_event(ev: RunEvent) -> dict[str, Any]:
    return {
        "id": ev.id,
        "type": "run-events",
        "attributes": {
            "action": ev.action,
            "created-at": iso8601(ev.created_at),
            "description": ev.description or None,
        },
        "relationships": {
            "actor": {"data": {"id": ev.actor_id, "type": USER_TYPE} if ev.actor_id else None},
            "target": {"data": {"id": ev.run_id, "type": "runs"}},
            "comment": {"data": None},
        },
        "links": {"self": f"/api/v2/run-events/{ev.id}"},
    }


def capacity(org_name: str, pending: int, running: int) -> dict[str, Any]:
    return {
        "id": org_name,
        "type": "organization-capacity",
        "attributes": {"pending": pending, "running": running},
    }
