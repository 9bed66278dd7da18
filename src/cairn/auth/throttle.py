"""Limits on what anonymous clients make cairn write (finding L3): ``terraform login``'s
public endpoints take no credential, yet failed logins were audited one row each and every
``GET /oauth/authorization`` with an IdP stored a pending login — one client wrote ~76 rows a
second without limit.

* ``AddressThrottle``: a token bucket per client address. Each failed token-form login, each
  failed ``/oauth/token`` request and each redirect to the IdP (which stores a pending login)
  takes a token; a client whose bucket is empty is answered 429 with ``Retry-After`` before
  any work is done. Successful logins cost nothing, so a person is never slowed down by their
  own logins.
* ``FailureAudit``: failed logins stay audited, but at most 10 events per address, kind of
  failure and window (``CAIRN_LOGIN_AUDIT_WINDOW``): the first ten are recorded as they
  happen (a person mistyping keeps a full record); the ones after them in the window are
  counted, and one ``auth.login.failures`` event with the count, the reasons and the first
  and last times is recorded when the window is over (at the next failure from that
  address, or by housekeeping).

Both are **per process**, in memory: with N replicas behind a load balancer a client gets N
budgets (the database is the shared resource they protect, and a per-replica bound is still a
bound). They count at most ``MAX_ADDRESSES`` addresses each; beyond that, new addresses share
one bucket and one audit entry, so memory stays bounded whatever the client does. An IPv6
client is counted by its /64 (one machine usually holds a whole /64).

The address is the connection's peer, or the ``X-Forwarded-For`` client when the peer is a
trusted proxy (``CAIRN_TRUSTED_PROXIES``): behind a proxy that is not trusted, every client
shares the proxy's budget.
"""

from __future__ import annotations

import ipaddress
import itertools
import math
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cairn.audit.log import Actor
from cairn.clock import Clock
from cairn.errors import TooManyRequests

MAX_ADDRESSES = 10_000
OVERFLOW = "*"  # the shared key of addresses beyond MAX_ADDRESSES
FAILURES_ACTION = "auth.login.failures"


def client_key(address: str) -> str:
    """The key an address is counted under: an IPv4 address itself, an IPv6 address's /64
    network, anything else (no address, a unix socket) as it is."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # ::ffff:192.0.2.1 is the IPv4 client 192.0.2.1
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def _bounded_key(table: OrderedDict[str, Any], address: str) -> str:
    key = client_key(address)
    if key in table or len(table) < MAX_ADDRESSES:
        return key
    return OVERFLOW


@dataclass(frozen=True)
class LoginLimits:
    """The settings (``CAIRN_LOGIN_*``): the bucket of each address (``burst`` tokens refilled
    at ``per_minute``; 0 turns the limit off), the logins one address may have pending at the
    IdP, and the failed-login audit window."""

    burst: int = 30
    per_minute: int = 30
    pending_per_address: int = 50
    audit_window: timedelta = timedelta(minutes=10)
    audit_individual: int = 10  # failures recorded one by one per window


@dataclass
class _Bucket:
    tokens: float
    at: datetime


class AddressThrottle:
    """A token bucket per client address: ``burst`` tokens, refilled at ``per_minute``.
    ``per_minute`` 0 turns the limit off. Thread-safe (handlers run in worker threads)."""

    def __init__(self, clock: Clock, *, burst: int, per_minute: int) -> None:
        self._clock = clock
        self._burst = max(1, burst)
        self._rate = per_minute / 60.0  # tokens per second
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self._rate > 0

    def _bucket(self, address: str, now: datetime) -> _Bucket:
        """The address's bucket, refilled up to ``now`` (the caller holds the lock). A new
        address when MAX_ADDRESSES are counted first makes room by forgetting addresses whose
        buckets have refilled (the same as never seen); failing that it shares OVERFLOW's."""
        key = client_key(address)
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= MAX_ADDRESSES:
                self._prune(now)
            if len(self._buckets) >= MAX_ADDRESSES:
                key = OVERFLOW
                bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = _Bucket(float(self._burst), now)
        elapsed = max(0.0, (now - bucket.at).total_seconds())
        bucket.tokens = min(float(self._burst), bucket.tokens + elapsed * self._rate)
        bucket.at = now
        self._buckets.move_to_end(key)
        return bucket

    def _prune(self, now: datetime) -> None:
        """Forget the least recently used addresses (up to 256 looked at) whose buckets have
        refilled by ``now``."""
        for key in list(itertools.islice(self._buckets, 256)):
            b = self._buckets[key]
            if b.tokens + (now - b.at).total_seconds() * self._rate >= self._burst:
                del self._buckets[key]

    def _refusal(self, bucket: _Bucket, doing: str) -> TooManyRequests:
        wait = math.ceil((1.0 - bucket.tokens) / self._rate)
        return TooManyRequests(
            f"too many {doing} from your address; wait {wait} seconds and try again",
            retry_after=wait,
        )

    def admit(self, address: str, doing: str) -> None:
        """Raise TooManyRequests when ``address`` has no token left (none is taken)."""
        if not self.enabled:
            return
        with self._lock:
            bucket = self._bucket(address, self._clock.now())
            if bucket.tokens < 1.0:
                raise self._refusal(bucket, doing)

    def take(self, address: str, doing: str) -> None:
        """Take a token for ``address``, or raise TooManyRequests when none is left."""
        if not self.enabled:
            return
        with self._lock:
            bucket = self._bucket(address, self._clock.now())
            if bucket.tokens < 1.0:
                raise self._refusal(bucket, doing)
            bucket.tokens -= 1.0

    def charge(self, address: str) -> None:
        """Take a token for a request that already failed (never raises; may go below 0
        only down to -burst, so a flood is paid for with waiting)."""
        if not self.enabled:
            return
        with self._lock:
            bucket = self._bucket(address, self._clock.now())
            bucket.tokens = max(-float(self._burst), bucket.tokens - 1.0)


@dataclass
class _Window:
    started: datetime
    last: datetime
    recorded: int = 0
    suppressed: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    first_suppressed: datetime | None = None


@dataclass(frozen=True)
class AuditEntry:
    """One audit event to record: ``record(s, **entry.kwargs)``."""

    kwargs: dict[str, Any]


class FailureAudit:
    """At most ``individual`` failed-login events per (address, action) and window, plus one
    summary event with the count of the failures after them. Thread-safe."""

    def __init__(self, clock: Clock, *, window: timedelta, individual: int = 10) -> None:
        self._clock = clock
        self._window = window
        self._individual = max(1, individual)
        self._windows: OrderedDict[str, _Window] = OrderedDict()
        self._lock = threading.Lock()

    def failure(
        self, *, address: str, action: str, actor: Actor, subject: str, reason: str
    ) -> list[AuditEntry]:
        """The events to record for this failure: the failure itself while its window has
        recorded fewer than ``individual``, and the summary of a window that is over; nothing
        otherwise (the failure is counted for the summary)."""
        now = self._clock.now()
        out: list[AuditEntry] = []
        with self._lock:
            key = f"{action} {_bounded_key(self._windows, address)}"
            window = self._windows.get(key)
            if window is not None and now - window.started >= self._window:
                out += self._summary(key, window, action)
                del self._windows[key]
                window = None
            if window is None:
                window = self._windows[key] = _Window(started=now, last=now)
            self._windows.move_to_end(key)
            window.last = now
            if window.recorded < self._individual:
                window.recorded += 1
                out.append(
                    AuditEntry(
                        {
                            "at": now,
                            "actor": actor,
                            "action": action,
                            "subject": subject,
                            "outcome": "failure",
                            "reason": reason,
                        }
                    )
                )
                return out
            window.suppressed += 1
            window.reasons[reason] += 1
            window.first_suppressed = window.first_suppressed or now
            return out

    def due(self) -> list[AuditEntry]:
        """Summaries of every window that is over (for housekeeping); forgets those windows."""
        now = self._clock.now()
        out: list[AuditEntry] = []
        with self._lock:
            for key, window in list(self._windows.items()):
                if now - window.started >= self._window:
                    action = key.split(" ", 1)[0]
                    out += self._summary(key, window, action)
                    del self._windows[key]
        return out

    def _summary(self, key: str, window: _Window, action: str) -> list[AuditEntry]:
        if window.suppressed == 0:
            return []
        address = key.split(" ", 1)[1]
        return [
            AuditEntry(
                {
                    "at": window.last,
                    "actor": Actor(None, "unknown", address),
                    "action": FAILURES_ACTION,
                    "subject": f"{action} from {address}",
                    "outcome": "failure",
                    "failed_action": action,
                    "address": address,
                    "count": window.suppressed,
                    "first_at": window.first_suppressed,
                    "last_at": window.last,
                    "reasons": dict(window.reasons.most_common(10)),
                }
            )
        ]
