"""TFE API handlers for state versions, their outputs, downloads and hosted uploads."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from cairn.authz.permissions import STATE_READ_OUTPUTS
from cairn.authz.subject import Subject
from cairn.blobs.store import CHUNK
from cairn.errors import BadRequest, Invalid, NotFound, PayloadTooLarge
from cairn.paging import Page
from cairn.state import wire
from cairn.state.intake import Base64Decoder, InlineBody, Kind, Staged
from cairn.state.model import StateVersionOutput
from cairn.state.service import NewVersion, VersionView
from cairn.state.uploads import Upload
from cairn.tfeapi.http import Call, route
from cairn.tfeapi.jsonapi import (
    Document,
    Includes,
    JsonApiResponse,
    Resource,
    loader_by_id,
    page_from,
    pagination_meta,
    parse_document,
    query,
)

_MD5 = re.compile(r"^[0-9a-f]{32}$")
MAX_SERIAL = 2**63 - 1  # a signed 64-bit column on every database


class States(Protocol):
    """What the handlers need of ``StateService``."""

    def stage(self, kind: Kind) -> Staged: ...
    def create(self, caller: Subject, ws_id: str, new: NewVersion, source: str) -> VersionView: ...
    def history(self, caller: Subject, ws_id: str, page: Page) -> tuple[list[VersionView], int]: ...
    def get(self, caller: Subject, sv_id: str, *, need: str = ...) -> VersionView: ...
    def current(self, caller: Subject, ws_id: str, *, need: str = ...) -> VersionView: ...
    def output(self, caller: Subject, output_id: str) -> tuple[StateVersionOutput, VersionView]: ...
    def download(
        self, caller: Subject, sv_id: str, *, json_state: bool = False
    ) -> tuple[str, int, Path | None]: ...
    def iter_blob(self, sha256: str) -> Iterator[bytes]: ...
    def rollback(self, caller: Subject, ws_id: str, target_id: str, source: str) -> VersionView: ...


class Uploads(Protocol):
    """What the handlers need of ``HostedUploads``."""

    def token(self, view: VersionView, kind: str, caller: Subject) -> str | None: ...
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

    def _document(self, view: VersionView, caller: Subject) -> dict[str, object]:
        """``view`` as ``caller`` sees it: upload URLs only for a caller who may write it."""
        return wire.state_version(
            view,
            self.limits.public_url,
            lambda _sv, kind: self.uploads.token(view, kind, caller),
        )

    async def create_state_version(self, call: Call) -> Response:
        """Terraform 1.0.3 sends the state inline, base64 in ``data.attributes.state``: the
        body is scanned as it arrives and the state decoded, hashed, checked and written to an
        uncommitted blob a MiB at a time, in worker threads (``state.intake``); the event loop
        only passes chunks on. The rest of the body is parsed as usual, bounded."""
        max_state = self.limits.max_state_bytes
        body = InlineBody(
            self.states.stage,
            max_skeleton=self.limits.max_json_body_bytes,
            max_encoded=(max_state + 2) // 3 * 4,
        )
        # base64 grows the state by 4/3; leave room for the JSON state that newer CLIs also send.
        chunks = call.stream(max_state * 3 + 1024 * 1024)
        await call.pump(chunks, body.feed, body.abort, batch=CHUNK)
        try:
            new = await call.run(self._parse_create, body)
            view = await call.run(
                self.states.create, call.caller, call.param("id"), new, call.source
            )
        except BaseException:
            body.abort()  # the service has aborted what it was given; the rest is thrown away
            raise
        # Its resources were counted while the state was checked, before it was stored.
        return JsonApiResponse({"data": self._document(view, call.caller)}, status_code=201)

    def _parse_create(self, body: InlineBody) -> NewVersion:
        """The create document (worker thread): attributes from the skeleton, the state and
        JSON state as staged while the body arrived."""
        doc = parse_document(body.close(), "state-versions")
        serial = doc.integer("serial", required=True, minimum=0)
        if serial is not None and serial > MAX_SERIAL:
            raise Invalid(f"serial must be at most {MAX_SERIAL}", pointer="/data/attributes/serial")
        md5 = (doc.string("md5", required=True, max_len=32) or "").lower()
        if not _MD5.fullmatch(md5):
            raise Invalid("md5 must be 32 hexadecimal characters", pointer="/data/attributes/md5")
        lineage = doc.string("lineage", max_len=64) or ""
        force = bool(doc.boolean("force"))
        state = self._staged(doc, body, "state")
        json_state = self._staged(doc, body, "json")
        assert serial is not None
        return NewVersion(
            serial=serial, md5=md5, lineage=lineage, force=force, state=state, json_state=json_state
        )

    def _staged(self, doc: Document, body: InlineBody, kind: Kind) -> Staged | None:
        """The staged bytes of attribute ``state`` / ``json-state``, or None when it is absent,
        null or empty (a pending version)."""
        name = "state" if kind == "state" else "json-state"
        value = doc.string(name, max_len=self.limits.max_json_body_bytes)
        staged = body.staged.get(kind)
        if value:  # a string the scan did not divert (never, for a well-formed body): decode it
            if staged is not None:
                staged.abort()
            staged = self.states.stage(kind)
            body.staged[kind] = staged
            decoder = Base64Decoder(staged.feed, f"/data/attributes/{name}")
            decoder.feed(value.encode("utf-8", "surrogatepass"))
            decoder.close()
        if value is None or staged is None or staged.size == 0:
            if staged is not None:
                staged.abort()
            return None
        return staged

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
        return call.respond(
            [self._document(v, call.caller) for v in views],
            resource_type="state-versions",
            meta=pagination_meta(page, total),
        )

    def show_state_version(self, call: Call) -> Response:
        view = self.states.get(call.caller, call.param("id"))
        return call.respond(self._document(view, call.caller))

    def current_state_version(self, call: Call) -> Response:
        view = self.states.current(call.caller, call.param("id"))
        return call.respond(self._document(view, call.caller))

    async def _download(self, call: Call, *, json_state: bool) -> Response:
        digest, size, path = await call.run(
            self.states.download, call.caller, call.param("id"), json_state=json_state
        )
        headers = {"Content-Length": str(size), "Cache-Control": "private, no-store"}
        if path is not None and not path.is_file():
            raise NotFound("the bytes of this state version are missing from the blob store")
        # 1 MiB chunks, read in the thread pool (FileResponse reads 64 KiB per thread hop).
        # The first is read before the answer starts, so a blob store that cannot serve the
        # bytes (S3 throttled or down: 503; bytes lost: 404) answers an error document, not a
        # body cut short.
        chunks = self.states.iter_blob(digest)
        try:
            first = await call.run(next, chunks, b"")
        except FileNotFoundError:
            raise NotFound(
                "the bytes of this state version are missing from the blob store"
            ) from None
        return StreamingResponse(
            _starting_with(first, chunks), media_type="application/json", headers=headers
        )

    async def download(self, call: Call) -> Response:
        return await self._download(call, json_state=False)

    async def json_download(self, call: Call) -> Response:
        return await self._download(call, json_state=True)

    async def hosted_upload(self, call: Call) -> Response:
        """PUT to an upload URL. Self-authorising (the signed token is in the path, go-tfe
        ≥1.28 sends no Authorization); a Bearer header, when present, is ignored. The URL is
        used up first, so that it works once whatever the outcome (``state.uploads``)."""
        sv_id, token = call.param("id"), call.param("token")
        upload = await call.run(self.uploads.start, sv_id, token)
        staged = upload.staged
        declared = call.request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.limits.max_state_bytes:
            staged.abort()
            raise PayloadTooLarge(
                "the state exceeds CAIRN_MAX_STATE_MB; this upload URL is used up: create a "
                "new state version"
            )
        await call.pump(call.chunks(), staged.feed, staged.abort, batch=CHUNK)
        try:
            await call.run(self.uploads.finish, upload, call.source)
        except BaseException:
            staged.abort()  # nothing committed stays behind (a no-op once committed)
            raise
        return Response(status_code=200)  # counted before it was finalized

    def list_outputs(self, call: Call) -> Response:
        view = self.states.get(call.caller, call.param("id"), need=STATE_READ_OUTPUTS)
        return self._outputs(call, view)

    def current_outputs(self, call: Call) -> Response:
        view = self.states.current(call.caller, call.param("id"), need=STATE_READ_OUTPUTS)
        return self._outputs(call, view)

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
        return JsonApiResponse({"data": self._document(view, call.caller)}, status_code=201)


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


def offer_includes(includes: Includes, states: States, uploads: Uploads, public_url: str) -> None:
    """What ``include=`` can name on state versions (HCP Terraform's list; ``run…`` follows
    the run that wrote the version, loaded by the runs domain), and the state's side of
    workspace includes: state versions by ID, a state version's outputs and a workspace's
    (current) outputs."""
    includes.offer(
        "state-versions",
        "created_by",
        "run",
        "run.created_by",
        "run.configuration_version",
        "outputs",
    )

    def state_version(caller: Subject, sv_id: str) -> Resource:
        view = states.get(caller, sv_id)
        return wire.state_version(
            view, public_url, lambda _sv, kind: uploads.token(view, kind, caller)
        )

    def version_outputs(
        caller: Subject, docs: Sequence[Resource]
    ) -> Iterable[tuple[Resource, list[Resource]]]:
        for doc in docs:
            try:
                view = states.get(caller, doc["id"], need=STATE_READ_OUTPUTS)
            except NotFound:
                continue
            yield doc, [wire.output(o) for o in view.outputs]

    def workspace_outputs(
        caller: Subject, docs: Sequence[Resource]
    ) -> Iterable[tuple[Resource, list[Resource]]]:
        for doc in docs:
            try:
                view = states.current(caller, doc["id"], need=STATE_READ_OUTPUTS)
            except NotFound:  # no state yet, or no right to read it
                yield doc, []
                continue
            yield doc, [wire.workspace_output(o) for o in view.outputs]

    includes.loader("state-versions", loader_by_id(state_version))
    includes.resolver("state-versions", "outputs", version_outputs)
    includes.resolver("workspaces", "outputs", workspace_outputs)


def _starting_with(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest
