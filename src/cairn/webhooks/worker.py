"""The delivery worker: a background job in every replica that turns queued deliveries into
the ingest's work, one at a time, each exactly once across replicas.

A round (``run``, in a worker thread: ``app.py``'s background jobs call it when ``due``):

1. deliveries whose worker died on their last attempt (lease lapsed, ``MAX_ATTEMPTS`` used)
   are failed, saying so;
2. deliveries are claimed one at a time (``store.claim``: one transaction, the database lets
   one replica win) and handed to the ingest (``handle(delivery) -> outcome``) outside any
   transaction, since it calls the forge; its answer finishes the claim (``store.finish``,
   fenced by the attempt). The round stops after ``ROUND_BUDGET`` seconds of work and asks for
   the next one at once, so a shutdown waits for one delivery at most;
3. the other steps of a round run (``webhooks.statuses.post_pending``, the hook registration
   of ``webhooks.registration``), each on its own: one failing does not stop the others.

Failures: ``DeliveryFailed`` (raised by the ingest) and an ``ApiError`` below 500 (the
connection needs re-authorisation, a forge answered 404) fail the delivery at once — trying
again cannot help. Anything else is retried after ``BACKOFF`` (30 s, then 2 min) up to
``MAX_ATTEMPTS`` claims, then failed with the last error. A worker killed mid-delivery leaves
it ``processing`` until its lease (``LEASE``) lapses; then any replica claims it again.

When: woken by ``NOTIFY cairn_vcs`` (a delivery received by another replica), by this process's
receiver after its commit, and when the listener reconnects; else every ``POLL`` seconds (the
backstop on SQLite, and for retries whose backoff has passed).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from cairn.clock import Clock
from cairn.db.engine import Database, no_statement_timeout
from cairn.db.notify import Subscriptions
from cairn.errors import ApiError
from cairn.webhooks import store
from cairn.webhooks.model import Delivery, DeliveryFailed, one_line
from cairn.webhooks.receiver import CHANNEL

log = logging.getLogger("cairn.webhooks")

Handler = Callable[[Delivery], str]
"""The ingest: handles one claimed delivery and returns its outcome (one line for people)."""

LEASE: Final = timedelta(minutes=5)
MAX_ATTEMPTS: Final = 3
BACKOFF: Final = (timedelta(seconds=30), timedelta(minutes=2))
POLL: Final = 5.0  # seconds between rounds when nothing wakes the worker
ROUND_BUDGET: Final = 2.0  # seconds of deliveries per round before yielding
RETENTION: Final = timedelta(days=30)


class DeliverySignal:
    """Wakes this process's worker (thread-safe; see the module docstring)."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def wake(self, _payload: str = "") -> None:
        self._event.set()

    def take(self) -> bool:
        """Whether a wake-up came since the last ``take`` (and forget it)."""
        woken = self._event.is_set()
        self._event.clear()
        return woken

    def follow(self, listener: Subscriptions) -> None:
        """Hear other replicas' receivers (PostgreSQL)."""
        listener.subscribe(CHANNEL, self.wake, on_connect=self.wake)


@dataclass(frozen=True)
class Policy:
    lease: timedelta = LEASE
    max_attempts: int = MAX_ATTEMPTS
    backoff: tuple[timedelta, ...] = BACKOFF
    poll: float = POLL
    round_budget: float = ROUND_BUDGET

    def retry_at(self, now: datetime, attempt: int) -> datetime:
        return now + self.backoff[min(attempt, len(self.backoff)) - 1]


class DeliveryWorker:
    """Claims and handles deliveries (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        handle: Handler,
        *,
        signal: DeliverySignal | None = None,
        policy: Policy | None = None,
        steps: Sequence[tuple[str, Callable[[], object]]] = (),
    ) -> None:
        self._db = db
        self._clock = clock
        self._handle = handle
        self.signal = signal or DeliverySignal()
        self.policy = policy or Policy()
        self._steps = list(steps)
        self._last_round = float("-inf")

    def add_step(self, name: str, step: Callable[[], object]) -> None:
        """Another step of every round (commit statuses, hook registration)."""
        self._steps.append((name, step))

    def due(self) -> bool:
        """Cheap, on the event loop: woken, or ``POLL`` seconds since the last round."""
        woken = self.signal.take()
        return woken or time.monotonic() - self._last_round >= self.policy.poll

    def run(self) -> int:
        """One round; returns how many deliveries it handled."""
        self._last_round = time.monotonic()
        with self._db.unit_of_work(write=True) as s:
            store.give_up_lapsed(s, self._clock.now(), max_attempts=self.policy.max_attempts)
            s.commit()
        handled = 0
        started = time.monotonic()
        while self.step():
            handled += 1
            if time.monotonic() - started >= self.policy.round_budget:
                self.signal.wake()  # more may be waiting: the next round comes at once
                break
        for name, step in self._steps:
            try:
                step()
            except Exception:
                log.exception("a webhook worker step failed; next round", extra={"step": name})
        return handled

    def step(self) -> bool:
        """Claim one delivery and handle it; False when none may run now."""
        with self._db.unit_of_work(write=True) as s:
            delivery = store.claim(
                s,
                self._clock.now(),
                lease=self.policy.lease,
                max_attempts=self.policy.max_attempts,
            )
            s.commit()
        if delivery is None:
            return False
        state, outcome, not_before = self._outcome(delivery)
        with self._db.unit_of_work(write=True) as s:
            kept = store.finish(
                s,
                delivery,
                state=state,
                outcome=outcome,
                now=self._clock.now(),
                not_before=not_before,
            )
            s.commit()
        log.info(
            "webhook delivery handled",
            extra={
                "delivery_id": delivery.id,
                "vcs_event": delivery.event,
                "attempt": delivery.attempt,
                "state": state if kept else "lost (claimed again after its lease expired)",
            },
        )
        return True

    def _outcome(self, delivery: Delivery) -> tuple[str, str, datetime | None]:
        """(state, outcome, not_before) of handling ``delivery`` once."""
        try:
            return "done", self._handle(delivery), None
        except DeliveryFailed as exc:
            return "failed", str(exc), None
        except ApiError as exc:
            if exc.status < 500:
                return "failed", exc.detail, None
            why = exc.detail
        except Exception as exc:
            log.exception(
                "handling a webhook delivery failed",
                extra={"delivery_id": delivery.id, "attempt": delivery.attempt},
            )
            why = f"{type(exc).__name__} (the details are in the server log)"
        why = one_line(why, 300)
        if delivery.attempt >= self.policy.max_attempts:
            return "failed", f"failed {delivery.attempt} times; the last error: {why}", None
        retry = self.policy.retry_at(self._clock.now(), delivery.attempt)
        return (
            "queued",
            f"attempt {delivery.attempt} of {self.policy.max_attempts} failed ({why}); "
            f"trying again at {retry.isoformat(timespec='seconds')}",
            retry,
        )


def prune_deliveries(db: Database, clock: Clock, retention: timedelta = RETENTION) -> int:
    """Delete deliveries received longer than ``retention`` (30 days) ago that no worker holds;
    a housekeeping job of every replica (a second one deletes nothing)."""
    with no_statement_timeout(), db.unit_of_work(write=True) as s:
        gone = store.prune(s, clock.now() - retention)
        s.commit()
    if gone:
        log.info("old webhook deliveries deleted", extra={"count": gone})
    return gone
