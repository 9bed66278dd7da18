"""The agent status rule (``next_status``: idle/busy → unknown after 30 s of silence →
errored 5 min later → deleted an hour after errored/exited), the agent protocol's error
shape, and the token formats."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from cairn.agents.model import Transition, next_status
from cairn.agents.protocol import agent_error
from cairn.agents.sessions import (
    POOL_TOKEN_PREFIX,
    SESSION_PREFIX,
    AgentUnknown,
    Registration,
    _well_formed,
    new_pool_token,
)
from cairn.errors import Conflict, PayloadTooLarge, Unauthorized

T0 = datetime(2026, 1, 1, tzinfo=UTC)
S = timedelta(seconds=1)


@pytest.mark.parametrize("status", ["idle", "busy"])
def test_a_live_agent_turns_unknown_then_errored(status: str) -> None:
    assert next_status(status, T0, T0, T0 + 29 * S) is None
    assert next_status(status, T0, T0, T0 + 30 * S) == Transition("unknown")
    # A sweep that comes late puts the agent where its silence says, not one step on.
    assert next_status(status, T0, T0, T0 + 330 * S) == Transition("errored")


def test_unknown_turns_errored_five_minutes_after_it_went_silent_for_30_s() -> None:
    assert next_status("unknown", T0, T0 + 30 * S, T0 + 329 * S) is None
    assert next_status("unknown", T0, T0 + 30 * S, T0 + 330 * S) == Transition("errored")


@pytest.mark.parametrize("status", ["errored", "exited"])
def test_gone_agents_are_deleted_an_hour_after_their_status_changed(status: str) -> None:
    changed = T0 + 600 * S
    assert next_status(status, T0, changed, changed + timedelta(minutes=59)) is None
    assert next_status(status, T0, changed, changed + timedelta(hours=1)) == Transition("delete")


def test_an_unknown_status_is_left_alone() -> None:
    assert next_status("weird", T0, T0, T0 + timedelta(days=2)) is None


def test_protocol_errors_are_plain_json_with_a_code() -> None:
    response = agent_error(AgentUnknown("register again"))
    assert response.status_code == 409
    assert json.loads(bytes(response.body)) == {
        "error": "agent_unknown",
        "detail": "register again",
    }
    assert json.loads(bytes(agent_error(PayloadTooLarge("big")).body))["error"] == "too_large"
    assert agent_error(Unauthorized("no")).status_code == 401

    class Gap(Conflict):
        code = "offset"

        def __init__(self) -> None:
            super().__init__("resend from 7")
            self.extra = {"offset": 7, "error": "ignored"}

    assert json.loads(bytes(agent_error(Gap()).body)) == {
        "error": "offset",
        "detail": "resend from 7",
        "offset": 7,
    }


def test_token_formats() -> None:
    value = new_pool_token()
    assert value.startswith(POOL_TOKEN_PREFIX) and _well_formed(value, POOL_TOKEN_PREFIX)
    assert value != new_pool_token()
    assert not _well_formed(value + "x", POOL_TOKEN_PREFIX)
    assert not _well_formed(value[:-1] + "-", POOL_TOKEN_PREFIX)
    assert not _well_formed(value, SESSION_PREFIX)
    reg = Registration("agent-1", None, SESSION_PREFIX + "a" * 43)
    assert "aaaa" not in repr(reg)


def test_a_token_view_never_shows_the_value_in_its_repr() -> None:
    from cairn.agents.model import AgentPool, AgentToken
    from cairn.agents.service import TokenView

    value = new_pool_token()
    view = TokenView(AgentToken(id="at-1"), AgentPool(id="apool-1"), value)
    assert value not in repr(view)
