"""Helpers for the token and audit tests: TFE token calls over httpx, people and teams made
through cairn's own APIs, and a plain-text dump of a server's database. (The `cairn` CLI as
users run it is in `tests.support.cli`.)"""

from __future__ import annotations

import sqlite3
from typing import Any

import httpx
from sqlalchemy import MetaData, create_engine, select

from cairn.crypto import Keyring, load_or_create_secret
from cairn.db.engine import sqlalchemy_url
from tests.conftest import TEST_SECRET_KEY
from tests.support.api import JSONAPI, document, unique_name
from tests.support.server import CairnServer

CT = {"Content-Type": JSONAPI}


def me(client: httpx.Client) -> dict[str, Any]:
    """The calling user's `users` resource (`/account/details`)."""
    data: dict[str, Any] = document(client.get("/api/v2/account/details"), 200)["data"]
    return data


def token_body(
    description: str | None = None,
    expired_at: str | None = None,
    *,
    type_: str = "authentication-tokens",
) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    if description is not None:
        attrs["description"] = description
    if expired_at is not None:
        attrs["expired-at"] = expired_at
    return {"data": {"type": type_, "attributes": attrs}}


def create_user_token(
    client: httpx.Client,
    user_id: str,
    description: str | None = None,
    expired_at: str | None = None,
) -> tuple[str, str]:
    """POST /users/{id}/authentication-tokens; returns (token id, token value)."""
    doc = document(
        client.post(
            f"/api/v2/users/{user_id}/authentication-tokens",
            json=token_body(description, expired_at),
            headers=CT,
        ),
        201,
    )
    data = doc["data"]
    assert data["type"] == "authentication-tokens"
    value = data["attributes"]["token"]
    assert isinstance(value, str) and value.startswith("cairn_")
    return data["id"], value


def list_user_tokens(client: httpx.Client, user_id: str) -> list[dict[str, Any]]:
    doc = document(
        client.get(
            f"/api/v2/users/{user_id}/authentication-tokens",
            params={"page[number]": 1, "page[size]": 100},
        ),
        200,
    )
    data: list[dict[str, Any]] = doc["data"]
    return data


def make_user(admin: httpx.Client, prefix: str = "user") -> tuple[str, str]:
    """A person (not a site admin) created by the admin, and a token of theirs:
    returns (user id, token value)."""
    response = admin.post(
        "/api/cairn/v1/admin/users",
        json={"username": unique_name(prefix), "email": f"{prefix}@example.com"},
    )
    user_id: str = document(response, 201)["data"]["id"]
    _, value = create_user_token(admin, user_id, "made by the test")
    return user_id, value


def make_team(admin: httpx.Client, org: str, prefix: str = "team") -> str:
    """A team in `org` through the TFE teams API; returns its id."""
    body = {"data": {"type": "teams", "attributes": {"name": unique_name(prefix)}}}
    response = admin.post(f"/api/v2/organizations/{org}/teams", json=body, headers=CT)
    team_id: str = document(response, 201)["data"]["id"]
    return team_id


def grant_team(admin: httpx.Client, team_id: str, workspace_id: str, access: str) -> None:
    """TFE team-workspace access for `team_id` on `workspace_id`."""
    body = {
        "data": {
            "type": "team-workspaces",
            "attributes": {"access": access},
            "relationships": {
                "workspace": {"data": {"type": "workspaces", "id": workspace_id}},
                "team": {"data": {"type": "teams", "id": team_id}},
            },
        }
    }
    document(admin.post("/api/v2/team-workspaces", json=body, headers=CT), 201)


def authenticates(server: CairnServer, token: str) -> int:
    """The status of GET /account/details with `token`."""
    with server.client(token) as client:
        return client.get("/api/v2/account/details").status_code


# ---- what the database holds -----------------------------------------------------------------


def database_url(server: CairnServer) -> str:
    return server.database_url or f"sqlite:///{server.data_dir / 'cairn.db'}"


def dump_database(server: CairnServer) -> str:
    """Every row of every table as text. SQLite: `iterdump()` (what a backup holds);
    PostgreSQL: each row's values, read through SQLAlchemy."""
    url = database_url(server)
    if url.startswith("sqlite:///"):
        db = sqlite3.connect(url[len("sqlite:///") :])
        try:
            return "\n".join(db.iterdump())
        finally:
            db.close()
    engine = create_engine(sqlalchemy_url(url))
    try:
        meta = MetaData()
        meta.reflect(engine)
        lines: list[str] = []
        with engine.connect() as conn:
            for table in meta.sorted_tables:
                for row in conn.execute(select(table)):
                    lines.append(f"{table.name}: " + " | ".join(map(_text, row)))
        return "\n".join(lines)
    finally:
        engine.dispose()


def _text(value: object) -> str:
    if isinstance(value, bytes | memoryview):
        return bytes(value).hex()
    return str(value)


def token_hash(server: CairnServer, token: str) -> str:
    """The keyed hash cairn stores for `token` (same secret as the server)."""
    secret, _ = load_or_create_secret(
        server.data_dir, TEST_SECRET_KEY if server.database_url else None
    )
    return Keyring(secret).token_hash(token)
