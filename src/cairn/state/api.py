"""TFE API handlers for state versions, their outputs, downloads and hosted uploads."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from cairn.authz.subject import Subject
from cairn.errors import BadRequest, Invalid, NotFound, PayloadTooLarge
from cairn.paging import Page
from cairn.state import wire
from cairn.state.model import StateVersion, StateVersionOutput
from cairn.state.service import NewVersion, VersionView, decode_base64
from cairn.state.uploads import Upload
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


class States(Protocol):
    """What the handlers need of ``StateService``."""

    def create(self, caller: Subject, ws_id: str, new: NewVersion, source: str) -> VersionView: ...
    def history(self, caller: Subject, ws_id: str, page: Page) -> tuple[list[VersionView], int]: ...
    def get(self, caller: Subject, sv_id: str) -> VersionView: ...
    def current(self, caller: Subject, ws_id: str) -> VersionView: ...
    def output(self, caller: Subject, output_id: str) -> tuple[StateVersionOutput, VersionView]: ...
    def download(
        self, caller: Subject, sv_id: str, *, json_state: bool = False
    ) -> tuple[str, int, Path | None]: ...
    def iter_blob(self, sha256: str) -> Iterator[bytes]: ...
    def rollback(self, caller: Subject, ws_id: str, target_id: str, source: str) -> VersionView: ...


class Uploads(Protocol):
    """What the handlers need of ``HostedUploads``."""

    def token(self, sv: StateVersion, kind: str) -> str | None: ...
    def start(self, sv_id: str, token: str) -> Upload: ...
    def finish(self, upload: Upload, source: str) -> int: ...


class Resolver(Protocol):
    """Workspaces named by organization and name (``WorkspaceService.resolve``)."""

    def __call__(self, caller: Subject, org_name: str | None, name_or_id: str) -> str: ...


@dataclass(frozen=True)
class Limits:
    public_url: str
    max_state_bytes: int
    max_json_body_bytes: int


class Handlers:
    def __init__(self, states: States, uploads: Uploads, resolve: Resolver, limits: Limits) -> None:
        self.states = states
        self.uploads = uploads
        self.resolve = resolve
        self.limits = limits

    def _document(self, view: VersionView) -> dict[str, object]:
        return wire.state_version(view, self.limits.public_url, self.uploads.token)

    async def create_state_version(self, call: Call) -> Response:
        max_state = self.limits.max_state_bytes
        # base64 grows the state by 4/3; leave room for the JSON state that newer CLIs also send.
        raw = b"".join([c async for c in call.stream(max_state * 3 + 1024 * 1024)])
        doc = parse_document(raw, "state-versions")
        serial = doc.integer("serial", required=True, minimum=0)
        if serial is not None and serial > MAX_SERIAL:
            raise Invalid(f"serial must be at most {MAX_SERIAL}", pointer="/data/attributes/serial")
        md5 = (doc.string("md5", required=True, max_len=32) or "").lower()
        if not _MD5.fullmatch(md5):
            raise Invalid("md5 must be 32 hexadecimal characters", pointer="/data/attributes/md5")
        lineage = doc.string("lineage", max_len=64)
        force = bool(doc.boolean("force"))
        raw_state = doc.string("state", max_len=max_state * 2)
        state = decode_base64(raw_state, "/data/attributes/state") if raw_state else None
        raw_json = doc.string("json-state", max_len=max_state * 2)
        json_state = decode_base64(raw_json, "/data/attributes/json-state") if raw_json else None
        if state is not None and len(state) > max_state:
            raise PayloadTooLarge("the state exceeds CAIRN_MAX_STATE_MB")
        if not lineage:
            raise Invalid("attribute 'lineage' is required", pointer="/data/attributes/lineage")
        assert serial is not None
        new = NewVersion(
            serial=serial, md5=md5, lineage=lineage, force=force, state=state, json_state=json_state
        )
        view = await call.run(self.states.create, call.caller, call.param("id"), new, call.source)
        # Its resources were counted while the state was checked, before it was stored.
        return JsonApiResponse({"data": self._document(view)}, status_code=201)

    def list_state_versions(self, call: Call) -> Response:
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
            ws_id = self.resolve(call.caller, org, ws)
        views, total = self.states.history(call.caller, ws_id, page)
        return JsonApiResponse(
            {"data": [self._document(v) for v in views], "meta": pagination_meta(page, total)}
        )

    def show_state_version(self, call: Call) -> Response:
        view = self.states.get(call.caller, call.param("id"))
        return JsonApiResponse({"data": self._document(view)})

    def current_state_version(self, call: Call) -> Response:
        view = self.states.current(call.caller, call.param("id"))
        return JsonApiResponse({"data": self._document(view)})

    async def _download(self, call: Call, *, json_state: bool) -> Response:
        digest, size, path = await call.run(
            self.states.download, call.caller, call.param("id"), json_state=json_state
        )
        headers = {"Content-Length": str(size), "Cache-Control": "private, no-store"}
        if path is not None and not path.is_file():
            raise NotFound("the bytes of this state version are missing from the blob store")
        # 1 MiB chunks, read in the thread pool (FileResponse reads 64 KiB per thread hop).
        return StreamingResponse(
            self.states.iter_blob(digest), media_type="application/json", headers=headers
        )

    async def download(self, call: Call) -> Response:
        return await self._download(call, json_state=False)

    async def json_download(self, call: Call) -> Response:
        return await self._download(call, json_state=True)

    async def hosted_upload(self, call: Call) -> Response:
        """PUT to an upload URL. Self-authorising (the signed token is in the path, go-tfe
        ≥1.28 sends no Authorization); a Bearer header, when present, is ignored."""
        sv_id, token = call.param("id"), call.param("token")
        declared = call.request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.limits.max_state_bytes:
            raise PayloadTooLarge("the state exceeds CAIRN_MAX_STATE_MB")
        upload = await call.run(self.uploads.start, sv_id, token)
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
        await call.run(self.uploads.finish, upload, call.source)
        return Response(status_code=200)  # counted before it was finalized

    def list_outputs(self, call: Call) -> Response:
        return self._outputs(call, self.states.get(call.caller, call.param("id")))

    def current_outputs(self, call: Call) -> Response:
        return self._outputs(call, self.states.current(call.caller, call.param("id")))

    @staticmethod
    def _outputs(call: Call, view: VersionView) -> Response:
        page = page_from(call.request)
        chosen = view.outputs[page.offset : page.offset + page.size]
        return JsonApiResponse(
            {
                "data": [wire.output(o) for o in chosen],
                "meta": pagination_meta(page, len(view.outputs)),
            }
        )

    def show_output(self, call: Call) -> Response:
        out, _view = self.states.output(call.caller, call.param("id"))
        return JsonApiResponse({"data": wire.output(out, reveal=True)})

    async def rollback(self, call: Call) -> Response:
        raw = b"".join([c async for c in call.stream(self.limits.max_json_body_bytes)])
        doc = parse_document(raw, "state-versions")
        target = doc.relationship_id("rollback-state-version", "state-versions")
        if target is None:
            raise Invalid(
                "relationship 'rollback-state-version' names the version to roll back to",
                pointer="/data/relationships/rollback-state-version",
            )
        view = await call.run(
            self.states.rollback, call.caller, call.param("id"), target, call.source
        )
        return JsonApiResponse({"data": self._document(view)}, status_code=201)


def routes(states: States, uploads: Uploads, resolve: Resolver, limits: Limits) -> list[Route]:
    """``resolve``: a workspace's ID from its organization and name (workspaces sit below
    state; the service is passed in)."""
    h = Handlers(states, uploads, resolve, limits)
    return [
        # Blobs are written and verified before the row's transaction: these routes make
        # their own hops and transactions (executor "stream").
        route(
            "/workspaces/{id}/state-versions",
            h.create_state_version,
            ["POST"],
            executor="stream",
        ),
        route("/workspaces/{id}/state-versions", h.list_state_versions, ["GET"]),
        route("/workspaces/{id}/state-versions", h.rollback, ["PATCH"], executor="stream"),
        route("/workspaces/{id}/current-state-version", h.current_state_version, ["GET"]),
        route("/workspaces/{id}/current-state-version-outputs", h.current_outputs, ["GET"]),
        route("/state-versions", h.list_state_versions, ["GET"]),
        route("/state-versions/{id}", h.show_state_version, ["GET"]),
        route("/state-versions/{id}/outputs", h.list_outputs, ["GET"]),
        route("/state-versions/{id}/download", h.download, ["GET"], executor="stream"),
        route("/state-versions/{id}/json-download", h.json_download, ["GET"], executor="stream"),
        # Self-authorising: the signed token is in the path.
        route(
            "/state-versions/{id}/hosted-upload/{token}",
            h.hosted_upload,
            ["PUT"],
            auth=None,
            executor="stream",
        ),
        route("/state-version-outputs/{id}", h.show_output, ["GET"]),
    ]
