"""The client side of cairn's agent protocol (``/api/agent/v1``, plain JSON).

One ``AgentClient`` per executor (a ``cairn agent`` process or one in-process worker). It
registers with a credential (a pool's agent token, or the server's built-in secret), keeps the
session token it is given, claims jobs by long-poll, and speaks for the job it runs with that
job's token. Connection errors and 5xx answers are retried with exponential backoff; 4xx
answers never are: they are decisions. Tokens never appear in reprs, logs or errors.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import httpx

from cairn.errors import CairnError
from cairn.executor.terraform import Operation, TerraformVariable

log = logging.getLogger("cairn.executor")

API_PREFIX = "/api/agent/v1"
MiB = 1024 * 1024
MAX_LOG_CHUNK = 1 * MiB
MAX_CONFIG_BYTES = 512 * MiB
MAX_PLAN_BYTES = 512 * MiB
MAX_JSON_BYTES = 16 * MiB

Cancel = Literal["none", "graceful", "force"]


class ProtocolError(CairnError):
    """cairn refused a request of the agent protocol, or could not be reached."""

    code = "agent-protocol"

    def __init__(self, message: str, *, status: int = 0, error: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.error = error


class Unreachable(ProtocolError):
    """cairn could not be reached or kept failing (5xx) after every retry."""

    code = "agent-unreachable"


class AgentUnknown(ProtocolError):
    """The server no longer knows this agent (marked errored/exited, or deleted)."""

    code = "agent-unknown"


class LeaseLost(ProtocolError):
    """The job was taken away from this agent: stop Terraform, drop the job, do not finish."""

    code = "lease-lost"


class LogOffset(ProtocolError):
    """The server holds a different log length than the chunk's offset: resend from ``offset``."""

    code = "log-offset"

    def __init__(self, message: str, *, offset: int) -> None:
        super().__init__(message, status=409, error="offset")
        self.offset = offset


class CredentialsRefused(ProtocolError):
    """The server refused the job's dynamic credentials (a misconfiguration, 422): the phase
    fails before Terraform starts, with ``detail`` (naming the variable to fix) as its reason."""

    code = "credentials-refused"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, status=422, error="credentials")
        self.detail = detail


@dataclass(frozen=True)
class Registration:
    agent_id: str
    session_token: str = field(repr=False)
    heartbeat_s: float = 10.0
    claim_wait_s: float = 25.0
    lease_s: float = 60.0


@dataclass(frozen=True)
class Job:
    """A claimed job (the claim answer)."""

    job_id: str
    attempt: int
    run_id: str
    workspace_id: str
    workspace_name: str
    organization_name: str
    phase: Literal["plan", "apply"]
    job_token: str = field(repr=False)
    timeout_s: float = 3600.0
    terraform_version: str = ""
    operation: Operation = field(default_factory=Operation)
    hostname: str = ""
    working_directory: str = ""
    urls: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Job:
        try:
            phase = data["phase"]
            if phase not in ("plan", "apply"):
                raise ValueError(f"unknown phase {phase!r}")
            urls = {str(k): str(v) for k, v in dict(data.get("urls") or {}).items()}
            for key in ("configuration", "variables", "logs", "heartbeat", "start", "finish"):
                if not urls.get(key):
                    raise ValueError(f"urls.{key} is missing")
            return cls(
                job_id=str(data["job_id"]),
                attempt=int(data["attempt"]),
                run_id=str(data["run_id"]),
                workspace_id=str(data.get("workspace_id", "")),
                workspace_name=str(data["workspace_name"]),
                organization_name=str(data["organization_name"]),
                phase=phase,
                job_token=str(data["job_token"]),
                timeout_s=float(data.get("timeout_s") or 3600),
                terraform_version=str(data.get("terraform_version") or ""),
                operation=Operation.from_json(data.get("operation") or {}),
                hostname=str(data["hostname"]),
                working_directory=str(data.get("working_directory") or ""),
                urls=urls,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"the claimed job is malformed: {exc}") from None


@dataclass(frozen=True)
class JobVariables:
    terraform: tuple[TerraformVariable, ...] = ()
    env: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    sensitive: tuple[str, ...] = field(default=(), repr=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> JobVariables:
        try:
            return cls(
                terraform=tuple(
                    TerraformVariable(str(v["key"]), str(v["value"]), bool(v.get("hcl", False)))
                    for v in data.get("terraform") or ()
                ),
                env=tuple((str(v["key"]), str(v["value"])) for v in data.get("env") or ()),
                sensitive=tuple(str(v) for v in data.get("sensitive") or ()),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"the job's variables are malformed: {exc}") from None


@dataclass(frozen=True)
class Finish:
    status: Literal["finished", "errored", "canceled"]
    has_changes: bool = False
    additions: int = 0
    changes: int = 0
    destructions: int = 0
    imports: int = 0
    error: str = ""


@dataclass(frozen=True)
class Heartbeat:
    lease_expires_at: str
    cancel: Cancel


@dataclass(frozen=True)
class Answer:
    """A response whose body was read (up to the call's limit)."""

    status_code: int
    content: bytes

    def json(self) -> Any:
        return json.loads(self.content)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


def _error_of(response: Answer) -> tuple[str, str, dict[str, Any]]:
    """(error code, detail, body) of a protocol error answer; tolerant of non-JSON bodies."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        return str(body.get("error", "")), str(body.get("detail", "")), body
    text = response.text[:200].strip()
    return "", text, {}


class AgentClient:
    """An HTTP client of the agent protocol. Safe to share between a job's threads."""

    def __init__(
        self,
        url: str,
        credential: str,
        *,
        name: str,
        version: str,
        accept: tuple[str, ...] = ("plan", "apply"),
        ca_file: Path | None = None,
        timeout: float = 30.0,
        retries: int = 6,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = url.rstrip("/")
        self._credential = credential
        self.name = name
        self.version = version
        self.accept = accept
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._sleep = sleep
        self._lock = threading.Lock()
        self.registration: Registration | None = None
        verify: Any = str(ca_file) if ca_file is not None else True
        self._http = httpx.Client(
            verify=verify,
            timeout=httpx.Timeout(timeout),
            transport=transport,
            headers={"User-Agent": f"cairn-agent/{version}"},
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"AgentClient(url={self.url!r}, name={self.name!r})"

    def close(self) -> None:
        self._http.close()

    # -- transport ----------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        url: str,
        token: str,
        *,
        json_body: Any = None,
        content: bytes | None = None,
        params: Mapping[str, str | int] | None = None,
        timeout: float | None = None,
        limit: int = MAX_JSON_BYTES,
        what: str,
        stop: threading.Event | None = None,
    ) -> Answer:
        """Send with retries on connection errors and 5xx; return any other answer as is
        (with its body read up to ``limit`` bytes)."""
        headers = {"Authorization": f"Bearer {token}"}
        if content is not None:
            headers["Content-Type"] = "application/octet-stream"
        delay = self.backoff
        last = ""
        for attempt in range(self.retries + 1):
            try:
                request = self._http.build_request(
                    method,
                    url,
                    json=json_body,
                    content=content,
                    params=params,
                    headers=headers,
                    timeout=timeout if timeout is not None else self.timeout,
                )
                response = self._http.send(request, stream=True)
                try:
                    body = bytearray()
                    for chunk in response.iter_bytes():
                        body += chunk
                        if len(body) > limit:
                            raise ProtocolError(f"{what}: the answer is larger than {limit} bytes")
                finally:
                    response.close()
                if response.status_code < 500:
                    return Answer(response.status_code, bytes(body))
                last = f"HTTP {response.status_code}"
            except httpx.TransportError as exc:
                last = type(exc).__name__ + (f": {exc}" if str(exc) else "")
            if attempt == self.retries or (stop is not None and stop.is_set()):
                break
            wait = min(delay, self.max_backoff) * (0.5 + random.random() / 2)  # noqa: S311
            log.warning(
                "agent protocol call failed, retrying",
                extra={"call": what, "failure": last, "retry_in_s": round(wait, 2)},
            )
            if stop is not None:
                if stop.wait(wait):
                    break
            else:
                self._sleep(wait)
            delay *= 2
        raise Unreachable(f"{what}: cairn at {self.url} did not answer ({last})")

    def _fail(self, response: Answer, what: str) -> ProtocolError:
        code, detail, body = _error_of(response)
        status = response.status_code
        if status == 409 and code == "agent_unknown":
            return AgentUnknown(f"{what}: cairn no longer knows this agent", status=409, error=code)
        if status == 409 and code == "lease_lost":
            return LeaseLost(f"{what}: the job was taken from this agent", status=409, error=code)
        if status == 409 and code == "offset" and isinstance(body.get("offset"), int):
            return LogOffset(
                f"{what}: the server holds {body['offset']} bytes", offset=body["offset"]
            )
        if status == 401:
            return ProtocolError(
                f"{what}: cairn refused the credential (401){': ' + detail if detail else ''}",
                status=status,
                error=code,
            )
        return ProtocolError(
            f"{what}: cairn answered {status}{' ' + code if code else ''}"
            f"{': ' + detail if detail else ''}",
            status=status,
            error=code,
        )

    def _json(self, response: Answer, what: str) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            raise ProtocolError(f"{what}: cairn's answer is not JSON") from None
        if not isinstance(body, dict):
            raise ProtocolError(f"{what}: cairn's answer is not a JSON object")
        return body

    # -- the agent ----------------------------------------------------------------------------

    @property
    def session_token(self) -> str:
        if self.registration is None:
            raise ProtocolError("the agent is not registered")
        return self.registration.session_token

    def register(self, stop: threading.Event | None = None) -> Registration:
        what = "register"
        response = self._request(
            "POST",
            f"{self.url}{API_PREFIX}/register",
            self._credential,
            json_body={"name": self.name, "version": self.version, "accept": list(self.accept)},
            what=what,
            stop=stop,
        )
        if response.status_code not in (200, 201):
            raise self._fail(response, what)
        body = self._json(response, what)
        try:
            registration = Registration(
                agent_id=str(body["agent_id"]),
                session_token=str(body["session_token"]),
                heartbeat_s=float(body.get("heartbeat_s") or 10),
                claim_wait_s=float(body.get("claim_wait_s") or 25),
                lease_s=float(body.get("lease_s") or 60),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"{what}: malformed answer ({exc})") from None
        with self._lock:
            self.registration = registration
        return registration

    def claim(self, wait: float, stop: threading.Event | None = None) -> Job | None:
        """One long-poll for a job (``None`` after ``wait`` seconds without one). A server that
        forgot this agent gets a fresh registration and the claim is asked again."""
        what = "claim"
        for _ in range(2):
            if self.registration is None:
                self.register(stop)
            response = self._request(
                "POST",
                f"{self.url}{API_PREFIX}/jobs/claim",
                self.session_token,
                json_body={"accept": list(self.accept)},
                params={"wait": max(0, int(wait))},
                timeout=wait + self.timeout,
                what=what,
                stop=stop,
            )
            if response.status_code == 204:
                return None
            if response.status_code == 200:
                return Job.from_json(self._json(response, what))
            error = self._fail(response, what)
            if not isinstance(error, AgentUnknown):
                raise error
            log.warning("cairn no longer knows this agent; registering again")
            with self._lock:
                self.registration = None
        raise AgentUnknown("claim: cairn forgot this agent again right after it registered")

    def deregister(self) -> None:
        if self.registration is None:
            return
        what = "deregister"
        response = self._request(
            "POST", f"{self.url}{API_PREFIX}/deregister", self.session_token, what=what
        )
        with self._lock:
            self.registration = None
        if response.status_code not in (200, 204) and response.status_code != 409:
            raise self._fail(response, what)

    # -- one job ------------------------------------------------------------------------------

    def start(self, job: Job) -> None:
        response = self._request(
            "POST",
            job.urls["start"],
            job.job_token,
            json_body={"attempt": job.attempt},
            what="start",
        )
        if response.status_code not in (200, 204):
            raise self._fail(response, "start")

    def heartbeat(self, job: Job, log_offset: int) -> Heartbeat:
        what = "heartbeat"
        response = self._request(
            "POST",
            job.urls["heartbeat"],
            job.job_token,
            json_body={"attempt": job.attempt, "log_offset": log_offset},
            what=what,
        )
        if response.status_code != 200:
            raise self._fail(response, what)
        body = self._json(response, what)
        cancel = body.get("cancel", "none")
        if cancel not in ("none", "graceful", "force"):
            cancel = "none"
        return Heartbeat(str(body.get("lease_expires_at", "")), cast(Cancel, cancel))

    def put_logs(self, job: Job, offset: int, data: bytes) -> None:
        """Store ``data`` at ``offset``; raises ``LogOffset`` when the server's length differs."""
        if len(data) > MAX_LOG_CHUNK:
            raise ProtocolError(f"log chunk of {len(data)} bytes is larger than 1 MiB")
        response = self._request(
            "PUT",
            job.urls["logs"],
            job.job_token,
            content=data,
            params={"offset": offset, "attempt": job.attempt},
            what="logs",
        )
        if response.status_code not in (200, 204):
            raise self._fail(response, "logs")

    def upload_plan(self, job: Job, data: bytes, fmt: Literal["binary", "json"]) -> None:
        response = self._request(
            "PUT",
            job.urls["plan"],
            job.job_token,
            content=data,
            params={"attempt": job.attempt, "format": fmt},
            timeout=max(self.timeout, 120.0),
            what=f"plan upload ({fmt})",
        )
        if response.status_code not in (200, 201, 204):
            raise self._fail(response, f"plan upload ({fmt})")

    def download_plan(self, job: Job) -> bytes:
        response = self._request(
            "GET",
            job.urls["plan"],
            job.job_token,
            limit=MAX_PLAN_BYTES,
            timeout=max(self.timeout, 120.0),
            what="plan download",
        )
        if response.status_code != 200:
            raise self._fail(response, "plan download")
        return response.content

    def download_configuration(self, job: Job, limit: int = MAX_CONFIG_BYTES) -> bytes:
        response = self._request(
            "GET",
            job.urls["configuration"],
            job.job_token,
            limit=limit,
            timeout=max(self.timeout, 120.0),
            what="configuration download",
        )
        if response.status_code != 200:
            raise self._fail(response, "configuration download")
        return response.content

    def variables(self, job: Job) -> JobVariables:
        response = self._request("GET", job.urls["variables"], job.job_token, what="variables")
        if response.status_code != 200:
            raise self._fail(response, "variables")
        return JobVariables.from_json(self._json(response, "variables"))

    def workload_identity(self, job: Job) -> dict[str, Any]:
        """The job's dynamic credentials: ``{"expires_at", "configs": [...]}`` with one fresh
        token per configuration. A misconfiguration raises ``CredentialsRefused``."""
        what = "workload identity"
        url = job.urls.get("workload_identity") or (
            job.urls["start"].removesuffix("/start") + "/workload-identity"
        )
        response = self._request(
            "POST", url, job.job_token, json_body={"attempt": job.attempt}, what=what
        )
        if response.status_code == 200:
            return self._json(response, what)
        code, detail, _ = _error_of(response)
        if response.status_code == 422 and code == "credentials":
            raise CredentialsRefused(detail or "the workspace's dynamic credentials are invalid")
        raise self._fail(response, what)

    def finish(self, job: Job, outcome: Finish) -> None:
        response = self._request(
            "POST",
            job.urls["finish"],
            job.job_token,
            json_body={
                "attempt": job.attempt,
                "status": outcome.status,
                "has_changes": outcome.has_changes,
                "resource_additions": outcome.additions,
                "resource_changes": outcome.changes,
                "resource_destructions": outcome.destructions,
                "resource_imports": outcome.imports,
                "error": outcome.error,
            },
            what="finish",
        )
        if response.status_code not in (200, 204):
            raise self._fail(response, "finish")
