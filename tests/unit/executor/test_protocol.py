"""The agent protocol client against a scripted transport: retries, refusals, re-registering,
log offsets, and tokens kept out of reprs and errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from cairn.executor.protocol import (
    AgentClient,
    AgentUnknown,
    Finish,
    Job,
    LeaseLost,
    LogOffset,
    ProtocolError,
    Unreachable,
)

URL = "https://cairn.test"
REGISTERED = {
    "agent_id": "agent-1",
    "session_token": "sess-1",
    "heartbeat_s": 10,
    "claim_wait_s": 25,
    "lease_s": 60,
}


def _job_body(**extra: Any) -> dict[str, Any]:
    base = f"{URL}/api/agent/v1/jobs/job-1"
    return {
        "job_id": "job-1",
        "attempt": 3,
        "run_id": "run-1",
        "workspace_id": "ws-1",
        "workspace_name": "app",
        "organization_name": "acme",
        "phase": "apply",
        "job_token": "cairn_job_SECRET",
        "lease_expires_at": "2030-01-01T00:00:00Z",
        "timeout_s": 600,
        "terraform_version": "1.0.3",
        "operation": {"is_destroy": True, "refresh": False, "target_addrs": ["a.b"]},
        "hostname": "cairn.test",
        "urls": {
            k: f"{base}/{k}"
            for k in ("configuration", "variables", "plan", "logs", "heartbeat", "start", "finish")
        },
        **extra,
    }


def _client(handler: Callable[[httpx.Request], httpx.Response], **kw: Any) -> AgentClient:
    return AgentClient(
        URL,
        "agent-token-SECRET",
        name="a1",
        version="0.1",
        transport=httpx.MockTransport(handler),
        retries=3,
        backoff=0.001,
        sleep=lambda _s: None,
        **kw,
    )


def test_register_and_claim() -> None:
    seen: list[tuple[str, str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url.path, request.headers["Authorization"]))
        if request.url.path.endswith("/register"):
            assert json.loads(request.content) == {
                "name": "a1",
                "version": "0.1",
                "accept": ["plan", "apply"],
            }
            return httpx.Response(201, json=REGISTERED)
        assert request.url.params["wait"] == "7"
        assert json.loads(request.content) == {"accept": ["plan", "apply"]}
        return httpx.Response(200, json=_job_body())

    client = _client(handler)
    job = client.claim(7)
    assert job is not None
    assert (job.job_id, job.attempt, job.phase, job.terraform_version) == (
        "job-1",
        3,
        "apply",
        "1.0.3",
    )
    assert job.operation.is_destroy and not job.operation.refresh
    assert job.operation.target_addrs == ("a.b",)
    assert seen == [
        ("POST", "/api/agent/v1/register", "Bearer agent-token-SECRET"),
        ("POST", "/api/agent/v1/jobs/claim", "Bearer sess-1"),
    ]
    assert "SECRET" not in repr(job) and "SECRET" not in repr(client)
    assert "sess-1" not in repr(client.registration)


def test_claim_without_a_job_is_none() -> None:
    client = _client(
        lambda r: (
            httpx.Response(201, json=REGISTERED)
            if r.url.path.endswith("/register")
            else httpx.Response(204)
        )
    )
    assert client.claim(1) is None


def test_agent_unknown_registers_again() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path.rsplit("/", 1)[-1])
        if request.url.path.endswith("/register"):
            n = calls.count("register")
            return httpx.Response(201, json={**REGISTERED, "session_token": f"sess-{n}"})
        if request.headers["Authorization"] == "Bearer sess-1":
            return httpx.Response(409, json={"error": "agent_unknown"})
        return httpx.Response(204)

    client = _client(handler)
    assert client.claim(1) is None
    assert calls == ["register", "claim", "register", "claim"]
    assert client.session_token == "sess-2"


def test_agent_unknown_twice_is_an_error() -> None:
    client = _client(
        lambda r: (
            httpx.Response(201, json=REGISTERED)
            if r.url.path.endswith("/register")
            else httpx.Response(409, json={"error": "agent_unknown"})
        )
    )
    with pytest.raises(AgentUnknown):
        client.claim(1)


def test_5xx_and_connection_errors_are_retried() -> None:
    answers: list[Any] = [
        httpx.ConnectError("refused"),
        httpx.Response(502),
        httpx.Response(503, text="busy"),
        httpx.Response(201, json=REGISTERED),
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        assert isinstance(answer, httpx.Response)
        return answer

    assert _client(handler).register().agent_id == "agent-1"
    assert answers == []


def test_retries_give_up_with_unreachable() -> None:
    count = []

    def handler(request: httpx.Request) -> httpx.Response:
        count.append(1)
        return httpx.Response(500)

    with pytest.raises(Unreachable, match="HTTP 500"):
        _client(handler).register()
    assert len(count) == 4  # 1 + 3 retries


def test_4xx_is_never_retried_and_hides_the_credential() -> None:
    count = []

    def handler(request: httpx.Request) -> httpx.Response:
        count.append(1)
        return httpx.Response(401, json={"error": "unauthorized", "detail": "unknown token"})

    with pytest.raises(ProtocolError) as err:
        _client(handler).register()
    assert err.value.status == 401 and len(count) == 1
    assert "SECRET" not in str(err.value) and "unknown token" in str(err.value)


def _job() -> Job:
    return Job.from_json(_job_body())


def test_job_calls_use_the_job_token_and_the_claimed_urls() -> None:
    seen: list[tuple[str, str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["Authorization"] == "Bearer cairn_job_SECRET"
        action = request.url.path.rsplit("/", 1)[-1]
        seen.append((request.method, action, dict(request.url.params)))
        if action == "heartbeat":
            assert json.loads(request.content) == {"attempt": 3, "log_offset": 42}
            return httpx.Response(200, json={"lease_expires_at": "x", "cancel": "graceful"})
        if action == "variables":
            return httpx.Response(
                200,
                json={
                    "terraform": [{"key": "a", "value": "1", "hcl": True}],
                    "env": [{"key": "E", "value": "e"}],
                    "sensitive": ["s"],
                },
            )
        if action == "plan" and request.method == "GET":
            return httpx.Response(200, content=b"PK plan")
        if action == "finish":
            assert json.loads(request.content) == {
                "attempt": 3,
                "status": "finished",
                "has_changes": True,
                "resource_additions": 1,
                "resource_changes": 2,
                "resource_destructions": 3,
                "resource_imports": 0,
                "error": "",
            }
            return httpx.Response(200, json={})
        return httpx.Response(204) if request.method == "PUT" else httpx.Response(200, json={})

    client, job = _client(handler), _job()
    client.start(job)
    assert client.heartbeat(job, 42).cancel == "graceful"
    client.put_logs(job, 10, b"abc")
    client.upload_plan(job, b"PK", "binary")
    assert client.download_plan(job) == b"PK plan"
    variables = client.variables(job)
    assert variables.terraform[0].hcl and variables.env == (("E", "e"),)
    assert variables.sensitive == ("s",) and "'s'" not in repr(variables)
    client.finish(job, Finish("finished", True, 1, 2, 3))
    assert ("PUT", "logs", {"offset": "10", "attempt": "3"}) in seen
    assert ("PUT", "plan", {"attempt": "3", "format": "binary"}) in seen


def test_job_conflicts() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        action = request.url.path.rsplit("/", 1)[-1]
        if action == "heartbeat":
            return httpx.Response(409, json={"error": "lease_lost"})
        if action == "logs":
            return httpx.Response(409, json={"error": "offset", "offset": 7})
        return httpx.Response(409, json={"error": "stale_attempt", "detail": "attempt 4 holds it"})

    client, job = _client(handler), _job()
    with pytest.raises(LeaseLost):
        client.heartbeat(job, 0)
    with pytest.raises(LogOffset) as err:
        client.put_logs(job, 0, b"x")
    assert err.value.offset == 7
    with pytest.raises(ProtocolError, match="409 stale_attempt: attempt 4 holds it"):
        client.start(job)


def test_answers_are_read_with_a_limit() -> None:
    client = _client(lambda r: httpx.Response(200, content=b"x" * 2000))
    with pytest.raises(ProtocolError, match="larger than"):
        client.download_configuration(_job(), limit=1000)


@pytest.mark.parametrize("broken", [{"phase": "destroy"}, {"urls": {}}, {"attempt": "x"}])
def test_a_malformed_claim_is_refused(broken: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError, match="malformed"):
        Job.from_json(_job_body(**broken))
