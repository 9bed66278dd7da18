"""TFE API handlers for configuration versions: create, show, list, download, and the PUT to
the upload URL."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from cairn.authz.subject import Subject
from cairn.blobs.store import CHUNK
from cairn.configversions import wire
from cairn.configversions.model import ConfigurationVersion, ConfigurationVersionIngress
from cairn.configversions.service import ConfigUpload, CvView, NewConfig, too_large
from cairn.errors import ApiError, NotFound, PayloadTooLarge
from cairn.paging import Page
from cairn.tfeapi.http import Call, route
from cairn.tfeapi.jsonapi import (
    Includes,
    JsonApiResponse,
    Resource,
    loader_by_id,
    page_from,
    pagination_meta,
)

log = logging.getLogger("cairn.configversions")


class Configs(Protocol):
    """What the handlers need of ``ConfigVersions``."""

    max_bytes: int

    def create(self, caller: Subject, ws_id: str, new: NewConfig) -> tuple[CvView, str]: ...
    def show(self, caller: Subject, cv_id: str) -> CvView: ...
    def ingress(
        self, caller: Subject, cv_id: str
    ) -> tuple[CvView, ConfigurationVersionIngress | None]: ...
    def list(self, caller: Subject, ws_id: str, page: Page) -> tuple[list[CvView], int]: ...
    def download(self, caller: Subject, cv_id: str) -> tuple[str, int]: ...
    def iter_blob(self, sha256: str) -> Iterator[bytes]: ...
    def start_upload(self, cv_id: str, token: str) -> ConfigUpload: ...
    def finish_upload(self, upload: ConfigUpload) -> ConfigurationVersion: ...
    def fail_upload(self, cv_id: str, message: str) -> None: ...


@dataclass(frozen=True)
class Limits:
    public_url: str


def source_of(request: Request) -> str:
    """HCP Terraform's ``source``: ``terraform`` for the CLI's remote backend (it sends
    ``Terraform-Version``), ``terraform+cloud`` for its cloud block, ``tfe-api`` otherwise."""
    if request.headers.get("x-terraform-integration", "").lower() == "cloud":
        return "terraform+cloud"
    if request.headers.get("terraform-version"):
        return "terraform"
    return "tfe-api"


class Handlers:
    def __init__(self, configs: Configs, limits: Limits) -> None:
        self.configs = configs
        self.limits = limits

    def create(self, call: Call) -> Response:
        new = NewConfig(source=source_of(call.request))
        if call.raw.strip():
            doc = call.document("configuration-versions", allow_blank_type=True)
            auto = doc.boolean("auto-queue-runs")
            new = NewConfig(
                auto_queue_runs=True if auto is None else auto,
                speculative=bool(doc.boolean("speculative")),
                provisional=bool(doc.boolean("provisional")),
                source=new.source,
            )
        view, token = self.configs.create(call.caller, call.param("id"), new)
        doc_ = wire.configuration_version(view, self.limits.public_url, token)
        return JsonApiResponse({"data": doc_}, status_code=201)

    def show(self, call: Call) -> Response:
        view = self.configs.show(call.caller, call.param("id"))
        return call.respond(wire.configuration_version(view, self.limits.public_url))

    def list(self, call: Call) -> Response:
        page = page_from(call.request)
        views, total = self.configs.list(call.caller, call.param("id"), page)
        return call.respond(
            [wire.configuration_version(v, self.limits.public_url) for v in views],
            resource_type="configuration-versions",
            meta=pagination_meta(page, total),
        )

    def ingress_attributes(self, call: Call) -> Response:
        """The commit a version was made from (HCP's attribute names); ``data: null`` for a
        version that was uploaded, not made from a commit."""
        view, row = self.configs.ingress(call.caller, call.param("id"))
        if row is None:
            return JsonApiResponse({"data": None})
        return JsonApiResponse({"data": wire.ingress_attributes(view.cv.id, row)})

    async def download(self, call: Call) -> Response:
        """The ``.tar.gz``, streamed a MiB at a time from the blob store (HCP Terraform
        redirects to its archive store; cairn serves the bytes itself)."""
        digest, size = await call.run(self.configs.download, call.caller, call.param("id"))
        chunks = self.configs.iter_blob(digest)
        # The first chunk is read before the answer starts: a store that cannot serve the
        # bytes answers an error document, not a body cut short.
        try:
            first = await call.run(next, chunks, b"")
        except FileNotFoundError:
            raise NotFound(
                "the archive of this configuration version is missing from the blob store"
            ) from None
        headers = {"Content-Length": str(size), "Cache-Control": "private, no-store"}
        return StreamingResponse(
            _starting_with(first, chunks), media_type="application/octet-stream", headers=headers
        )

    async def upload(self, call: Call) -> Response:
        """PUT to an upload URL: self-authorising (the signed token is in the path; go-tfe
        sends no Authorization, and a Bearer header is ignored). The URL is used up first;
        then whatever goes wrong marks the version ``errored`` with the reason, which is also
        the answer."""
        cv_id = call.param("id")
        upload = await call.run(self.configs.start_upload, cv_id, call.param("token"))
        try:
            declared = call.request.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > self.configs.max_bytes:
                raise PayloadTooLarge(too_large(self.configs.max_bytes))
            await call.pump(call.chunks(), upload.feed, upload.abort, batch=CHUNK)
            await call.run(self.configs.finish_upload, upload)
        except ApiError as exc:
            upload.abort()
            await call.run(self.configs.fail_upload, cv_id, exc.detail)
            raise
        except BaseException:
            upload.abort()
            # Cancelled or failed unexpectedly: mark it errored without waiting here.
            asyncio.get_running_loop().run_in_executor(
                None,
                self.configs.fail_upload,
                cv_id,
                "the upload broke off before the configuration was complete; create a new "
                "configuration version and upload again",
            )
            raise
        return Response(status_code=200)


def _starting_with(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest


def routes(configs: Configs, limits: Limits) -> list[Route]:
    h = Handlers(configs, limits)
    return [
        route("/workspaces/{id}/configuration-versions", h.create, ["POST"]),
        route("/workspaces/{id}/configuration-versions", h.list, ["GET"]),
        route("/configuration-versions/{id}", h.show, ["GET"]),
        route("/configuration-versions/{id}/ingress-attributes", h.ingress_attributes, ["GET"]),
        # Streamed out of the blob store (its own hops, executor "stream").
        route("/configuration-versions/{id}/download", h.download, ["GET"], executor="stream"),
        # Self-authorising: the signed token is in the path ("hosted-upload", as state's, so
        # the server's error log cuts it off).
        route(
            "/configuration-versions/{id}/hosted-upload/{token}",
            h.upload,
            ["PUT"],
            auth=None,
            executor="stream",
        ),
    ]


def offer_includes(includes: Includes, configs: Configs, public_url: str) -> None:
    """What ``include=`` can name on configuration versions (HCP Terraform's list: the
    ingress attributes of a version made from a commit; runs include nothing from here), and
    configuration versions by ID for the runs' ``include=configuration_version``."""
    includes.offer("configuration-versions", "ingress_attributes", "run")

    def configuration_version(caller: Subject, cv_id: str) -> Resource:
        return wire.configuration_version(configs.show(caller, cv_id), public_url)

    includes.loader("configuration-versions", loader_by_id(configuration_version))

    def ingress_attributes(caller: Subject, ia_id: str) -> Resource:
        cv_id = "cv-" + ia_id.removeprefix("ia-")
        view, row = configs.ingress(caller, cv_id)
        if row is None:
            raise NotFound(f"there are no ingress attributes {ia_id}")
        return wire.ingress_attributes(view.cv.id, row)

    includes.loader("ingress-attributes", loader_by_id(ingress_attributes))
