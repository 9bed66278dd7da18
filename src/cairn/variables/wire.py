"""Variable documents (HCP Terraform's ``vars``): a sensitive variable's ``value`` is null in
every answer, the one to its creation included."""

from __future__ import annotations

from typing import Any

from cairn.variables.service import VariableView


def variable(v: VariableView, *, legacy: bool = False) -> dict[str, Any]:
    """``legacy``: as the deprecated ``/vars`` endpoints link it (``self`` under ``/vars``)."""
    var, ws = v.var, v.ws
    self_link = f"/api/v2/vars/{var.id}" if legacy else f"/api/v2/workspaces/{ws.id}/vars/{var.id}"
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
        },
        "relationships": {
            "configurable": {
                "data": {"id": ws.id, "type": "workspaces"},
                "links": {"related": f"/api/v2/organizations/{v.org.name}/workspaces/{ws.name}"},
            }
        },
        "links": {"self": self_link},
    }
