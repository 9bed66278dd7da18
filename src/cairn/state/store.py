"""State-version rows and the rules of who may write state, and in what order, applied in the
caller's session (its unit of work).

Rules (each enforced again by the database, because replicas run at once):
* only the holder of the workspace lock creates a version (409 naming the holder otherwise);
* the serial never goes backwards; the same serial again is accepted only with the same MD5
  (an idempotent retry); the lineage must match unless ``force``;
* the version is finalized and the workspace's current-version pointer moves with conditional
  UPDATEs (the version still pending, the lock still the holder's, the pointer still where it
  was): a lost race changes nothing (``LostRace``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cairn import authz, ids
from cairn.audit.log import Actor, record
from cairn.authz.permissions import STATE_WRITE
from cairn.authz.subject import Holder, Subject, holder_of
from cairn.blobs.store import BlobRef
from cairn.db.engine import affected
from cairn.errors import Conflict, Invalid, NotFound
from cairn.organizations.model import Organization
from cairn.paging import Page
from cairn.state import inspect
from cairn.state.intake import Staged
from cairn.state.model import StateVersion, StateVersionOutput
from cairn.workspaces import locks
from cairn.workspaces import store as workspaces
from cairn.workspaces.model import Workspace


class LostRace(Conflict):
    """Another request changed the workspace's state between our checks and our write."""


@dataclass
class NewVersion:
    serial: int
    md5: str
    lineage: str  # "" until read from the state (HCP Terraform lets an inline upload omit it)
    force: bool
    state: Staged | None  # None: two-step hosted upload
    json_state: Staged | None = None


@dataclass
class VersionView:
    sv: StateVersion
    org: Organization
    ws: Workspace
    outputs: list[StateVersionOutput]


# ---- reading ------------------------------------------------------------------------------------


def find(s: Session, caller: Subject, sv_id: str) -> tuple[Organization, Workspace, StateVersion]:
    """A state version, with its workspace and organization, if the caller may read them."""
    sv = s.get(StateVersion, sv_id)
    if sv is None:
        raise authz.not_found("state version", repr(sv_id))
    org, ws = workspaces.find(s, caller, sv.workspace_id)
    return org, ws, sv


def outputs(s: Session, sv_ids: list[str]) -> dict[str, list[StateVersionOutput]]:
    found: dict[str, list[StateVersionOutput]] = {i: [] for i in sv_ids}
    if sv_ids:
        for o in s.scalars(
            select(StateVersionOutput)
            .where(StateVersionOutput.state_version_id.in_(sv_ids))
            .order_by(StateVersionOutput.name)
        ):
            found[o.state_version_id].append(o)
    return found


def view(s: Session, org: Organization, ws: Workspace, sv: StateVersion) -> VersionView:
    return VersionView(sv, org, ws, outputs(s, [sv.id])[sv.id])


def history(s: Session, ws: Workspace, page: Page) -> tuple[list[StateVersion], int]:
    """One page of a workspace's finalized versions, newest serial first, and their total."""
    base = select(StateVersion).where(
        StateVersion.workspace_id == ws.id, StateVersion.status == "finalized"
    )
    total = s.scalar(select(func.count()).select_from(base.subquery())) or 0
    rows = s.scalars(
        base.order_by(StateVersion.serial.desc(), StateVersion.created_at.desc())
        .offset(page.offset)
        .limit(page.size)
    )
    return list(rows), total


# ---- the rules ----------------------------------------------------------------------------------


def require_state(caller: Subject, org: Organization, ws: Workspace, need: str) -> None:
    """Raise NotFound unless the caller may read the workspace's states (``state:read``) or
    their outputs (``state:read-outputs``): TFE workspace access ``state-versions``. The
    workspace itself is readable (the caller found it), so the answer names the permission."""
    if not authz.allowed(caller, need, workspaces.target(org, ws)):
        raise NotFound(
            f"the state versions of workspace {org.name}/{ws.name} are not found, or you may not "
            f"read them: that needs the {need} permission (workspace access state-versions)"
        )


def check_writable(
    s: Session, caller: Subject, org: Organization, ws: Workspace, new: NewVersion
) -> StateVersion | None:
    """Apply the rules against the current version; returns the current version when the
    request is an idempotent repeat of it."""
    authz.require(caller, STATE_WRITE, workspaces.target(org, ws), doing="write state to")
    if not ws.locked:
        raise Conflict(
            f"workspace {org.name}/{ws.name} is not locked and will only accept state "
            "uploads when locked; lock it first (Terraform does this itself)"
        )
    if not ws.held_by(holder_of(caller)):
        raise Conflict(
            locks.held_message(s, org, ws.id, "is locked")
            + "; only the lock holder may upload state"
        )
    if ws.current_state_version_id is None:
        return None
    cur = s.get(StateVersion, ws.current_state_version_id)
    assert cur is not None
    if cur.lineage != new.lineage and not new.force:
        raise Conflict(
            f"The lineage provided in the state file ({new.lineage}) does not match the value "
            f"currently known ({cur.lineage}) for workspace {org.name}/{ws.name}; "
            "use 'terraform state push -force' to replace unrelated state"
        )
    if new.serial < cur.serial:
        raise Conflict(
            f"serial {new.serial} is older than the current serial {cur.serial} of "
            f"{org.name}/{ws.name}; state serials never go backwards"
        )
    if new.serial == cur.serial:
        if new.md5 == cur.md5 and new.lineage == cur.lineage:
            return cur
        raise Conflict(
            "The MD5 hash of the state provided does not match what is currently "
            f"known for the same serial number ({cur.serial})"
        )
    return None


def check_header(header: inspect.StateHeader, new: NewVersion) -> None:
    """The state file must say what the request's attributes say."""
    if header.lineage != new.lineage:
        raise Invalid(
            f"the state file's lineage {header.lineage} differs from the lineage attribute "
            f"{new.lineage}",
            pointer="/data/attributes/lineage",
        )
    if header.serial != new.serial:
        raise Invalid(
            f"the state file's serial {header.serial} differs from the serial attribute "
            f"{new.serial}",
            pointer="/data/attributes/serial",
        )


# ---- writing ------------------------------------------------------------------------------------


def finalize(
    s: Session,
    org: Organization,
    ws: Workspace,
    sv: StateVersion,
    holder: Holder,
    ref: BlobRef,
    header: inspect.StateHeader,
    json_ref: BlobRef | None,
    *,
    now: datetime,
) -> None:
    """Inside the caller's transaction: mark ``sv`` finalized and make it current, both
    conditionally (``holder`` must still hold the lock), so a lost race changes nothing
    (raises LostRace)."""
    where, serial = f"{org.name}/{ws.name}", sv.serial  # before a failed flush
    try:
        _finalize_rows(s, ws, sv, holder, ref, header, json_ref, now)
    except IntegrityError:
        raise LostRace(
            f"another version with serial {serial} was committed to {where} at the same "
            "moment; nothing was changed"
        ) from None
    except LostRace as exc:
        raise LostRace(f"workspace {where} {exc.detail}") from None


def _finalize_rows(
    s: Session,
    ws: Workspace,
    sv: StateVersion,
    holder: Holder,
    ref: BlobRef,
    header: inspect.StateHeader,
    json_ref: BlobRef | None,
    now: datetime,
) -> None:
    cond = [StateVersion.id == sv.id, StateVersion.status == "pending"]
    values: dict[str, object] = dict(
        status="finalized",
        sha256=ref.sha256,
        size=ref.size,
        terraform_version=header.terraform_version,
        state_format=header.version,
        finalized_at=now,
        upload_nonce=None,
    )
    if header.resource_count >= 0:  # counted while the whole file was checked
        values.update(resource_count=header.resource_count)
    if json_ref is not None:
        values.update(json_sha256=json_ref.sha256, json_size=json_ref.size)
    finalized = s.execute(
        update(StateVersion)
        .where(*cond)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if affected(finalized) != 1:
        raise Conflict("the state version is no longer pending; create a new state version")
    prev = ws.current_state_version_id
    counted = {"resource_count": header.resource_count} if header.resource_count >= 0 else {}
    moved = s.execute(
        update(Workspace)
        .where(
            Workspace.id == ws.id,
            Workspace.lock_is(holder),
            Workspace.current_state_version_id.is_(None)
            if prev is None
            else Workspace.current_state_version_id == prev,
        )
        .values(current_state_version_id=sv.id, updated_at=now, **counted)
        .execution_options(synchronize_session=False)
    )
    if affected(moved) != 1:
        raise LostRace(
            "changed while the state was uploaded (lock released or another version "
            "committed); nothing was changed"
        )
    for o in header.outputs:
        s.add(
            StateVersionOutput(
                id=ids.new_id("state_version_output"),
                state_version_id=sv.id,
                name=o.name[:255],
                sensitive=o.sensitive,
                type_json=o.type_json,
                value_json=o.value_json,
            )
        )
    s.flush()


def audit_version(
    s: Session,
    at: datetime,
    actor: Actor,
    org: Organization,
    ws: Workspace,
    sv: StateVersion,
) -> None:
    record(
        s,
        at=at,
        actor=actor,
        action="state.version.create",
        subject=f"{org.name}/{ws.name}",
        state_version_id=sv.id,
        serial=sv.serial,
        md5=sv.md5,
        forced=sv.force,
    )
