"""The official Python SDK, pytfe 1.5.0, against a real cairn server over HTTPS.

Organizations, workspaces (CRUD, pagination, search, tags, execution mode, locking) and state
versions (inline create, the two-step hosted upload, list/read/current/download, outputs) — on
both metadata backends. Each test works in an organization of its own.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pytfe import TFEClient
from pytfe.errors import NotFound, TFEError
from pytfe.models import (
    ExecutionMode,
    OrganizationCreateOptions,
    OrganizationUpdateOptions,
    StateVersionCreateOptions,
    StateVersionListOptions,
    Tag,
    WorkspaceAddTagsOptions,
    WorkspaceCreateOptions,
    WorkspaceListOptions,
    WorkspaceLockOptions,
    WorkspaceRemoveTagsOptions,
    WorkspaceUpdateOptions,
)
from pytfe.models.workspace import Workspace

from tests.support import api as tfe_api
from tests.support.server import CairnServer

pytestmark = pytest.mark.e2e

WORKSPACE_ID = re.compile(r"^ws-[A-Za-z0-9]+$")
STATE_VERSION_ID = re.compile(r"^sv-[A-Za-z0-9]+$")


# -- helpers ---------------------------------------------------------------------------------------


def state_file(
    serial: int, lineage: str, outputs: dict[str, tuple[Any, bool]] | None = None
) -> bytes:
    """A Terraform v4 state file; `outputs` maps name → (string value, sensitive)."""
    rendered: dict[str, dict[str, Any]] = {}
    for name, (value, sensitive) in (outputs or {}).items():
        rendered[name] = {"value": value, "type": "string"}
        if sensitive:
            rendered[name]["sensitive"] = True
    state = {
        "version": 4,
        "terraform_version": "1.0.3",
        "serial": serial,
        "lineage": lineage,
        "outputs": rendered,
        "resources": [],
    }
    return (json.dumps(state, indent=2) + "\n").encode()


def inline_options(raw: bytes) -> StateVersionCreateOptions:
    """Create options carrying the state inline (base64), as Terraform ≤ 1.5 sends it."""
    state = json.loads(raw)
    return StateVersionCreateOptions(
        serial=state["serial"],
        md5=hashlib.md5(raw).hexdigest(),
        lineage=state["lineage"],
        state=base64.b64encode(raw).decode(),
    )


def upload_options(raw: bytes) -> StateVersionCreateOptions:
    """Create options without the state: the server answers with upload URLs."""
    state = json.loads(raw)
    return StateVersionCreateOptions(
        serial=state["serial"],
        md5=hashlib.md5(raw).hexdigest(),
        lineage=state["lineage"],
    )


def new_workspace(tfe: TFEClient, org: str, name: str = "ws", **options: Any) -> Workspace:
    return tfe.workspaces.create(
        org, WorkspaceCreateOptions(name=tfe_api.unique_name(name), **options)
    )


def lock(tfe: TFEClient, workspace: Workspace) -> None:
    locked = tfe.workspaces.lock(workspace.id, WorkspaceLockOptions(reason="pytfe test"))
    assert locked.locked is True


# -- organizations ---------------------------------------------------------------------------------


def test_organizations_create_list_read_update_entitlements(tfe: TFEClient) -> None:
    name = tfe_api.unique_name("py")
    created = tfe.organizations.create(
        OrganizationCreateOptions(name=name, email="owner@example.com")
    )
    assert created.name == name
    assert created.id == name  # TFE identifies organizations by name
    assert created.email == "owner@example.com"

    assert name in {o.name for o in tfe.organizations.list()}
    assert tfe.organizations.read(name).email == "owner@example.com"

    updated = tfe.organizations.update(name, OrganizationUpdateOptions(email="ops@example.com"))
    assert updated.email == "ops@example.com"
    assert tfe.organizations.read(name).email == "ops@example.com"

    entitlements = tfe.organizations.read_entitlements(name)
    assert entitlements.state_storage is True
    assert isinstance(entitlements.operations, bool)

    with pytest.raises(TFEError) as duplicate:
        tfe.organizations.create(OrganizationCreateOptions(name=name, email="x@example.com"))
    assert duplicate.value.status == 422
    with pytest.raises(NotFound):
        tfe.organizations.read(tfe_api.unique_name("missing"))


# -- workspaces ------------------------------------------------------------------------------------


def test_workspace_create_read_update_delete(tfe: TFEClient, org: str) -> None:
    name = tfe_api.unique_name("web")
    created = tfe.workspaces.create(
        org,
        WorkspaceCreateOptions(
            name=name,
            description="the web tier",
            execution_mode=ExecutionMode.LOCAL,
            terraform_version="1.0.3",
        ),
    )
    assert WORKSPACE_ID.match(created.id), created.id
    assert created.name == name
    assert created.description == "the web tier"
    assert created.execution_mode == ExecutionMode.LOCAL
    assert created.operations is False
    assert created.terraform_version == "1.0.3"
    assert created.locked is False
    assert created.vcs_repo is None  # pytfe sent "vcs-repo": {} — that means "no VCS"
    assert created.permissions is not None and created.permissions.can_lock is True

    by_name = tfe.workspaces.read(name, organization=org)
    by_id = tfe.workspaces.read_by_id(created.id)
    assert by_name.id == by_id.id == created.id
    assert by_id.name == name

    updated = tfe.workspaces.update(
        name,
        WorkspaceUpdateOptions(
            description="still the web tier", auto_apply=True, execution_mode=ExecutionMode.REMOTE
        ),
        organization=org,
    )
    assert updated.description == "still the web tier"
    assert updated.auto_apply is True
    assert updated.execution_mode == ExecutionMode.REMOTE
    assert updated.operations is True  # always consistent with execution-mode

    back = tfe.workspaces.update_by_id(
        created.id, WorkspaceUpdateOptions(execution_mode=ExecutionMode.LOCAL)
    )
    assert back.execution_mode == ExecutionMode.LOCAL
    assert back.operations is False
    assert back.description == "still the web tier"  # untouched attributes are kept

    renamed = tfe.workspaces.update_by_id(created.id, WorkspaceUpdateOptions(name=f"{name}-2"))
    assert renamed.name == f"{name}-2"
    assert tfe.workspaces.read(f"{name}-2", organization=org).id == created.id
    with pytest.raises(NotFound):
        tfe.workspaces.read(name, organization=org)

    with pytest.raises(TFEError) as clash:
        tfe.workspaces.create(org, WorkspaceCreateOptions(name=f"{name}-2"))
    assert clash.value.status == 422

    tfe.workspaces.delete(f"{name}-2", organization=org)
    with pytest.raises(NotFound):
        tfe.workspaces.read_by_id(created.id)

    other = new_workspace(tfe, org, "doomed")
    tfe.workspaces.delete_by_id(other.id)
    with pytest.raises(NotFound):
        tfe.workspaces.read_by_id(other.id)


def test_workspace_list_paginates_and_searches(tfe: TFEClient, org: str, api: httpx.Client) -> None:
    alphas = {f"alpha-{i}" for i in range(5)}
    betas = {"beta-0", "beta-1"}
    for name in sorted(alphas | betas):
        tfe.workspaces.create(org, WorkspaceCreateOptions(name=name))

    # pytfe follows meta.pagination across pages of two.
    listed = [ws.name for ws in tfe.workspaces.list(org, WorkspaceListOptions(page_size=2))]
    assert len(listed) == len(alphas | betas)
    assert set(listed) == alphas | betas

    # The wire: 7 workspaces in pages of 2 → 4 pages, with a correct next-page.
    doc = tfe_api.document(
        api.get(
            f"/api/v2/organizations/{org}/workspaces",
            params={"page[size]": 2, "page[number]": 2},
        ),
        200,
    )
    pagination = doc["meta"]["pagination"]
    assert pagination["current-page"] == 2
    assert pagination["next-page"] == 3
    assert pagination["prev-page"] == 1
    assert pagination["total-pages"] == 4
    assert pagination["total-count"] == 7
    assert len(doc["data"]) == 2

    searched = tfe.workspaces.list(org, WorkspaceListOptions(search="alpha", page_size=2))
    assert {ws.name for ws in searched} == alphas
    assert list(tfe.workspaces.list(org, WorkspaceListOptions(search="gamma"))) == []


def test_workspace_tags_add_list_remove(tfe: TFEClient, org: str) -> None:
    tagged = new_workspace(tfe, org, "tagged")
    untagged = new_workspace(tfe, org, "untagged")

    tfe.workspaces.add_tags(
        tagged.id, WorkspaceAddTagsOptions(tags=[Tag(name="prod"), Tag(name="team-a")])
    )
    assert {t.name for t in tfe.workspaces.list_tags(tagged.id)} == {"prod", "team-a"}
    assert sorted(tfe.workspaces.read_by_id(tagged.id).tag_names) == ["prod", "team-a"]
    assert list(tfe.workspaces.list_tags(untagged.id)) == []

    by_tag = tfe.workspaces.list(org, WorkspaceListOptions(tags="prod"))
    assert [ws.id for ws in by_tag] == [tagged.id]

    tfe.workspaces.remove_tags(tagged.id, WorkspaceRemoveTagsOptions(tags=[Tag(name="prod")]))
    assert {t.name for t in tfe.workspaces.list_tags(tagged.id)} == {"team-a"}
    assert tfe.workspaces.read_by_id(tagged.id).tag_names == ["team-a"]


def test_workspace_lock_unlock_force_unlock(tfe: TFEClient, org: str) -> None:
    workspace = new_workspace(tfe, org, "lockable")

    locked = tfe.workspaces.lock(workspace.id, WorkspaceLockOptions(reason="maintenance"))
    assert locked.locked is True
    assert locked.locked_by is not None and locked.locked_by.user is not None
    with pytest.raises(TFEError) as twice:
        tfe.workspaces.lock(workspace.id, WorkspaceLockOptions(reason="again"))
    assert twice.value.status == 409

    unlocked = tfe.workspaces.unlock(workspace.id)
    assert unlocked.locked is False
    with pytest.raises(TFEError) as not_locked:
        tfe.workspaces.unlock(workspace.id)
    assert not_locked.value.status == 409

    lock(tfe, workspace)
    assert tfe.workspaces.read_by_id(workspace.id).locked is True
    forced = tfe.workspaces.force_unlock(workspace.id)
    assert forced.locked is False
    with pytest.raises(TFEError) as nothing_to_force:
        tfe.workspaces.force_unlock(workspace.id)
    assert nothing_to_force.value.status == 409


# -- state versions --------------------------------------------------------------------------------


def test_state_versions_inline_create_read_list_download(tfe: TFEClient, org: str) -> None:
    workspace = new_workspace(tfe, org, "state", execution_mode=ExecutionMode.LOCAL)
    lineage = str(uuid.uuid4())
    first = state_file(1, lineage, {"endpoint": ("https://one.example", False)})

    with pytest.raises(NotFound):
        tfe.state_versions.read_current(workspace.id)
    with pytest.raises(TFEError) as unlocked:
        tfe.state_versions.create(workspace.id, inline_options(first))
    assert unlocked.value.status == 409

    lock(tfe, workspace)
    v1 = tfe.state_versions.create(workspace.id, inline_options(first))
    assert STATE_VERSION_ID.match(v1.id), v1.id
    assert v1.serial == 1

    read = tfe.state_versions.read(v1.id)
    assert read.id == v1.id
    assert read.serial == 1
    assert read.status is not None and read.status.value == "finalized"
    assert read.hosted_state_download_url
    assert read.size == len(first)
    assert tfe.state_versions.read_current(workspace.id).id == v1.id
    assert tfe.state_versions.download(v1.id) == first

    second = state_file(2, lineage, {"endpoint": ("https://two.example", False)})
    v2 = tfe.state_versions.create(workspace.id, inline_options(second))
    assert v2.serial == 2
    assert tfe.state_versions.read_current(workspace.id).id == v2.id
    assert tfe.state_versions.download_current(workspace.id) == second
    assert tfe.state_versions.download(v1.id) == first  # history keeps every version

    listed = list(
        tfe.state_versions.list(StateVersionListOptions(organization=org, workspace=workspace.name))
    )
    assert {(sv.id, sv.serial) for sv in listed} == {(v1.id, 1), (v2.id, 2)}

    # The serial never goes backwards.
    stale = state_file(1, lineage, {"endpoint": ("https://stale.example", False)})
    with pytest.raises(TFEError) as backwards:
        tfe.state_versions.create(workspace.id, inline_options(stale))
    assert backwards.value.status in (409, 422)
    # An md5 that does not match the bytes is refused.
    third = state_file(3, lineage)
    bad_md5 = inline_options(third).model_copy(update={"md5": hashlib.md5(b"x").hexdigest()})
    with pytest.raises(TFEError) as mismatch:
        tfe.state_versions.create(workspace.id, bad_md5)
    assert mismatch.value.status == 422
    assert tfe.state_versions.read_current(workspace.id).id == v2.id

    assert tfe.workspaces.unlock(workspace.id).locked is False


def test_state_version_two_step_upload(tfe: TFEClient, org: str, server: CairnServer) -> None:
    workspace = new_workspace(tfe, org, "upload", execution_mode=ExecutionMode.LOCAL)
    lineage = str(uuid.uuid4())
    lock(tfe, workspace)

    # By hand, the way go-tfe ≥ 1.28 does it: create without state, then a "foreign" PUT
    # (no Authorization header: the upload URL authorises itself).
    raw = state_file(1, lineage, {"endpoint": ("https://one.example", False)})
    pending = tfe.state_versions.create(workspace.id, upload_options(raw))
    assert pending.status is not None and pending.status.value == "pending"
    assert pending.hosted_state_upload_url
    with httpx.Client(verify=server.ssl_context(), timeout=30.0) as anonymous:
        put = anonymous.put(
            pending.hosted_state_upload_url,
            content=raw,
            headers={"Content-Type": "application/octet-stream", "Accept": "application/json"},
        )
    tfe_api.expect(put)
    finalized = tfe.state_versions.read(pending.id)
    assert finalized.status is not None and finalized.status.value == "finalized"
    assert finalized.serial == 1
    assert tfe.state_versions.download(pending.id) == raw
    assert tfe.state_versions.read_current(workspace.id).id == pending.id

    # pytfe's own helper: create, PUT with the bearer token, read back.
    raw2 = state_file(2, lineage, {"endpoint": ("https://two.example", False)})
    uploaded = tfe.state_versions.upload(workspace.id, raw_state=raw2, options=upload_options(raw2))
    assert uploaded.serial == 2
    assert uploaded.status is not None and uploaded.status.value == "finalized"
    assert tfe.state_versions.download(uploaded.id) == raw2
    assert tfe.state_versions.read_current(workspace.id).id == uploaded.id

    tfe.workspaces.unlock(workspace.id)


def test_state_version_outputs_hide_sensitive_values(tfe: TFEClient, org: str) -> None:
    workspace = new_workspace(tfe, org, "outputs", execution_mode=ExecutionMode.LOCAL)
    raw = state_file(
        1,
        str(uuid.uuid4()),
        {"endpoint": ("https://db.example", False), "password": ("hunter2", True)},
    )
    lock(tfe, workspace)
    version = tfe.state_versions.create(workspace.id, inline_options(raw))
    tfe.workspaces.unlock(workspace.id)

    def by_name(outputs: Any) -> dict[str, Any]:
        return {o.name: o for o in outputs}

    for outputs in (
        by_name(tfe.state_versions.list_outputs(version.id)),
        by_name(tfe.state_version_outputs.read_current(workspace.id)),
    ):
        assert set(outputs) == {"endpoint", "password"}
        endpoint, password = outputs["endpoint"], outputs["password"]
        assert endpoint.sensitive is False
        assert endpoint.value == "https://db.example"
        assert endpoint.type == "string"
        assert endpoint.detailed_type == "string"
        assert password.sensitive is True
        assert password.value is None

    # Reading one output by id reveals it (how the cloud CLI fetches sensitive values).
    password_id = by_name(tfe.state_versions.list_outputs(version.id))["password"].id
    assert tfe.state_version_outputs.read(password_id).value == "hunter2"


def test_api_rejects_unauthenticated_requests(
    server: CairnServer, make_org: Callable[..., str]
) -> None:
    org = make_org()
    with server.client() as anonymous:
        tfe_api.expect(anonymous.get(f"/api/v2/organizations/{org}/workspaces"), 401)
    with server.client("not-a-real-token") as stranger:
        tfe_api.expect(stranger.get(f"/api/v2/organizations/{org}/workspaces"), 401)
