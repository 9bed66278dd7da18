"""Configuration-version documents (HCP Terraform's shape, as pytfe, go-tfe and Terraform
1.0.3 read it)."""

from __future__ import annotations

from typing import Any

from cairn.configversions.model import VCS_SOURCES, ConfigurationVersionIngress
from cairn.configversions.service import CvView


def configuration_version(
    view: CvView, base_url: str, upload_token: str | None = None
) -> dict[str, Any]:
    """``upload_token``: the signed segment of the upload URL, given only in the create
    answer (as HCP Terraform, which hides the URL afterwards)."""
    cv = view.cv
    path = f"/api/v2/configuration-versions/{cv.id}"
    links = {"self": path}
    if cv.status == "uploaded":
        links["download"] = f"{path}/download"
    return {
        "id": cv.id,
        "type": "configuration-versions",
        "attributes": {
            "auto-queue-runs": cv.auto_queue_runs,
            "error": "upload-failed" if cv.status == "errored" else None,
            "error-message": cv.error_message,
            "source": cv.source,
            "speculative": cv.speculative,
            "provisional": cv.provisional,
            "status": cv.status,
            "status-timestamps": dict(cv.status_timestamps or {}),
            "changed-files": [],
            "upload-url": f"{base_url}{path}/hosted-upload/{upload_token}"
            if upload_token
            else None,
        },
        "relationships": {
            "ingress-attributes": {
                "data": {"id": ingress_id(cv.id), "type": "ingress-attributes"}
                if cv.source in VCS_SOURCES
                else None,
                "links": {"related": f"{path}/ingress-attributes"},
            },
        },
        "links": links,
    }


def ingress_id(cv_id: str) -> str:
    """The ingress attributes' ID (HCP's ``ia-…``), one per configuration version."""
    return "ia-" + cv_id.removeprefix("cv-")


def ingress_attributes(cv_id: str, row: ConfigurationVersionIngress) -> dict[str, Any]:
    """HCP's ``ingress-attributes`` document of a version made from a commit."""
    return {
        "id": ingress_id(cv_id),
        "type": "ingress-attributes",
        "attributes": dict(row.attributes or {}),
        "links": {"self": f"/api/v2/configuration-versions/{cv_id}/ingress-attributes"},
    }
