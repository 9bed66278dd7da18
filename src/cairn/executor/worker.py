"""Executors: a ``Worker`` claims and runs jobs one at a time; a ``WorkerPool`` runs a few of
them on threads inside ``cairn serve``.

A worker registers, then loops: claim (long-poll), run the job, claim again. ``stop()`` once:
no new claims, the current job runs to its end, then the worker deregisters. ``stop()`` again
(or ``stop(kill=True)``): Terraform is killed, the job finishes as errored, the worker
deregisters.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from cairn.executor.job import ExecutorSettings, JobRun
from cairn.executor.protocol import AgentClient, Job, ProtocolError, Unreachable

log = logging.getLogger("cairn.executor")

Event = Callable[[str, dict[str, Any]], None]


def _no_events(kind: str, fields: dict[str, Any]) -> None:
    return None


@dataclass
class WorkerStats:
    jobs: int = 0
    finished: int = 0
    errored: int = 0
    canceled: int = 0
    dropped: int = 0


class Worker:
    """One executor: one job at a time."""

    def __init__(
        self,
        client: AgentClient,
        settings: ExecutorSettings,
        *,
        single: bool = False,
        claim_wait: float | None = None,
        retry_pause: float = 5.0,
        events: Event = _no_events,
    ) -> None:
        self.client = client
        self.settings = settings
        self.single = single
        self.claim_wait = claim_wait
        self.retry_pause = retry_pause
        self.events = events
        self.stats = WorkerStats()
        self.failure = ""  # why cairn refused this agent, when it did
        self._stopping = threading.Event()
        self._current: JobRun | None = None
        self._kill = False
        self._lock = threading.Lock()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def busy(self) -> bool:
        """A job is running."""
        return self._current is not None

    def stop(self, *, kill: bool = False) -> None:
        """First call: finish the current job, then stop. Second call (or ``kill``): kill it."""
        with self._lock:
            if self._stopping.is_set() or kill:
                self._kill = True
            self._stopping.set()
            current = self._current
        if self._kill and current is not None:
            log.warning("stopping now: killing Terraform", extra={"job_id": current.job.job_id})
            current.abort()

    def run(self) -> None:
        """Register, run jobs until stopped (or one job with ``single``), deregister."""
        try:
            self._register()
            while not self._stopping.is_set():
                job = self._claim()
                if job is None:
                    continue
                self._run(job)
                if self.single:
                    break
        finally:
            self._deregister()

    def _register(self) -> None:
        while not self._stopping.is_set():
            try:
                registration = self.client.register(self._stopping)
            except Unreachable as exc:
                self.events("unreachable", {"failure": str(exc)})
                self._stopping.wait(self.retry_pause)
                continue
            except ProtocolError as exc:
                self._refused(exc)
                return
            self.events("registered", {"agent_id": registration.agent_id, "name": self.client.name})
            log.info(
                "agent registered",
                extra={"agent_id": registration.agent_id, "agent_name": self.client.name},
            )
            return

    def _claim(self) -> Job | None:
        registration = self.client.registration
        wait = self.claim_wait
        if wait is None:
            wait = registration.claim_wait_s if registration is not None else 25.0
        try:
            return self.client.claim(wait, self._stopping)
        except Unreachable as exc:
            self.events("unreachable", {"failure": str(exc)})
            self._stopping.wait(self.retry_pause)
        except ProtocolError as exc:
            if exc.status in (401, 403):
                # The credential is gone (token deleted, pool removed): nothing will change.
                self._refused(exc)
            else:
                self.events("claim-failed", {"failure": str(exc)})
                self._stopping.wait(self.retry_pause)
        return None

    def _refused(self, exc: ProtocolError) -> None:
        """cairn refused this agent's credential or registration: stop for good."""
        self.failure = str(exc)
        self.events("refused", {"failure": self.failure})
        log.error("cairn refused this agent; stopping", extra={"failure": self.failure})
        self._stopping.set()

    def _run(self, job: Job) -> None:
        fields = {
            "job_id": job.job_id,
            "run_id": job.run_id,
            "phase": job.phase,
            "workspace": f"{job.organization_name}/{job.workspace_name}",
        }
        self.events("claimed", fields)
        log.info("job claimed", extra=fields)
        runner = JobRun(self.client, job, self.settings)
        with self._lock:
            self._current = runner
            if self._kill:
                runner.abort()
        try:
            outcome = runner.run()
        finally:
            with self._lock:
                self._current = None
        self.stats.jobs += 1
        if outcome is None:
            self.stats.dropped += 1
            self.events("dropped", fields)
            return
        if outcome.status == "finished":
            self.stats.finished += 1
        elif outcome.status == "canceled":
            self.stats.canceled += 1
        else:
            self.stats.errored += 1
        done = {
            **fields,
            "status": outcome.status,
            "additions": outcome.additions,
            "changes": outcome.changes,
            "destructions": outcome.destructions,
            "error": outcome.error,
        }
        self.events("finished", done)
        log.info("job done", extra=done)

    def _deregister(self) -> None:
        if self.client.registration is None:
            return
        try:
            self.client.deregister()
            self.events("deregistered", {})
        except ProtocolError as exc:
            log.warning("deregister failed", extra={"failure": str(exc)})


class WorkerPool:
    """``count`` workers on threads (``cairn serve``'s built-in executors). They long-poll like
    agents (the server's ``claim_wait_s`` unless ``claim_wait`` says otherwise); at shutdown
    the server ends waiting claims at once (``JobSignal.close``), so an idle pool stops
    promptly, while a running job is finished first unless ``kill``."""

    def __init__(
        self,
        count: int,
        url: str,
        credential: str,
        *,
        ca_file: Path | None = None,
        settings: ExecutorSettings | None = None,
        name: str = "cairn-worker",
        version: str = "",
        claim_wait: float | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.count = count
        self._settings = settings or ExecutorSettings(ca_file=ca_file)
        self._workers: list[Worker] = []
        self._threads: list[threading.Thread] = []
        for i in range(count):
            client = AgentClient(
                url,
                credential,
                name=f"{name}-{i + 1}",
                version=version,
                ca_file=ca_file,
                transport=transport,
            )
            self._workers.append(Worker(client, self._settings, claim_wait=claim_wait))

    def __repr__(self) -> str:
        return f"WorkerPool(count={self.count})"

    @property
    def workers(self) -> list[Worker]:
        return list(self._workers)

    def start(self) -> None:
        for worker in self._workers:
            thread = threading.Thread(
                target=self._run, args=(worker,), name=worker.client.name, daemon=True
            )
            self._threads.append(thread)
            thread.start()

    @staticmethod
    def _run(worker: Worker) -> None:
        try:
            worker.run()
        except Exception:  # a worker thread must not die silently
            log.exception("worker stopped by an error", extra={"agent_name": worker.client.name})

    def stop(self, *, kill: bool = False, timeout: float | None = None) -> bool:
        """Stop every worker: running jobs end first (Terraform is killed with ``kill``, or
        on a second call). Waits at most ``timeout`` seconds in all; returns whether every
        worker has stopped (a worker still running keeps its client)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for worker in self._workers:
            worker.stop(kill=kill)
        for started in self._threads:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            started.join(left)
        stopped = True
        threads: list[threading.Thread | None] = [*self._threads]
        threads += [None] * (len(self._workers) - len(threads))  # never started
        for worker, thread in zip(self._workers, threads, strict=True):
            if thread is not None and thread.is_alive():
                stopped = False
            else:
                worker.client.close()
        return stopped
