"""Runs, plans, applies and run events through the official Python SDK, pytfe 1.5.0, against a
real cairn server over HTTPS with its built-in worker and the real Terraform 1.0.3, on both
metadata backends.

A configuration version uploaded with pytfe, then runs created with it: read (status, actions,
permissions, timestamps and relationships as pytfe's models parse them), listed per workspace
and per organization (with a status filter), applied, discarded, canceled while pending behind
a user-held lock and while applying; plans and applies read by ID and by run, the JSON plan, and
the run events.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pytfe import TFEClient
from pytfe.errors import TFEError
from pytfe.models import (
    ConfigurationVersion,
    ConfigurationVersionCreateOptions,
    Run,
    RunApplyOptions,
    RunCancelOptions,
    RunCreateOptions,
    RunDiscardOptions,
    RunListForOrganizationOptions,
    RunListOptions,
    RunSource,
    RunStatus,
    Workspace,
    WorkspaceCreateOptions,
    WorkspaceLockOptions,
)
from pytfe.models.apply import ApplyStatus
from pytfe.models.plan import PlanStatus

from tests.conftest import start_server
from tests.e2e.runs_support import phase_log, run_cli_config, server_env, wait_until
from tests.support import api as tfe_api
from tests.support.server import CairnServer

pytestmark = pytest.mark.e2e

OUTPUT = 'output "greeting" {\n  value = "hello"\n}\n'
SLOW_APPLY = """terraform {
  required_providers {
    null = {
      source  = "hashicorp/null"
      version = "2.1.2"
    }
  }
}
resource "null_resource" "slow" {
  provisioner "local-exec" {
    command = "echo sleeping; sleep 600"
  }
}
"""
FINAL = {
    RunStatus.Run_Applied,
    RunStatus.Run_Planned_And_Finished,
    RunStatus.Run_Errored,
    RunStatus.Run_Canceled,
    RunStatus.Run_Discarded,
}


@pytest.fixture(scope="module")
def server(
    request: pytest.FixtureRequest,
    backend: str,
    admin_token: str,
    tmp_path_factory: pytest.TempPathFactory,
    provider_mirror: Path,
) -> Iterator[CairnServer]:
    """One HTTPS cairn per backend with its built-in worker, Terraform and the null mirror."""
    root = tmp_path_factory.mktemp(f"cairn-runs-{backend}")
    config = run_cli_config(root / "run.tfrc", provider_mirror)
    env = server_env(CAIRN_WORKERS="1", CAIRN_RUN_TF_CLI_CONFIG=str(config))
    srv = start_server(request, root / "data", backend, admin_token, env=env)
    try:
        yield srv
    finally:
        srv.stop()


def upload(tfe: TFEClient, ws_id: str, main_tf: str, tmp_path: Path) -> str:
    """A configuration version created and uploaded with pytfe (a directory it packs)."""
    source = tmp_path / f"config-{time.monotonic_ns()}"
    source.mkdir()
    (source / "main.tf").write_text(main_tf)
    cv = tfe.configuration_versions.create(
        ws_id, ConfigurationVersionCreateOptions(auto_queue_runs=False)
    )
    assert cv.upload_url
    tfe.configuration_versions.upload(cv.upload_url, str(source))
    return cv.id


def new_run(tfe: TFEClient, ws_id: str, cv_id: str, **options: object) -> Run:
    return tfe.runs.create(
        RunCreateOptions(
            workspace=Workspace(id=ws_id),
            configuration_version=ConfigurationVersion(id=cv_id),
            **options,
        )
    )


def wait_run(tfe: TFEClient, run_id: str, wanted: RunStatus, timeout: float = 120) -> Run:
    def check() -> Run | None:
        run = tfe.runs.read(run_id)
        if run.status == wanted:
            return run
        assert run.status not in FINAL, f"{run_id} ended {run.status}, not {wanted}"
        return None

    return wait_until(check, timeout=timeout, interval=0.3, what=f"{run_id} to be {wanted}")


@pytest.fixture
def workspace(tfe: TFEClient, org: str) -> Callable[[], str]:
    def make() -> str:
        name = tfe_api.unique_name("runs")
        ws = tfe.workspaces.create(org, WorkspaceCreateOptions(name=name, execution_mode="remote"))
        return ws.id

    return make


def test_create_read_apply_and_the_models(
    tfe: TFEClient, org: str, workspace: Callable[[], str], tmp_path: Path
) -> None:
    ws_id = workspace()
    cv_id = upload(tfe, ws_id, OUTPUT, tmp_path)
    created = new_run(tfe, ws_id, cv_id, message="from pytfe")
    assert created.id.startswith("run-")
    assert created.message == "from pytfe"
    assert created.source == RunSource.Run_Source_API
    assert created.is_destroy is False and created.plan_only is False
    assert created.created_at is not None
    assert created.workspace is not None and created.workspace.id == ws_id
    assert created.configuration_version is not None
    assert created.configuration_version.id == cv_id
    assert created.plan is not None and created.plan.id.startswith("plan-")
    assert created.apply is not None and created.apply.id.startswith("apply-")

    run = wait_run(tfe, created.id, RunStatus.Run_Planned)
    assert run.has_changes is True  # a new output
    assert run.actions is not None and run.permissions is not None
    assert run.actions.is_confirmable and run.actions.is_discardable
    assert run.actions.is_cancelable is False
    assert run.permissions.can_apply and run.permissions.can_discard
    assert run.permissions.can_cancel and run.permissions.can_force_cancel
    assert run.status_timestamps is not None
    stamps = run.status_timestamps
    assert stamps.plan_queued_at and stamps.planning_at and stamps.planned_at
    assert stamps.plan_queued_at <= stamps.planning_at <= stamps.planned_at

    assert run.plan is not None
    plan = tfe.plans.read(run.plan.id)
    assert plan.status == PlanStatus.PLAN_FINISHED
    assert plan.has_changes is True
    assert (plan.resource_additions, plan.resource_changes, plan.resource_destructions) == (0, 0, 0)
    assert plan.log_read_url and plan.log_read_url.startswith("https://")
    assert plan.status_timestamps is not None and plan.status_timestamps.finished_at
    assert tfe.plans.read_for_run(run.id).id == plan.id
    assert tfe.plans.logs(plan.id) == ""  # pytfe 1.5.0 validates the URL, reads nothing
    document = tfe.plans.read_json_output(plan.id)
    assert document is not None
    assert document["output_changes"]["greeting"]["after"] == "hello"
    assert tfe.plans.read_json_output_for_run(run.id) == document

    tfe.runs.apply(run.id, RunApplyOptions(comment="ship it"))
    applied = wait_run(tfe, run.id, RunStatus.Run_Applied)
    assert applied.actions is not None
    assert not (applied.actions.is_confirmable or applied.actions.is_cancelable)
    assert applied.status_timestamps is not None and applied.status_timestamps.applied_at
    assert applied.apply is not None
    apply = tfe.applies.read(applied.apply.id)
    assert apply.status == ApplyStatus.APPLY_FINISHED
    assert apply.log_read_url and apply.status_timestamps is not None
    assert apply.status_timestamps.finished_at

    events = [e.action for e in tfe.run_events.list(run.id)]
    assert "applied" in events and "confirmed" in events, events
    with pytest.raises(TFEError):  # applied already
        tfe.runs.apply(run.id)


def test_list_discard_and_cancel(
    tfe: TFEClient,
    org: str,
    workspace: Callable[[], str],
    server: CairnServer,
    admin_token: str,
    tmp_path: Path,
) -> None:
    ws_id = workspace()
    cv_id = upload(tfe, ws_id, OUTPUT, tmp_path)

    # Discard a planned run.
    first = new_run(tfe, ws_id, cv_id)
    wait_run(tfe, first.id, RunStatus.Run_Planned)
    tfe.runs.discard(first.id, RunDiscardOptions(comment="not today"))
    discarded = tfe.runs.read(first.id)
    assert discarded.status == RunStatus.Run_Discarded
    assert discarded.status_timestamps and discarded.status_timestamps.discarded_at
    assert discarded.actions is not None and not discarded.actions.is_discardable

    # Cancel a run waiting behind a user-held lock (the CLI's -lock-timeout path).
    tfe.workspaces.lock(ws_id, WorkspaceLockOptions(reason="maintenance"))
    waiting = new_run(tfe, ws_id, cv_id)
    assert waiting.status == RunStatus.Run_Pending
    assert waiting.actions is not None and waiting.actions.is_cancelable
    tfe.runs.cancel(waiting.id, RunCancelOptions(comment="give up"))
    canceled = tfe.runs.read(waiting.id)
    assert canceled.status == RunStatus.Run_Canceled
    assert canceled.canceled_at is not None
    tfe.workspaces.unlock(ws_id)

    # Cancel a running apply: Terraform is interrupted, the run ends canceled.
    slow_cv = upload(tfe, ws_id, SLOW_APPLY, tmp_path)
    slow = new_run(tfe, ws_id, slow_cv, auto_apply=True)
    wait_run(tfe, slow.id, RunStatus.Run_Applying, timeout=120)
    with server.client(admin_token) as api:
        wait_until(
            lambda: True if b"sleeping" in phase_log(api, slow.id, "apply") else None,
            timeout=60,
            what="the apply to sleep",
        )
    running = tfe.runs.read(slow.id)
    assert running.actions is not None and running.actions.is_cancelable
    tfe.runs.cancel(slow.id)
    stopped = wait_run(tfe, slow.id, RunStatus.Run_Canceled, timeout=60)
    assert stopped.apply is not None
    assert tfe.applies.read(stopped.apply.id).status == ApplyStatus.APPLY_CANCELED

    # Lists: newest first, per workspace and per organization, with a status filter.
    listed = [r.id for r in tfe.runs.list(ws_id)]
    assert listed == [slow.id, waiting.id, first.id]
    only = [r.id for r in tfe.runs.list(ws_id, RunListOptions(status="discarded"))]
    assert only == [first.id]
    across = list(tfe.runs.list_for_organization(org))
    assert {r.id for r in across} == set(listed)
    assert all(r.status is not None for r in across)
    by_status = tfe.runs.list_for_organization(
        org, RunListForOrganizationOptions(status="canceled")
    )
    assert {r.id for r in by_status} == {waiting.id, slow.id}
