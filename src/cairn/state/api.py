"""TFE API handlers for state versions, their outputs, downloads and hosted uploads."""

from __future__ import annotations

import asyncio
import re

from starlette.background import BackgroundTask
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from cairn.errors import BadRequest, Invalid, NotFound, PayloadTooLarge
from cairn.state import wire
from cairn.state.service import SYNC_PROCESS_LIMIT, NewVersion, decode_base64
from cairn.tfeapi.http import Call, route
from cairn.tfeapi.jsonapi import (
    JsonApiResponse,
    page_from,
    pagination_meta,
    parse_document,
    query,
)

_MD5 = re.compile(r"^[0-9a-f]{32}$")
MAX_SERIAL = 2**63 - 1  # a signed 64-bit column on every database


async def create_state_version(call: Call) -> Response:
    settings = call.ctx.settings
    # base64 grows the state by 4/3; leave room for the JSON state that newer CLIs also send.
    raw = b"".join([c async for c in call.stream(settings.max_state_bytes * 3 + 1024 * 1024)])
    doc = parse_document(raw, "state-versions")
    serial = doc.integer("serial", required=True, minimum=0)
    if serial is not None and serial > MAX_SERIAL:
        raise Invalid(f"serial must be at most {MAX_SERIAL}", pointer="/data/attributes/serial")
    md5 = (doc.string("md5", required=True, max_len=32) or "").lower()
    if not _MD5.fullmatch(md5):
        raise Invalid("md5 must be 32 hexadecimal characters", pointer="/data/attributes/md5")
    lineage = doc.string("lineage", max_len=64)
    force = bool(doc.boolean("force"))
    raw_state = doc.string("state", max_len=settings.max_state_bytes * 2)
    state = decode_base64(raw_state, "/data/attributes/state") if raw_state else None
    raw_json = doc.string("json-state", max_len=settings.max_state_bytes * 2)
    json_state = decode_base64(raw_json, "/data/attributes/json-state") if raw_json else None
    if state is not None and len(state) > settings.max_state_bytes:
        raise PayloadTooLarge("the state exceeds CAIRN_MAX_STATE_MB")
    if not lineage:
        raise Invalid("attribute 'lineage' is required", pointer="/data/attributes/lineage")
    assert serial is not None
    new = NewVersion(
        serial=serial, md5=md5, lineage=lineage, force=force, state=state, json_state=json_state
    )
    view = await call.run(call.ctx.states.create, call.caller, call.param("id"), new)
    background = None
    if view.sv.resource_count < 0:  # too large to count before answering: count it right after
        background = BackgroundTask(call.ctx.states.process, view.sv.id)
    return JsonApiResponse(
        {"data": wire.state_version(view, settings.public_url, call.ctx.states)},
        status_code=201,
        background=background,
    )


def list_state_versions(call: Call) -> Response:
    page = page_from(call.request)
    if "id" in call.request.path_params:
        ws_id = call.param("id")
    else:
        org = query(call.request, "filter[organization][name]")
        ws = query(call.request, "filter[workspace][name]")
        if not org or not ws:
            raise BadRequest(
                "filter[organization][name] and filter[workspace][name] are required",
                parameter="filter[workspace][name]",
            )
        ws_id = call.ctx.workspaces.resolve(call.caller, org, ws)
    views, total = call.ctx.states.history(call.caller, ws_id, page)
    base = call.ctx.settings.public_url
    return JsonApiResponse(
        {
            "data": [wire.state_version(v, base, call.ctx.states) for v in views],
            "meta": pagination_meta(page, total),
        }
    )


def show_state_version(call: Call) -> Response:
    view = call.ctx.states.get(call.caller, call.param("id"))
    return JsonApiResponse(
        {"data": wire.state_version(view, call.ctx.settings.public_url, call.ctx.states)}
    )


def current_state_version(call: Call) -> Response:
    view = call.ctx.states.current(call.caller, call.param("id"))
    return JsonApiResponse(
        {"data": wire.state_version(view, call.ctx.settings.public_url, call.ctx.states)}
    )


async def _download(call: Call, *, json_state: bool) -> Response:
    states = call.ctx.states
    digest, size, path = await call.run(
        states.download, call.caller, call.param("id"), json_state=json_state
    )
    headers = {"Content-Length": str(size), "Cache-Control": "private, no-store"}
    if path is not None and not path.is_file():
        raise NotFound("the bytes of this state version are missing from the blob store")
    # 1 MiB chunks, read in the thread pool (FileResponse reads 64 KiB per thread hop).
    return StreamingResponse(
        states.iter_blob(digest), media_type="application/json", headers=headers
    )


async def download(call: Call) -> Response:
    return await _download(call, json_state=False)


async def json_download(call: Call) -> Response:
    return await _download(call, json_state=True)


async def hosted_upload(call: Call) -> Response:
    """PUT to an upload URL. Self-authorising (the signed token is in the path, go-tfe ≥1.28
    sends no Authorization); a Bearer header, when present, is ignored."""
    states = call.ctx.states
    sv_id, token = call.param("id"), call.param("token")
    declared = call.request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > call.ctx.settings.max_state_bytes:
        raise PayloadTooLarge("the state exceeds CAIRN_MAX_STATE_MB")
    upload = await call.run(states.start_upload, sv_id, token)
    try:
        # Hand the body to the worker thread 1 MiB at a time; it is never whole in memory.
        # One write in flight while the next MiB is received, so network and disk overlap.
        buffer = bytearray()
        in_flight: asyncio.Future[None] | None = None
        async for part in call.request.stream():
            buffer += part
            if len(buffer) >= 1024 * 1024:
                if in_flight is not None:
                    await in_flight
                in_flight = asyncio.ensure_future(call.run(upload.writer.write, bytes(buffer)))
                buffer.clear()
        if in_flight is not None:
            await in_flight
        if buffer:
            await call.run(upload.writer.write, bytes(buffer))
    except BaseException:
        await call.run(upload.writer.abort)
        raise
    size = await call.run(states.finish_upload, upload)
    background = BackgroundTask(states.process, sv_id) if size > SYNC_PROCESS_LIMIT else None
    return Response(status_code=200, background=background)


def list_outputs(call: Call) -> Response:
    page = page_from(call.request)
    view = call.ctx.states.get(call.caller, call.param("id"))
    chosen = view.outputs[page.offset : page.offset + page.size]
    return JsonApiResponse(
        {"data": [wire.output(o) for o in chosen], "meta": pagination_meta(page, len(view.outputs))}
    )


def current_outputs(call: Call) -> Response:
    page = page_from(call.request)
    view = call.ctx.states.current(call.caller, call.param("id"))
    chosen = view.outputs[page.offset : page.offset + page.size]
    return JsonApiResponse(
        {"data": [wire.output(o) for o in chosen], "meta": pagination_meta(page, len(view.outputs))}
    )


def show_output(call: Call) -> Response:
    out, _view = call.ctx.states.output(call.caller, call.param("id"))
    return JsonApiResponse({"data": wire.output(out, reveal=True)})


async def rollback(call: Call) -> Response:
    raw = b"".join([c async for c in call.stream(call.ctx.settings.max_json_body_bytes)])
    doc = parse_document(raw, "state-versions")
    target = doc.relationship_id("rollback-state-version", "state-versions")
    if target is None:
        raise Invalid(
            "relationship 'rollback-state-version' names the version to roll back to",
            pointer="/data/relationships/rollback-state-version",
        )
    view = await call.run(call.ctx.states.rollback, call.caller, call.param("id"), target)
    return JsonApiResponse(
        {"data": wire.state_version(view, call.ctx.settings.public_url, call.ctx.states)},
        status_code=201,
    )


def routes() -> list[Route]:
    return [
        # Blobs are written and verified before the row's transaction: these routes make
        # their own hops and transactions (executor "stream").
        route(
            "/workspaces/{id}/state-versions",
            create_state_version,
            ["POST"],
            executor="stream",
        ),
        route("/workspaces/{id}/state-versions", list_state_versions, ["GET"]),
        route("/workspaces/{id}/state-versions", rollback, ["PATCH"], executor="stream"),
        route("/workspaces/{id}/current-state-version", current_state_version, ["GET"]),
        route("/workspaces/{id}/current-state-version-outputs", current_outputs, ["GET"]),
        route("/state-versions", list_state_versions, ["GET"]),
        route("/state-versions/{id}", show_state_version, ["GET"]),
        route("/state-versions/{id}/outputs", list_outputs, ["GET"]),
        route("/state-versions/{id}/download", download, ["GET"], executor="stream"),
        route("/state-versions/{id}/json-download", json_download, ["GET"], executor="stream"),
        # Self-authorising: the signed token is in the path.
        route(
            "/state-versions/{id}/hosted-upload/{token}",
            hosted_upload,
            ["PUT"],
            auth=None,
            executor="stream",
        ),
        route("/state-version-outputs/{id}", show_output, ["GET"]),
    ]
