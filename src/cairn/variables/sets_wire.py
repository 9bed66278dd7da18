"""Variable set documents (HCP Terraform's ``varsets``) and their variables' (``vars``, a
sensitive one's ``value`` null in every answer)."""

from __future__ import annotations

from typing import Any

from cairn.clock import iso8601
from cairn.variables import wire as variables_wire
from cairn.variables.service import VariableView
from cairn.variables.sets_service import SetVariableView, VarsetView

TYPE = "varsets"
INCLUDABLE = ("vars", "workspaces", "projects")


def varset(v: VarsetView) -> dict[str, Any]:
    vs, links = v.vs, v.links
    return {
        "id": vs.id,
        "type": TYPE,
        "attributes": {
            "name": vs.name,
            "description": vs.description,
            "global": vs.is_global,
            "priority": vs.priority,
            "created-at": iso8601(vs.created_at),
            "updated-at": iso8601(vs.updated_at),
            "var-count": len(links.var_ids),
            "workspace-count": len(links.workspace_ids),
            "project-count": len(links.project_ids),
        },
        "relationships": {
            "organization": {"data": {"id": v.org.name, "type": "organizations"}},
            "parent": {"data": {"id": v.org.name, "type": "organizations"}},
            "vars": {"data": [{"id": i, "type": "vars"} for i in links.var_ids]},
            "workspaces": {"data": [{"id": i, "type": "workspaces"} for i in links.workspace_ids]},
            "projects": {"data": [{"id": i, "type": "projects"} for i in links.project_ids]},
        },
        "links": {"self": f"/api/v2/varsets/{vs.id}"},
    }


def set_variable(v: SetVariableView) -> dict[str, Any]:
    var = v.var
    return {
        "id": var.id,
        "type": "vars",
        "attributes": {
            "key": var.key,
            "value": None if var.sensitive else v.value,
            "description": var.description,
            "sensitive": var.sensitive,
            "category": var.category,
            "hcl": var.hcl,
            "version-id": var.version_id,
            "created-at": iso8601(var.created_at),
        },
        "relationships": {
            "varset": {
                "data": {"id": v.vs.id, "type": TYPE},
                "links": {"related": f"/api/v2/varsets/{v.vs.id}"},
            },
            # As in HCP Terraform's all-vars, where a variable may come from a workspace or a
            # variable set: what it is configured on.
            "configurable": {
                "data": {"id": v.vs.id, "type": TYPE},
                "links": {"related": f"/api/v2/varsets/{v.vs.id}"},
            },
        },
        "links": {"self": f"/api/v2/varsets/{v.vs.id}/relationships/vars/{var.id}"},
    }


def any_variable(v: VariableView | SetVariableView) -> dict[str, Any]:
    if isinstance(v, SetVariableView):
        return set_variable(v)
    return variables_wire.variable(v)
