"""The run machine's rules (``cairn.runs.model``): pure functions of a run row and ``now``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cairn.runs import model as m
from cairn.runs.model import Run, RunPhase

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def run(status: str = m.PENDING, position: int = 1, **fields: object) -> Run:
    values: dict[str, object] = dict(
        id=f"run-{position}",
        workspace_id="ws-1",
        organization_id="org-1",
        configuration_version_id="cv-1",
        status=status,
        is_destroy=False,
        refresh=True,
        refresh_only=False,
        plan_only=False,
        speculative=False,
        auto_apply=False,
        allow_empty_apply=False,
        target_addrs=[],
        replace_addrs=[],
        status_timestamps={},
        position=position,
        canceled_at=None,
        force_cancel_available_at=None,
    )
    values.update(fields)
    return Run(**values)


@pytest.mark.parametrize(
    ("status", "cancelable", "confirmable", "discardable"),
    [
        (m.PENDING, True, False, True),
        (m.PLAN_QUEUED, True, False, False),
        (m.PLANNING, True, False, False),
        (m.PLANNED, False, True, True),
        (m.APPLY_QUEUED, True, False, False),
        (m.APPLYING, True, False, False),
        (m.APPLIED, False, False, False),
        (m.PLANNED_AND_FINISHED, False, False, False),
        (m.DISCARDED, False, False, False),
        (m.CANCELED, False, False, False),
        (m.ERRORED, False, False, False),
    ],
)
def test_actions_follow_the_status(
    status: str, cancelable: bool, confirmable: bool, discardable: bool
) -> None:
    acts = m.actions(run(status), NOW)
    assert acts.is_cancelable is cancelable
    assert acts.is_confirmable is confirmable
    assert acts.is_discardable is discardable
    assert acts.is_force_cancelable is False


def test_force_cancel_opens_after_the_cool_off_of_a_cancel() -> None:
    r = run(
        m.PLANNING,
        canceled_at=NOW,
        force_cancel_available_at=NOW + m.FORCE_CANCEL_COOL_OFF,
    )
    assert not m.actions(r, NOW).is_cancelable  # asked once already
    assert not m.force_cancelable(r, NOW)
    assert not m.force_cancelable(r, NOW + timedelta(seconds=9))
    assert m.force_cancelable(r, NOW + timedelta(seconds=10))
    assert m.actions(r, NOW + timedelta(seconds=10)).is_force_cancelable
    r.status = m.CANCELED
    assert not m.force_cancelable(r, NOW + timedelta(seconds=60))


def test_after_plan() -> None:
    assert m.after_plan(run(m.PLANNING), True) == m.PlanVerdict(m.PLANNED, False)
    assert m.after_plan(run(m.PLANNING), False).status == m.PLANNED_AND_FINISHED
    assert m.after_plan(run(m.PLANNING, allow_empty_apply=True), False).status == m.PLANNED
    assert m.after_plan(run(m.PLANNING, auto_apply=True), True) == m.PlanVerdict(
        m.APPLY_QUEUED, True
    )
    spec = run(m.PLANNING, speculative=True, plan_only=True, auto_apply=True)
    assert m.after_plan(spec, True) == m.PlanVerdict(m.PLANNED_AND_FINISHED, False)
    canceled = run(m.PLANNING, canceled_at=NOW)
    assert m.after_plan(canceled, True).status == m.CANCELED


def test_next_in_line() -> None:
    a, b = run(m.PENDING, 1), run(m.PENDING, 2)
    active = run(m.PLANNING, 0)
    # Nothing ahead: the first pending run starts and is current.
    assert m.next_in_line([a, b], None, False) == (a, a)
    # An active run stays current; nothing starts.
    assert m.next_in_line([a, b], active, False) == (None, active)
    # A user's lock: nothing starts, and the first waiting run is the current one.
    assert m.next_in_line([a, b], None, True) == (None, a)
    assert m.next_in_line([], None, False) == (None, None)


def test_priorities_and_operations() -> None:
    assert m.priority(run(), "apply") == m.PRIORITY_APPLY == 0
    assert m.priority(run(), "plan") == m.PRIORITY_PLAN == 1
    assert m.priority(run(speculative=True), "plan") == m.PRIORITY_SPECULATIVE == 2
    assert m.operation(run()) == "plan_and_apply"
    assert m.operation(run(is_destroy=True)) == "destroy"
    assert m.operation(run(refresh_only=True)) == "refresh_only"
    assert m.operation(run(plan_only=True, speculative=True)) == "plan_only"
    assert m.operation(run(allow_empty_apply=True)) == "empty_apply"


def test_stamp_records_every_status_entered() -> None:
    r = run(m.PENDING)
    r.stamp(m.PLAN_QUEUED, NOW)
    r.stamp(m.PLANNING, NOW + timedelta(seconds=1))
    assert r.status == m.PLANNING
    assert r.status_timestamps == {
        "plan-queued-at": "2026-01-01T12:00:00.000Z",
        "planning-at": "2026-01-01T12:00:01.000Z",
    }


def test_phase_timestamps_use_hcp_names() -> None:
    ph = RunPhase(id="plan-1", run_id="run-1", kind="plan", status=m.PHASE_PENDING)
    ph.stamp(m.PHASE_QUEUED, NOW)
    ph.stamp(m.PHASE_RUNNING, NOW + timedelta(seconds=1))
    ph.stamp(m.PHASE_FINISHED, NOW + timedelta(seconds=2))
    assert set(ph.status_timestamps) == {"queued-at", "started-at", "finished-at"}
    assert ph.started_at == NOW + timedelta(seconds=1)
    assert ph.finished_at == NOW + timedelta(seconds=2)
