"""The IdP's signing keys, cached per issuer so that key rotation heals itself and forged
``kid``s cannot hammer the IdP (RP-05..RP-07).

* The key set is kept for the JWKS response's ``Cache-Control: max-age`` (minus ``Age``),
  clamped to [5 min, 24 h]; after that it is fetched again on next use.
* A token whose ``kid`` is not in the set — and only that: not a bad signature with a known
  kid, not an expired token — forces one refresh, single-flight per issuer (concurrent misses
  share the same fetch), and the lookup is retried once. Then a cooldown (60 s) starts during
  which unknown kids fail locally without a fetch; kids a refresh did not find go into a
  bounded negative cache. 1,000 tokens with random kids cost at most one upstream fetch.
* A failed fetch never drops the last good key set (PyJWKClient issue #1162 turned an IdP
  blip into a total outage): known kids keep verifying, an unknown kid answers 503.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import httpx

from cairn.auth.idp.errors import IdpUnavailable, InvalidIdToken
from cairn.auth.idp.jws import PublicJwk, parse_jwk
from cairn.clock import Clock

log = logging.getLogger("cairn.auth.idp")

MIN_TTL = timedelta(minutes=5)
MAX_TTL = timedelta(hours=24)
COOLDOWN = timedelta(seconds=60)
NEGATIVE_SIZE = 128
NEGATIVE_TTL = timedelta(minutes=5)
MAX_JWKS_BYTES = 512 * 1024
_WAIT_SECONDS = 60.0  # a joined fetch is bounded by the client's timeouts; this is a backstop
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)\"?\s*(?:,|$)", re.IGNORECASE)


def cache_ttl(headers: httpx.Headers) -> timedelta:
    """How long a JWKS response may be used: ``max-age`` minus ``Age``, clamped to
    [MIN_TTL, MAX_TTL]; ``no-store``/``no-cache`` or no ``max-age`` means MIN_TTL."""
    value = headers.get("cache-control", "")
    match = _MAX_AGE.search(value)
    if match is None or re.search(r"no-store|no-cache", value, re.IGNORECASE):
        return MIN_TTL
    age = headers.get("age", "0")
    seconds = int(match.group(1)) - (int(age) if age.isdigit() else 0)
    return min(max(timedelta(seconds=seconds), MIN_TTL), MAX_TTL)


@dataclass(frozen=True)
class KeyLookup:
    """The keys that may have signed a token, and whether they were found only by the
    forced refresh (the kid was unknown: the IdP rotated its key)."""

    keys: tuple[PublicJwk, ...]
    refreshed: bool


@dataclass
class JwksStats:
    """Counters for one issuer (metrics and tests)."""

    fetches: int = 0
    failed_fetches: int = 0
    forced_refreshes: int = 0
    local_rejections: int = 0


@dataclass
class _IssuerKeys:
    jwks_uri: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    keys: tuple[PublicJwk, ...] | None = None  # the last good set; None before the first
    fresh_until: datetime | None = None
    retry_after: datetime | None = None  # after a failed fetch, while serving the last good set
    last_forced: datetime | None = None
    last_fetch_failed: bool = False
    negative: OrderedDict[str, datetime] = field(default_factory=OrderedDict)
    inflight: Future[None] | None = None
    stats: JwksStats = field(default_factory=JwksStats)

    def find(self, kid: str | None, alg: str) -> tuple[PublicJwk, ...]:
        keys = self.keys or ()
        return tuple(k for k in keys if k.fits(alg) and (kid is None or k.kid == kid))

    def knows(self, kid: str) -> bool:
        return any(k.kid == kid for k in self.keys or ())


class JwksCache:
    """Verification keys per issuer. Thread-safe; one instance serves the whole process."""

    def __init__(
        self,
        http: httpx.Client,
        clock: Clock,
        *,
        cooldown: timedelta = COOLDOWN,
        negative_size: int = NEGATIVE_SIZE,
        negative_ttl: timedelta = NEGATIVE_TTL,
    ) -> None:
        self._http = http
        self._clock = clock
        self._cooldown = cooldown
        self._negative_size = negative_size
        self._negative_ttl = negative_ttl
        self._issuers: dict[str, _IssuerKeys] = {}
        self._lock = threading.Lock()

    def stats(self, issuer: str) -> JwksStats:
        """A copy of the counters for ``issuer``."""
        entry = self._issuers.get(issuer)
        if entry is None:
            return JwksStats()
        with entry.lock:
            return JwksStats(**vars(entry.stats))

    def kids(self, issuer: str) -> list[str]:
        """The kids of the cached key set (what the IdP last published, as far as we know)."""
        entry = self._issuers.get(issuer)
        return [k.kid or "" for k in (entry.keys or ())] if entry else []

    def lookup(self, issuer: str, jwks_uri: str, kid: str | None, alg: str) -> KeyLookup:
        """The keys that may verify a token from ``issuer`` with this header.

        Raises InvalidIdToken (reason ``unknown-kid``) when the kid is not published even
        after the one allowed refresh, and IdpUnavailable when no key set can be had at all,
        or when the refresh an unknown kid needed failed (RP-07: 503, not 401)."""
        entry = self._entry(issuer, jwks_uri)
        now = self._clock.now()
        loaded_now = load_failed = False
        with entry.lock:
            # "New" only relative to a set we already had: a cold start is not a rotation.
            new_kid = kid is not None and entry.keys is not None and not entry.knows(kid)
            flight = self._join_or_lead(entry) if self._needs_load(entry, now) else None
        if flight is not None:
            try:
                self._settle(entry, *flight)
                loaded_now = True
            except IdpUnavailable:
                if entry.keys is None:
                    raise
                load_failed = True
                log.warning(
                    "IdP JWKS refresh failed; still using the last good key set",
                    extra={"issuer": issuer, "kids": self.kids(issuer)},
                )
        found = entry.find(kid, alg)
        if found:
            # A kid first seen in the set this lookup loaded: the IdP rotated its key.
            return KeyLookup(found, refreshed=loaded_now and new_kid)
        if kid is None or entry.knows(kid):
            # Without a kid, or with a known kid of another key type, a newer set cannot help:
            # only an unknown kid triggers a refresh (RP-05).
            raise InvalidIdToken(
                f"no published {alg} key matches the ID token's header", reason="no-matching-key"
            )
        if load_failed:
            # The fetch this lookup just tried failed: do not try again at once (RP-07: 503).
            with entry.lock:
                entry.last_forced = now
            raise IdpUnavailable(
                "the IdP's signing keys cannot be fetched right now, and this token uses a key "
                "cairn has not seen; try again in a minute",
                reason="jwks-unavailable",
            )
        checked = loaded_now
        if not loaded_now and self._forced_refresh(entry, kid, now):
            checked = True
            found = entry.find(kid, alg)
            if found:
                return KeyLookup(found, refreshed=True)
        with entry.lock:
            if loaded_now:
                # The fetch this lookup just waited for stands in for the forced refresh.
                entry.last_forced = now
            if checked and not entry.knows(kid):
                # Only a kid that a fresh key set lacks is known-bad; one refused inside the
                # cooldown may be a genuine new key and gets its refresh afterwards.
                self._remember_unknown(entry, kid, now)
        raise InvalidIdToken(
            "the ID token is signed with a key the IdP does not publish (unknown 'kid')",
            reason="unknown-kid",
        )

    # -- internals -------------------------------------------------------------------------

    def _entry(self, issuer: str, jwks_uri: str) -> _IssuerKeys:
        with self._lock:
            entry = self._issuers.get(issuer)
            if entry is None or entry.jwks_uri != jwks_uri:
                entry = self._issuers[issuer] = _IssuerKeys(jwks_uri=jwks_uri)
            return entry

    @staticmethod
    def _needs_load(entry: _IssuerKeys, now: datetime) -> bool:
        """Caller holds ``entry.lock``."""
        if entry.keys is None:
            return True
        stale = entry.fresh_until is None or now >= entry.fresh_until
        return stale and (entry.retry_after is None or now >= entry.retry_after)

    @staticmethod
    def _join_or_lead(entry: _IssuerKeys) -> tuple[Future[None], bool]:
        """The fetch in flight (join it), or a new one this caller must run (lead it).
        Caller holds ``entry.lock``, so deciding and registering are one step."""
        if entry.inflight is not None:
            return entry.inflight, False
        entry.inflight = Future()
        return entry.inflight, True

    def _forced_refresh(self, entry: _IssuerKeys, kid: str, now: datetime) -> bool:
        """Refresh because ``kid`` is unknown: join a fetch in flight, or start one unless the
        kid is known-bad or the cooldown runs. False when no refresh happened (local reject)."""
        with entry.lock:
            expiry = entry.negative.get(kid)
            if expiry is not None and now < expiry:
                entry.stats.local_rejections += 1
                return False
            cooling = entry.last_forced is not None and now < entry.last_forced + self._cooldown
            if entry.inflight is None and cooling:
                entry.stats.local_rejections += 1
                if entry.last_fetch_failed:
                    raise IdpUnavailable(
                        "the IdP's signing keys cannot be fetched right now, and this token "
                        "uses a key cairn has not seen; try again in a minute",
                        reason="jwks-unavailable",
                    )
                return False
            flight = self._join_or_lead(entry)
            if flight[1]:
                entry.last_forced = now
                entry.stats.forced_refreshes += 1
        self._settle(entry, *flight, forced=True)
        return True

    def _remember_unknown(self, entry: _IssuerKeys, kid: str, now: datetime) -> None:
        entry.negative[kid] = now + self._negative_ttl
        entry.negative.move_to_end(kid)
        while len(entry.negative) > self._negative_size:
            entry.negative.popitem(last=False)

    def _settle(
        self, entry: _IssuerKeys, flight: Future[None], leader: bool, *, forced: bool = False
    ) -> None:
        """Run the fetch (leader) or wait for it (joiner); both raise IdpUnavailable when
        it failed. The cached set changes only on success (RP-07)."""
        if not leader:
            try:
                flight.result(timeout=_WAIT_SECONDS)
            except IdpUnavailable as exc:  # a fresh instance per waiting thread
                raise IdpUnavailable(exc.detail, reason=exc.reason) from None
            except FutureTimeout:
                raise IdpUnavailable(
                    "the IdP's JWKS fetch did not finish in time", reason="jwks-unavailable"
                ) from None
            return
        try:
            keys, ttl = self._download(entry)
        except IdpUnavailable as exc:
            with entry.lock:
                entry.stats.fetches += 1
                entry.stats.failed_fetches += 1
                entry.last_fetch_failed = True
                entry.retry_after = self._clock.now() + self._cooldown
                entry.inflight = None
            flight.set_exception(exc)
            raise
        except BaseException as exc:  # never leave joiners waiting on a dead leader
            with entry.lock:
                entry.inflight = None
            flight.set_exception(exc)
            raise
        with entry.lock:
            entry.stats.fetches += 1
            previous = {k.kid for k in entry.keys or ()}
            entry.keys = keys
            entry.fresh_until = self._clock.now() + ttl
            entry.retry_after = None
            entry.last_fetch_failed = False
            for k in keys:
                if k.kid is not None:
                    entry.negative.pop(k.kid, None)
            entry.inflight = None
        flight.set_result(None)
        added = sorted(k.kid or "" for k in keys if k.kid not in previous)
        if previous and added:
            log.info(
                "IdP published new signing keys",
                extra={"jwks_uri": entry.jwks_uri, "new_kids": added, "forced": forced},
            )

    def _download(self, entry: _IssuerKeys) -> tuple[tuple[PublicJwk, ...], timedelta]:
        uri = entry.jwks_uri
        try:
            resp = self._http.get(
                uri, headers={"Accept": "application/jwk-set+json, application/json"}
            )
        except httpx.HTTPError as exc:
            raise IdpUnavailable(
                f"the IdP's JWKS ({uri}) did not answer: {exc.__class__.__name__}",
                reason="jwks-unavailable",
            ) from None
        if resp.status_code != 200:
            raise IdpUnavailable(
                f"the IdP's JWKS ({uri}) answered HTTP {resp.status_code}",
                reason="jwks-unavailable",
            )
        if len(resp.content) > MAX_JWKS_BYTES:
            raise IdpUnavailable(f"the IdP's JWKS ({uri}) is too large", reason="jwks-unavailable")
        try:
            doc = resp.json()
        except ValueError:
            doc = None
        members = doc.get("keys") if isinstance(doc, dict) else None
        if not isinstance(members, list):
            raise IdpUnavailable(
                f"the IdP's JWKS ({uri}) is not a JWK set", reason="jwks-unavailable"
            )
        keys = tuple(k for k in (parse_jwk(m) for m in members) if k is not None)
        if not keys:
            # Re-checked on every refresh (RP-02): a set that offers only HS*/unknown keys is
            # a downgrade or a misconfiguration; keep the last good set instead.
            raise IdpUnavailable(
                f"the IdP's JWKS ({uri}) has no usable RS256/ES256 signing key",
                reason="jwks-unusable",
            )
        if len(keys) < len(members):
            log.debug(
                "skipped JWKS members cairn does not verify with",
                extra={"jwks_uri": uri, "skipped": len(members) - len(keys)},
            )
        return keys, cache_ttl(resp.headers)
