"""The request-observing middleware (``cairn.tfeapi.observe``): access-log lines built off the
event loop, ``CAIRN_ACCESS_LOG`` (on, all, off, sample:N), audit events on their request's line
instead of lines of their own, metric children bound once, the public doors answered before the
router (logged one in 100 unless ``all``), and the security headers and JSON 500 it has always
added."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

import pytest
from prometheus_client import generate_latest

from cairn.audit.log import log_event
from cairn.config import from_environment
from cairn.errors import ConfigError
from cairn.tfeapi.observe import (
    DOOR_SAMPLE,
    AccessLog,
    AccessLogWriter,
    Metrics,
    ObserveMiddleware,
    public_doors,
)
from cairn.tfeapi.service_discovery import StaticJson

App = Callable[[Any, Any, Any], Awaitable[None]]


def answering(status: int = 200, *, audit: bool = False, fail: bool = False) -> App:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if audit:
            row = {"action": "token.create", "actor_name": "alice", "outcome": "success"}
            log_event(row, "token at-1")
        if fail:
            raise RuntimeError("boom")
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": b"{}"})

    return app


def call(
    middleware: ObserveMiddleware, path: str = "/api/v2/ping", method: str = "GET"
) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    scope = {"type": "http", "method": method, "path": path, "client": ("10.0.0.7", 4711)}
    asyncio.run(middleware(scope, receive, send))
    return sent


@pytest.fixture
def writer() -> Iterator[AccessLogWriter]:
    instance = AccessLogWriter()
    yield instance
    instance.close()


def lines(caplog: pytest.LogCaptureFixture, writer: AccessLogWriter, msg: str) -> list[Any]:
    assert writer.flush()
    return [r for r in caplog.records if r.getMessage() == msg]


def make(app: App, writer: AccessLogWriter, access_log: str = "on") -> ObserveMiddleware:
    return ObserveMiddleware(app, Metrics(), access_log=access_log, writer=writer)


def test_access_log_setting_parses_on_all_off_and_samples() -> None:
    assert AccessLog.parse("on") == AccessLog(1, DOOR_SAMPLE)
    assert AccessLog.parse("ALL") == AccessLog(1, 1)
    assert AccessLog.parse("OFF") == AccessLog(0, 0)
    assert AccessLog.parse("sample:25") == AccessLog(25, DOOR_SAMPLE)
    assert AccessLog.parse("sample:500") == AccessLog(500, 500)  # doors: the rarer of the two
    for text in ("on", "all", "off", "sample:25"):
        assert str(AccessLog.parse(text)) == text
    for bad in ("sample:0", "sample:", "sample:x", "sometimes", "sample:-1", "sample:٣"):
        with pytest.raises(ValueError, match="on, all, off or sample:N"):
            AccessLog.parse(bad)


def test_access_log_setting_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert from_environment().access_log == "on"
    monkeypatch.setenv("CAIRN_ACCESS_LOG", "sample:10")
    assert from_environment().access_log == "sample:10"
    monkeypatch.setenv("CAIRN_ACCESS_LOG", "all")
    assert from_environment().access_log == "all"
    monkeypatch.setenv("CAIRN_ACCESS_LOG", "verbose")
    with pytest.raises(ConfigError, match="CAIRN_ACCESS_LOG must be on, all, off or sample:N"):
        from_environment()


def test_one_line_per_request_written_by_the_writer_thread(
    caplog: pytest.LogCaptureFixture, writer: AccessLogWriter
) -> None:
    caplog.set_level(logging.INFO)
    middleware = make(answering(), writer)
    sent = call(middleware, "/api/v2/state-versions/hosted-upload/secret-token-value")
    [line] = lines(caplog, writer, "request")
    assert line.name == "cairn.http"
    assert (line.method, line.status, line.client) == ("GET", 200, "10.0.0.7")
    assert line.path == "/api/v2/state-versions/hosted-upload/<redacted>"
    assert "secret-token-value" not in caplog.text
    assert line.threadName == "cairn-access-log"  # formatted off the event loop
    headers = dict(sent[0]["headers"])
    assert headers[b"x-content-type-options"] == b"nosniff"
    assert headers[b"tfp-api-version"]


def test_off_logs_nothing_but_still_counts(
    caplog: pytest.LogCaptureFixture, writer: AccessLogWriter
) -> None:
    caplog.set_level(logging.INFO)
    middleware = make(answering(), writer, "off")
    for _ in range(3):
        call(middleware)
    assert lines(caplog, writer, "request") == []
    exposed = generate_latest(middleware.metrics.registry).decode()
    assert 'cairn_http_requests_total{method="GET",status="200"} 3.0' in exposed


def test_sample_logs_one_in_n_and_every_server_error(
    caplog: pytest.LogCaptureFixture, writer: AccessLogWriter
) -> None:
    caplog.set_level(logging.INFO)
    ok = make(answering(), writer, "sample:3")
    for _ in range(6):
        call(ok)
    assert len(lines(caplog, writer, "request")) == 2
    caplog.clear()
    failing = make(answering(503), writer, "sample:1000")
    for _ in range(3):
        call(failing)
    assert [r.status for r in lines(caplog, writer, "request")] == [503, 503, 503]


def test_audit_event_rides_on_its_request_line(
    caplog: pytest.LogCaptureFixture, writer: AccessLogWriter
) -> None:
    caplog.set_level(logging.INFO)
    call(make(answering(audit=True), writer))
    assert lines(caplog, writer, "audit") == []
    [line] = lines(caplog, writer, "request")
    assert line.audit == [
        {"action": "token.create", "subject": "token at-1", "actor": "alice", "outcome": "success"}
    ]


def test_audit_event_of_an_unlogged_request_has_its_own_line(
    caplog: pytest.LogCaptureFixture, writer: AccessLogWriter
) -> None:
    caplog.set_level(logging.INFO)
    call(make(answering(audit=True), writer, "off"))
    [audit] = lines(caplog, writer, "audit")
    assert (audit.action, audit.subject) == ("token.create", "token at-1")
    assert lines(caplog, writer, "request") == []


def test_metric_labels_are_bound_once_and_bounded(writer: AccessLogWriter) -> None:
    middleware = make(answering(), writer, "off")
    call(middleware)
    call(middleware)
    call(middleware, method="BREW")
    children = middleware.metrics._children
    assert set(children) == {("GET", 200), ("BREW", 200)}
    exposed = generate_latest(middleware.metrics.registry).decode()
    assert 'cairn_http_requests_total{method="other",status="200"} 1.0' in exposed
    assert "BREW" not in exposed


def test_unhandled_error_is_a_json_500_and_logged(
    caplog: pytest.LogCaptureFixture, writer: AccessLogWriter
) -> None:
    caplog.set_level(logging.INFO)
    sent = call(make(answering(fail=True), writer))
    assert sent[0]["status"] == 500
    assert b"request id" in sent[1]["body"]
    [error] = [r for r in caplog.records if r.getMessage() == "unhandled error"]
    assert error.exc_info is not None
    [line] = lines(caplog, writer, "request")
    assert line.status == 500


# ---- public doors --------------------------------------------------------------------------------

DOOR = "/.well-known/jwks"


def refusing() -> App:
    """The router behind the middleware: a door's request must never reach it."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == DOOR and scope["method"] in ("GET", "HEAD"):
            raise AssertionError("a public door went through the router")
        await answering(405)(scope, receive, send)

    return app


def with_door(writer: AccessLogWriter, access_log: str = "on") -> ObserveMiddleware:
    door = StaticJson(b'{"keys":[]}', cache="public, max-age=60")
    return ObserveMiddleware(
        refusing(), Metrics(), access_log=access_log, writer=writer, doors={DOOR: door}
    )


def test_public_doors_are_the_marked_routes_without_parameters() -> None:
    from starlette.responses import Response
    from starlette.routing import Mount, Route

    door = StaticJson(b"{}")

    async def endpoint(request: Any) -> Response:
        return Response()

    routes = [
        Route("/.well-known/terraform.json", door, methods=["GET"]),  # HEAD comes with GET
        Route("/healthz", endpoint, methods=["GET"]),  # not a door
        Route("/files/{name}", door, methods=["GET"]),  # a parameter: the router's
        Route("/only-post", door, methods=["POST"]),  # not GET
        Mount("/api", routes=[Route("/inner", door, methods=["GET"])]),  # not top-level
    ]
    assert public_doors(routes) == {"/.well-known/terraform.json": door}


def test_a_door_is_answered_before_the_router_with_headers_and_metrics(
    caplog: pytest.LogCaptureFixture, writer: AccessLogWriter
) -> None:
    caplog.set_level(logging.INFO)
    middleware = with_door(writer)
    for method in ("GET", "HEAD"):
        sent = call(middleware, DOOR, method)
        assert sent[0]["status"] == 200
        headers = dict(sent[0]["headers"])
        assert headers[b"x-content-type-options"] == b"nosniff"
        assert headers[b"cache-control"] == b"public, max-age=60"
        assert b"tfp-api-version" not in headers  # not an /api/v2 answer
        assert sent[1]["body"] == b'{"keys":[]}'
    # Other methods go through the router (which answers 405 here).
    assert call(middleware, DOOR, "POST")[0]["status"] == 405
    exposed = generate_latest(middleware.metrics.registry).decode()
    assert 'cairn_http_requests_total{method="GET",status="200"} 1.0' in exposed
    assert 'cairn_http_requests_total{method="HEAD",status="200"} 1.0' in exposed
    assert 'cairn_http_requests_total{method="POST",status="405"} 1.0' in exposed


def test_doors_get_one_line_in_a_hundred_unless_all(
    caplog: pytest.LogCaptureFixture, writer: AccessLogWriter
) -> None:
    caplog.set_level(logging.INFO)
    sampled = with_door(writer, "on")
    for _ in range(2 * DOOR_SAMPLE):
        call(sampled, DOOR)
    call(sampled, "/api/v2/other")  # not a door: its own line whatever the doors' count
    logged = lines(caplog, writer, "request")
    assert [line.path for line in logged] == [DOOR, DOOR, "/api/v2/other"]
    caplog.clear()
    every = with_door(writer, "all")
    for _ in range(5):
        call(every, DOOR)
    assert len(lines(caplog, writer, "request")) == 5
    caplog.clear()
    for _ in range(5):
        call(with_door(writer, "off"), DOOR)
    assert lines(caplog, writer, "request") == []


def test_a_failing_door_is_a_logged_json_500(
    caplog: pytest.LogCaptureFixture, writer: AccessLogWriter
) -> None:
    caplog.set_level(logging.INFO)
    middleware = ObserveMiddleware(
        refusing(), Metrics(), writer=writer, doors={DOOR: answering(fail=True)}
    )
    sent = call(middleware, DOOR)
    assert sent[0]["status"] == 500
    assert dict(sent[0]["headers"])[b"x-content-type-options"] == b"nosniff"
    [line] = lines(caplog, writer, "request")  # a 5xx always gets its line
    assert line.status == 500
