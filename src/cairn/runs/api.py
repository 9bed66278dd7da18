"""TFE API handlers for runs, plans, applies, run events, and the organization's run queue
and capacity (what the CLI's queue display reads)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Protocol

from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from cairn.authz.subject import Subject
from cairn.clock import Clock
from cairn.errors import BadRequest, Invalid, NotFound
from cairn.paging import Page
from cairn.runs import model as m
from cairn.runs import wire
from cairn.runs.model import RunEvent
from cairn.runs.service import NewRun, PhaseView
from cairn.runs.store import RunFilter, RunView, run_filter
from cairn.tfeapi.http import Call, route
from cairn.tfeapi.jsonapi import (
    Includes,
    JsonApiResponse,
    loader_by_id,
    page_from,
    pagination_meta,
    parse_json,
    query,
)

MAX_ADDRS = 1000
MAX_ADDR_LENGTH = 1000


class Runs(Protocol):
    """What the handlers need of ``RunService``."""

    def create(self, caller: Subject, new: NewRun, source: str) -> RunView: ...
    def get(self, caller: Subject, run_id: str) -> RunView: ...
    def list_for_workspace(
        self, caller: Subject, ws_id: str, flt: RunFilter, page: Page
    ) -> tuple[list[RunView], int]: ...
    def list_for_organization(
        self, caller: Subject, org_name: str, flt: RunFilter, page: Page
    ) -> tuple[list[RunView], int]: ...
    def phase(self, caller: Subject, phase_id: str, kind: m.PhaseKind) -> PhaseView: ...
    def run_phase(self, caller: Subject, run_id: str, kind: m.PhaseKind) -> PhaseView: ...
    def json_plan(self, caller: Subject, plan_id: str) -> str | None: ...
    def plan_id_of(self, caller: Subject, run_id: str) -> str: ...
    def iter_blob(self, sha256: str) -> Iterator[bytes]: ...
    def events(self, caller: Subject, run_id: str, page: Page) -> tuple[list[RunEvent], int]: ...
    def event(self, caller: Subject, event_id: str) -> RunEvent: ...
    def queue(self, caller: Subject, org_name: str, page: Page) -> tuple[list[RunView], int]: ...
    def capacity(self, caller: Subject, org_name: str) -> tuple[str, int, int]: ...
    def apply(self, caller: Subject, run_id: str, comment: str, source: str) -> None: ...
    def discard(self, caller: Subject, run_id: str, comment: str, source: str) -> None: ...
    def cancel(self, caller: Subject, run_id: str, comment: str, source: str) -> None: ...
    def force_cancel(self, caller: Subject, run_id: str, comment: str, source: str) -> None: ...
    def force_execute(self, caller: Subject, run_id: str, source: str) -> None: ...


class LogUrl(Protocol):
    def read_url(self, phase_id: str) -> str: ...


def action_comment(raw: bytes) -> str:
    """The comment of an action body, in any of the three shapes clients send: none
    (pytfe), ``{"comment": …}`` (the TFE docs, pytfe) or ``{"data": {"type": "",
    "attributes": {"comment": …}}}`` (go-tfe). Anything else is a 400 that changes nothing."""
    if not raw.strip():
        return ""
    body = parse_json(raw)
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object", pointer="/")
    comment = body.get("comment")
    pointer = "/comment"
    if "data" in body:
        data = body["data"]
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise BadRequest("'data' must be an object", pointer="/data")
        attrs = data.get("attributes") or {}
        if not isinstance(attrs, dict):
            raise Invalid("'data.attributes' must be an object", pointer="/data/attributes")
        if comment is None:
            comment = attrs.get("comment")
            pointer = "/data/attributes/comment"
    if comment is None:
        return ""
    if not isinstance(comment, str):
        raise Invalid("'comment' must be a string", pointer=pointer)
    if len(comment) > 2000:
        raise Invalid("'comment' is longer than 2000 characters", pointer=pointer)
    return comment


def _addrs(values: list[str] | None, name: str) -> list[str]:
    for v in values or []:
        if not v or len(v) > MAX_ADDR_LENGTH:
            raise Invalid(
                f"each of {name} must be a resource address of 1 to {MAX_ADDR_LENGTH} characters",
                pointer=f"/data/attributes/{name}",
            )
    return list(values or [])


class Handlers:
    def __init__(self, runs: Runs, logs: LogUrl, clock: Clock) -> None:
        self.runs = runs
        self.logs = logs
        self.clock = clock

    def _run(self, v: RunView) -> dict[str, object]:
        return wire.run(v, self.clock.now())

    def create_run(self, call: Call) -> Response:
        doc = call.document("runs")
        ws_id = doc.relationship_id("workspace", "workspaces")
        if ws_id is None:
            raise Invalid(
                "relationship 'workspace' is required", pointer="/data/relationships/workspace"
            )
        source = doc.string("source", max_len=40) or "tfe-api"
        if source not in m.SOURCES:
            raise Invalid(
                f"source must be one of {', '.join(sorted(m.SOURCES))}",
                pointer="/data/attributes/source",
            )
        refresh = doc.boolean("refresh")
        new = NewRun(
            workspace_id=ws_id,
            configuration_version_id=doc.relationship_id(
                "configuration-version", "configuration-versions"
            ),
            message=doc.string("message", max_len=2000) or "",
            is_destroy=bool(doc.boolean("is-destroy")),
            refresh=True if refresh is None else refresh,
            refresh_only=bool(doc.boolean("refresh-only")),
            plan_only=bool(doc.boolean("plan-only")),
            auto_apply=doc.boolean("auto-apply"),
            allow_empty_apply=bool(doc.boolean("allow-empty-apply")),
            target_addrs=_addrs(
                doc.string_list("target-addrs", max_items=MAX_ADDRS), "target-addrs"
            ),
            replace_addrs=_addrs(
                doc.string_list("replace-addrs", max_items=MAX_ADDRS), "replace-addrs"
            ),
            source=source,
        )
        if doc.has("variables") and doc.attributes.get("variables") not in ([], None):
            raise Invalid(
                "run-specific variables are not supported yet; set workspace variables instead",
                pointer="/data/attributes/variables",
            )
        view = self.runs.create(call.caller, new, call.source)
        return call.respond(self._run(view), status_code=201)

    def show_run(self, call: Call) -> Response:
        return call.respond(self._run(self.runs.get(call.caller, call.param("id"))))

    def _filter(self, call: Call) -> RunFilter:
        r = call.request
        return run_filter(
            query(r, "filter[status]"),
            query(r, "filter[operation]"),
            query(r, "filter[source]"),
            query(r, "filter[status_group]"),
            query(r, "search[user]"),
            query(r, "search[commit]"),
            query(r, "search[basic]"),
        )

    def list_workspace_runs(self, call: Call) -> Response:
        page = page_from(call.request)
        views, total = self.runs.list_for_workspace(
            call.caller, call.param("id"), self._filter(call), page
        )
        return call.respond(
            [self._run(v) for v in views],
            resource_type="runs",
            meta=pagination_meta(page, total),
        )

    def list_organization_runs(self, call: Call) -> Response:
        page = page_from(call.request)
        views, total = self.runs.list_for_organization(
            call.caller, call.param("org"), self._filter(call), page
        )
        return call.respond(
            [self._run(v) for v in views],
            resource_type="runs",
            meta=pagination_meta(page, total),
        )

    def _action(self, call: Call, name: str) -> Response:
        comment = action_comment(call.raw)
        run_id = call.param("id")
        if name == "apply":
            self.runs.apply(call.caller, run_id, comment, call.source)
        elif name == "discard":
            self.runs.discard(call.caller, run_id, comment, call.source)
        elif name == "cancel":
            self.runs.cancel(call.caller, run_id, comment, call.source)
        elif name == "force-cancel":
            self.runs.force_cancel(call.caller, run_id, comment, call.source)
        else:
            self.runs.force_execute(call.caller, run_id, call.source)
        return Response(status_code=202)

    def apply_run(self, call: Call) -> Response:
        return self._action(call, "apply")

    def discard_run(self, call: Call) -> Response:
        return self._action(call, "discard")

    def cancel_run(self, call: Call) -> Response:
        return self._action(call, "cancel")

    def force_cancel_run(self, call: Call) -> Response:
        return self._action(call, "force-cancel")

    def force_execute_run(self, call: Call) -> Response:
        return self._action(call, "force-execute")

    def _phase_doc(self, pv: PhaseView, kind: m.PhaseKind) -> dict[str, object]:
        read_url = self.logs.read_url
        return wire.plan(pv.view, read_url) if kind == "plan" else wire.apply(pv.view, read_url)

    def show_plan(self, call: Call) -> Response:
        return call.respond(
            self._phase_doc(self.runs.phase(call.caller, call.param("id"), "plan"), "plan")
        )

    def show_apply(self, call: Call) -> Response:
        pv = self.runs.phase(call.caller, call.param("id"), "apply")
        return call.respond(self._phase_doc(pv, "apply"))

    def show_run_plan(self, call: Call) -> Response:
        pv = self.runs.run_phase(call.caller, call.param("id"), "plan")
        return call.respond(self._phase_doc(pv, "plan"))

    def show_run_apply(self, call: Call) -> Response:
        pv = self.runs.run_phase(call.caller, call.param("id"), "apply")
        return call.respond(self._phase_doc(pv, "apply"))

    def _json_output(self, plan_id: str, call: Call) -> Response:
        digest = self.runs.json_plan(call.caller, plan_id)
        if digest is None:
            raise NotFound(
                f"plan {plan_id} has no JSON output yet; it is written when the plan finishes"
            )
        # The first chunk is read before answering: bytes the blob store lost are a 404, not
        # a body cut short.
        chunks = self.runs.iter_blob(digest)
        try:
            first = next(chunks, b"")
        except FileNotFoundError:
            raise NotFound(
                f"the JSON output of plan {plan_id} is missing from the blob store"
            ) from None
        return StreamingResponse(
            itertools.chain([first], chunks),
            media_type="application/json",
            headers={"Cache-Control": "private, no-store"},
        )

    def plan_json_output(self, call: Call) -> Response:
        return self._json_output(call.param("id"), call)

    def run_plan_json_output(self, call: Call) -> Response:
        return self._json_output(self.runs.plan_id_of(call.caller, call.param("id")), call)

    def list_run_events(self, call: Call) -> Response:
        page = page_from(call.request)
        events, total = self.runs.events(call.caller, call.param("id"), page)
        return call.respond(
            [wire.run_event(e) for e in events],
            resource_type="run-events",
            meta=pagination_meta(page, total),
        )

    def show_run_event(self, call: Call) -> Response:
        return call.respond(wire.run_event(self.runs.event(call.caller, call.param("id"))))

    def run_queue(self, call: Call) -> Response:
        page = page_from(call.request)
        views, total = self.runs.queue(call.caller, call.param("org"), page)
        return call.respond(
            [self._run(v) for v in views],
            resource_type="runs",
            meta=pagination_meta(page, total),
        )

    def capacity(self, call: Call) -> Response:
        name, pending, running = self.runs.capacity(call.caller, call.param("org"))
        return JsonApiResponse({"data": wire.capacity(name, pending, running)})


def routes(runs: Runs, logs: LogUrl, clock: Clock) -> list[Route]:
    h = Handlers(runs, logs, clock)
    return [
        route("/runs", h.create_run, ["POST"]),
        route("/runs/{id}", h.show_run, ["GET"]),
        route("/workspaces/{id}/runs", h.list_workspace_runs, ["GET"]),
        route("/organizations/{org}/runs", h.list_organization_runs, ["GET"]),
        route("/organizations/{org}/runs/queue", h.run_queue, ["GET"]),
        route("/organizations/{org}/capacity", h.capacity, ["GET"]),
        route("/runs/{id}/actions/apply", h.apply_run, ["POST"]),
        route("/runs/{id}/actions/discard", h.discard_run, ["POST"]),
        route("/runs/{id}/actions/cancel", h.cancel_run, ["POST"]),
        route("/runs/{id}/actions/force-cancel", h.force_cancel_run, ["POST"]),
        route("/runs/{id}/actions/force-execute", h.force_execute_run, ["POST"]),
        route("/runs/{id}/plan", h.show_run_plan, ["GET"]),
        route("/runs/{id}/apply", h.show_run_apply, ["GET"]),
        route("/runs/{id}/plan/json-output", h.run_plan_json_output, ["GET"]),
        route("/runs/{id}/run-events", h.list_run_events, ["GET"]),
        route("/run-events/{id}", h.show_run_event, ["GET"]),
        route("/plans/{id}", h.show_plan, ["GET"]),
        route("/plans/{id}/json-output", h.plan_json_output, ["GET"]),
        route("/applies/{id}", h.show_apply, ["GET"]),
    ]


def offer_includes(includes: Includes, runs: Runs, logs: LogUrl, clock: Clock) -> None:
    """What ``include=`` can name on runs, plans and applies, and how they are loaded."""
    includes.offer("runs", *wire.INCLUDABLE)
    includes.offer("plans", "run")
    includes.offer("applies", "run")
    includes.loader("runs", loader_by_id(lambda c, i: wire.run(runs.get(c, i), clock.now())))
    includes.loader(
        "plans", loader_by_id(lambda c, i: wire.plan(runs.phase(c, i, "plan").view, logs.read_url))
    )
    includes.loader(
        "applies",
        loader_by_id(lambda c, i: wire.apply(runs.phase(c, i, "apply").view, logs.read_url)),
    )
