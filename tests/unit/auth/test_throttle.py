"""``cairn.auth.throttle`` (finding L3): the per-address token bucket and the failed-login
audit aggregation, on a FrozenClock; and the ``CAIRN_LOGIN_*`` settings."""

from __future__ import annotations

from datetime import timedelta

import pytest

from cairn.audit.log import Actor
from cairn.auth import throttle
from cairn.auth.throttle import (
    FAILURES_ACTION,
    OVERFLOW,
    AddressThrottle,
    FailureAudit,
    client_key,
)
from cairn.clock import FrozenClock
from cairn.config import from_environment
from cairn.errors import ConfigError, TooManyRequests


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::ffff", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.9", "192.0.2.9"),
        ("", ""),
        ("x" * 100, "x" * 64),
    ],
)
def test_client_key(address: str, key: str) -> None:
    assert client_key(address) == key


def test_the_bucket_refuses_when_empty_and_refills_with_time() -> None:
    clock = FrozenClock()
    bucket = AddressThrottle(clock, burst=3, per_minute=6)  # one token per 10 s
    for _ in range(3):
        bucket.admit("192.0.2.1", "tries")
        bucket.charge("192.0.2.1")
    with pytest.raises(TooManyRequests) as refused:
        bucket.admit("192.0.2.1", "tries")
    assert refused.value.status == 429
    assert refused.value.headers["Retry-After"] == "10"
    assert "too many tries from your address; wait 10 seconds" in refused.value.detail
    bucket.admit("192.0.2.2", "tries")  # another address
    clock.advance(timedelta(seconds=10))
    bucket.take("192.0.2.1", "tries")
    with pytest.raises(TooManyRequests):
        bucket.take("192.0.2.1", "tries")


def test_a_flood_is_paid_for_but_never_more_than_one_burst() -> None:
    clock = FrozenClock()
    bucket = AddressThrottle(clock, burst=2, per_minute=60)
    for _ in range(1000):
        bucket.charge("192.0.2.1")
    with pytest.raises(TooManyRequests) as refused:
        bucket.admit("192.0.2.1", "tries")
    assert refused.value.retry_after == 3  # from -2 back to 1 token at 1 per second


def test_zero_per_minute_turns_the_limit_off() -> None:
    bucket = AddressThrottle(FrozenClock(), burst=1, per_minute=0)
    for _ in range(10):
        bucket.take("192.0.2.1", "tries")


def test_memory_is_bounded_by_max_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(throttle, "MAX_ADDRESSES", 5)
    clock = FrozenClock()
    bucket = AddressThrottle(clock, burst=1, per_minute=1)
    for i in range(50):
        bucket.charge(f"192.0.2.{i}")
    assert len(bucket._buckets) <= 6
    assert OVERFLOW in bucket._buckets
    with pytest.raises(TooManyRequests):  # the addresses beyond the bound share one bucket
        bucket.admit("192.0.2.200", "tries")
    clock.advance(timedelta(minutes=2))  # refilled buckets are forgotten to make room
    bucket.charge("192.0.2.201")
    assert "192.0.2.201" in bucket._buckets
    assert len(bucket._buckets) <= 6


def _failure(audit: FailureAudit, address: str, reason: str = "invalid token") -> list[str]:
    entries = audit.failure(
        address=address,
        action="auth.login.authorize",
        actor=Actor(None, "unknown", address),
        subject="terraform login (token form)",
        reason=reason,
    )
    return [str(e.kwargs["action"]) for e in entries]


def test_one_failure_event_per_address_and_window_then_a_count() -> None:
    clock = FrozenClock()
    audit = FailureAudit(clock, window=timedelta(minutes=10), individual=1)
    assert _failure(audit, "192.0.2.1") == ["auth.login.authorize"]
    for i in range(99):
        clock.advance(timedelta(seconds=1))
        assert _failure(audit, "192.0.2.1", "invalid token" if i % 3 else "disabled user") == []
    assert _failure(audit, "192.0.2.2") == ["auth.login.authorize"]
    assert audit.due() == []
    clock.advance(timedelta(minutes=10))
    # the next failure closes the window: its summary and the failure itself
    assert _failure(audit, "192.0.2.1") == [FAILURES_ACTION, "auth.login.authorize"]
    clock.advance(timedelta(minutes=10))
    assert audit.due() == []  # nothing was held back in the second windows
    audit2 = FailureAudit(clock, window=timedelta(minutes=10), individual=1)
    _failure(audit2, "192.0.2.1")
    _failure(audit2, "192.0.2.1", "disabled user")
    _failure(audit2, "192.0.2.1")
    clock.advance(timedelta(minutes=10))
    (entry,) = audit2.due()
    assert entry.kwargs["count"] == 2
    assert entry.kwargs["reasons"] == {"disabled user": 1, "invalid token": 1}
    assert entry.kwargs["actor"].source_address == "192.0.2.1"
    assert audit2.due() == []


def test_login_settings_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pytest.TempPathFactory
) -> None:
    for name in ("CAIRN_LOGIN_RATE_BURST", "CAIRN_LOGIN_RATE_PER_MINUTE"):
        monkeypatch.delenv(name, raising=False)
    defaults = from_environment(data_dir=str(tmp_path))
    assert (defaults.login_rate_burst, defaults.login_rate_per_minute) == (30, 30)
    assert defaults.login_pending_per_address == 50
    assert defaults.login_audit_window == timedelta(minutes=10)
    monkeypatch.setenv("CAIRN_LOGIN_RATE_BURST", "5")
    monkeypatch.setenv("CAIRN_LOGIN_RATE_PER_MINUTE", "0")
    monkeypatch.setenv("CAIRN_LOGIN_PENDING_PER_ADDRESS", "7")
    monkeypatch.setenv("CAIRN_LOGIN_AUDIT_WINDOW", "1h")
    s = from_environment(data_dir=str(tmp_path))
    assert (s.login_rate_burst, s.login_rate_per_minute, s.login_pending_per_address) == (5, 0, 7)
    assert s.login_audit_window == timedelta(hours=1)
    for name, value in (
        ("CAIRN_LOGIN_RATE_BURST", "0"),
        ("CAIRN_LOGIN_PENDING_PER_ADDRESS", "many"),
        ("CAIRN_LOGIN_AUDIT_WINDOW", "30d"),
    ):
        monkeypatch.setenv(name, value)
        with pytest.raises(ConfigError, match=name):
            from_environment(data_dir=str(tmp_path))
        monkeypatch.delenv(name)


def test_the_first_failures_of_a_window_are_recorded_one_by_one() -> None:
    clock = FrozenClock()
    audit = FailureAudit(clock, window=timedelta(minutes=10), individual=3)
    recorded = [_failure(audit, "192.0.2.1") for _ in range(5)]
    assert recorded == [["auth.login.authorize"]] * 3 + [[], []]
    clock.advance(timedelta(minutes=10))
    (entry,) = audit.due()
    assert entry.kwargs["count"] == 2
