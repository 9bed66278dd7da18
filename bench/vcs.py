"""VCS webhooks (issue 11, item 6): how fast cairn acknowledges a burst of webhooks.

1. **Acknowledgement latency**: one ``cairn serve`` (HTTPS with its development CA, as by
   default) on SQLite, then one on PostgreSQL, each with 20 GitLab token connections
   (``gitlab_token``: a project access token, so no OAuth refresh is involved). A burst of 200
   GitLab ``Push Hook`` deliveries — 10 per connection, each with its own
   ``X-Gitlab-Event-UUID`` and the connection's ``X-Gitlab-Token``, as GitLab sends them —
   comes from 20 threads at once (one HTTPS connection each, opened and warmed beforehand).
   Per request the client measures send → answer; the table gives p50, p99 and max of those
   acknowledgement latencies (target p99 < 100 ms: the receiver verifies, records and
   answers, and never calls the forge), the burst's wall time, and how many deliveries the
   server recorded (each must be 202 and be one row).

   The connections are written as rows into the server's database (sealed under the server's
   ``CAIRN_SECRET_KEY``, as ``cairn.vcs`` seals them): what is measured is the receiver, and a
   token connection made through the API would first check its token against a forge.

2. **Token POSTs per burst** (target 1): one ``gitlab_oauth`` connection whose access token
   has just expired (the rig's GitLab token endpoint, ``tests/support/oidc_op/gitlab.mjs``, with
   GitLab's refresh-token rotation, and the rig's fake GitLab serving a real git repository), a
   workspace on that repository, and a burst of pushes (one new commit each) sent from 20
   threads — on PostgreSQL to two replicas of one database, whose webhook workers handle
   deliveries side by side. Every delivery needs the forge (the commit's archive), so every one
   asks the token service for a fresh token; the figure is how many refresh POSTs reached the
   token endpoint from the moment the expired token was stored until the last delivery was
   handled (cairn refreshes once, single-flight across replicas, whether a delivery or the
   refresh-ahead sweeper finds the expired token first), with the deliveries' outcomes and the
   time from the burst until the last one was handled. Runs stay queued
   (``CAIRN_WORKERS=0``).

Run: ``.venv/bin/python bench/vcs.py [--burst 200] [--connections 20] [--keep]
[--sqlite-only | --postgres-only]``. Figures only; the exit status is 0 whatever they are.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

# _harness puts the repository root on sys.path: it comes before tests.support.
from _harness import Bench, median, percentile, print_header, section, verdict

# isort: split
from tests.support import api as tfe
from tests.support.server import CairnServer

TARGET_P99 = 0.100  # seconds
WARMUP_PER_CLIENT = 3
IDLE_DELIVERIES = 50


@dataclass
class Connection:
    id: str
    secret: str


@dataclass
class Burst:
    backend: str
    idle: list[float]  # one client, one delivery at a time
    latencies: list[float]
    wall: float
    accepted: int
    rows: int


def insert_connections(database_url: str, secret_key: str, org: str, n: int) -> list[Connection]:
    """``n`` gitlab_token connections of ``org``, written as cairn.vcs writes them."""
    from sqlalchemy import select

    from cairn import ids
    from cairn.crypto import Keyring
    from cairn.db.engine import Database, make_engine
    from cairn.organizations.model import Organization
    from cairn.vcs.model import OAuthClient, webhook_secret_aad

    keyring = Keyring(secret_key)
    db = Database(make_engine(database_url))
    made = []
    try:
        with db.unit_of_work(write=True) as s:
            org_id = s.scalar(select(Organization.id).where(Organization.name == org))
            for i in range(n):
                client_id = ids.new_id("oauth_client")
                secret = secrets.token_urlsafe(24)
                s.add(
                    OAuthClient(
                        id=client_id,
                        organization_id=org_id,
                        name=f"bench-{i}",
                        service_provider="gitlab_hosted",
                        kind="gitlab_token",
                        http_url="https://gitlab.example",
                        api_url="https://gitlab.example/api/v4",
                        webhook_secret_sealed=keyring.seal(
                            secret.encode(), aad=webhook_secret_aad(client_id)
                        ),
                        organization_scoped=True,
                        allow_fork_plans=False,
                        created_at=datetime.now(UTC),
                    )
                )
                made.append(Connection(client_id, secret))
            s.commit()
    finally:
        db.dispose()
    return made


def count_rows(database_url: str) -> int:
    from sqlalchemy import func, select

    from cairn.db.engine import Database, make_engine
    from cairn.webhooks.model import VcsDelivery

    db = Database(make_engine(database_url))
    try:
        with db.unit_of_work() as s:
            return int(s.scalar(select(func.count()).select_from(VcsDelivery)) or 0)
    finally:
        db.dispose()


def push_body(i: int) -> bytes:
    sha = secrets.token_hex(20)
    return json.dumps(
        {
            "object_kind": "push",
            "ref": "refs/heads/main",
            "before": "0" * 40,
            "after": sha,
            "checkout_sha": sha,
            "user_username": "bench",
            "project": {"path_with_namespace": f"bench/repo-{i}", "default_branch": "main"},
            "commits": [{"id": sha, "added": [], "modified": ["main.tf"], "removed": []}],
            "total_commits_count": 1,
        }
    ).encode()


def deliver(client: httpx.Client, conn: Connection, body: bytes) -> httpx.Response:
    return client.post(
        f"/api/cairn/v1/vcs-hooks/{conn.id}",
        content=body,
        headers={
            "Content-Type": "application/json",
            "X-Gitlab-Event": "Push Hook",
            "X-Gitlab-Token": conn.secret,
            "X-Gitlab-Event-UUID": str(uuid.uuid4()),
            "User-Agent": "GitLab/17.5.0",
        },
    )


def one_at_a_time(server: CairnServer, conn: Connection, n: int) -> list[float]:
    """Latencies of ``n`` deliveries sent one after the other by one client (after a warm-up):
    the cost of one acknowledgement without any queueing."""
    with server.client() as client:
        for _ in range(WARMUP_PER_CLIENT):
            deliver(client, conn, push_body(0)).raise_for_status()
        latencies = []
        for i in range(n):
            body = push_body(i)
            t0 = time.perf_counter()
            deliver(client, conn, body).raise_for_status()
            latencies.append(time.perf_counter() - t0)
    return latencies


def together(
    clients: list[httpx.Client], conns: list[Connection], per_client: int
) -> tuple[list[float], float, int]:
    """Each client sends ``per_client`` deliveries to its connection, all threads released at
    once: the latencies, the wall time and how many were answered 202."""
    start = threading.Barrier(len(conns) + 1)
    latencies: list[float] = []
    accepted = [0]
    lock = threading.Lock()

    def run(client: httpx.Client, conn: Connection) -> None:
        bodies = [push_body(i) for i in range(per_client)]
        start.wait()
        mine = []
        ok = 0
        for body in bodies:
            t0 = time.perf_counter()
            response = deliver(client, conn, body)
            mine.append(time.perf_counter() - t0)
            ok += response.status_code == 202
        with lock:
            latencies.extend(mine)
            accepted[0] += ok

    threads = [
        threading.Thread(target=run, args=(c, conn)) for c, conn in zip(clients, conns, strict=True)
    ]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return latencies, time.perf_counter() - t0, accepted[0]


def burst(
    server: CairnServer, database_url: str, conns: list[Connection], total: int
) -> tuple[list[float], float, int, int]:
    """``total`` deliveries from one thread per connection (after an untimed warm-up burst
    that opens the TLS connections and the server's database connections): latencies, wall
    time, how many were answered 202 and how many rows they made."""
    clients = [server.client() for _ in conns]
    try:
        together(clients, conns, WARMUP_PER_CLIENT)
        before = count_rows(database_url)
        latencies, wall, accepted = together(clients, conns, max(1, total // len(conns)))
    finally:
        for client in clients:
            client.close()
    return latencies, wall, accepted, count_rows(database_url) - before


def measure(bench: Bench, backend: str, args: argparse.Namespace, results: list[Burst]) -> None:
    secret_key = secrets.token_hex(24)
    database = bench.postgres_database() if backend == "postgres" else None
    server = bench.server(
        f"server-{backend}",
        database_url=database,
        env={
            "CAIRN_SECRET_KEY": secret_key,
            "CAIRN_WORKERS": "0",
            "CAIRN_LOG_LEVEL": "warning",
            "CAIRN_ACCESS_LOG": "off",
            # Nothing registers hooks on a forge here.
            "CAIRN_VCS_REGISTER_HOOKS": "false",
        },
    )
    server.start()
    database_url = database or f"sqlite:///{server.data_dir / 'cairn.db'}"
    with server.client(bench.token) as api:
        org = tfe.create_organization(api, f"bench-vcs-{backend}")
    conns = insert_connections(database_url, secret_key, org, args.connections)
    idle = one_at_a_time(server, conns[0], IDLE_DELIVERIES)
    latencies, wall, accepted, rows = burst(server, database_url, conns, args.burst)
    results.append(Burst(backend, idle, latencies, wall, accepted, rows))
    server.stop()


def report(results: list[Burst], total: int) -> None:
    print(f"\n1. Acknowledgement latency of a burst of {total} webhooks (target p99 < 100 ms)\n")
    print_header(
        f"   {'database':<12}{'idle p50':>9}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
        f"{'burst s':>9}{'per s':>8}{'202s':>6}{'rows':>6}  p99"
    )
    for r in results:
        p99 = percentile(r.latencies, 99)
        print(
            f"   {r.backend:<12}{median(r.idle) * 1000:>9.1f}{median(r.latencies) * 1000:>9.1f}"
            f"{p99 * 1000:>9.1f}{max(r.latencies) * 1000:>9.1f}{r.wall:>9.2f}"
            f"{len(r.latencies) / r.wall:>8.0f}{r.accepted:>6}{r.rows:>6}"
            f"  {verdict(p99 < TARGET_P99)}"
        )
    print(
        "\n   idle p50: one client sending one delivery at a time (no queueing); the burst's\n"
        "   latencies include waiting behind the other clients' deliveries (same machine)."
    )


# ---- 2. token POSTs per burst ------------------------------------------------------------------


@dataclass
class Refreshes:
    backend: str
    replicas: int
    deliveries: int
    accepted: int
    outcomes: dict[str, int]
    token_posts: int
    handled_in: float


def expired_oauth_token(
    database_url: str, secret_key: str, client_id: str, pair: dict[str, object]
) -> str:
    """The connection's token, stored as cairn.vcs stores a granted pair, expired a minute ago."""
    from datetime import timedelta

    from sqlalchemy import select

    from cairn import ids
    from cairn.crypto import Keyring
    from cairn.db.engine import Database, make_engine
    from cairn.vcs.model import OAuthClient, OAuthToken, access_aad, refresh_aad

    keyring = Keyring(secret_key)
    token_id = ids.new_id("oauth_token")
    db = Database(make_engine(database_url))
    try:
        with db.unit_of_work(write=True) as s:
            org_id = s.scalar(
                select(OAuthClient.organization_id).where(OAuthClient.id == client_id)
            )
            now = datetime.now(UTC)
            s.add(
                OAuthToken(
                    id=token_id,
                    oauth_client_id=client_id,
                    organization_id=org_id,
                    service_provider_user="alice",
                    access_token_sealed=keyring.seal(
                        str(pair["access_token"]).encode(), aad=access_aad(token_id, 0)
                    ),
                    refresh_token_sealed=keyring.seal(
                        str(pair["refresh_token"]).encode(), aad=refresh_aad(token_id, 0)
                    ),
                    expires_at=now - timedelta(minutes=1),
                    generation=0,
                    status="ok",
                    created_at=now,
                )
            )
            s.commit()
    finally:
        db.dispose()
    return token_id


def delivery_states(database_url: str, client_id: str) -> dict[str, int]:
    from sqlalchemy import func, select

    from cairn.db.engine import Database, make_engine
    from cairn.webhooks.model import VcsDelivery

    db = Database(make_engine(database_url))
    try:
        with db.unit_of_work() as s:
            rows = s.execute(
                select(VcsDelivery.state, func.count())
                .where(VcsDelivery.oauth_client_id == client_id)
                .group_by(VcsDelivery.state)
            ).all()
        return {str(state): int(n) for state, n in rows}
    finally:
        db.dispose()


def token_posts(bench: Bench, backend: str, args: argparse.Namespace, out: list[Refreshes]) -> None:
    from tests.support.vcs import webhook
    from tests.support.vcs.forge import start_forge
    from tests.support.vcs.gitlab_op import start_gitlab_op

    op = start_gitlab_op(bench.root / f"gitlab-op-{backend}")
    forge = start_forge(bench.root / f"forge-{backend}", op)
    try:
        secret_key = secrets.token_hex(24)
        database = bench.postgres_database() if backend == "postgres" else None
        env = {
            "CAIRN_SECRET_KEY": secret_key,
            "CAIRN_WORKERS": "0",
            "CAIRN_LOG_LEVEL": "warning",
            "CAIRN_ACCESS_LOG": "off",
            "CAIRN_BLOB_STORE": "database",
        }
        servers = [
            bench.server(f"oauth-{backend}-{i}", plain_http=True, database_url=database, env=env)
            for i in range(2 if database else 1)
        ]
        for server in servers:
            server.start()
        database_url = database or f"sqlite:///{servers[0].data_dir / 'cairn.db'}"
        app = op.add_client()
        repo = forge.create_repo(f"bench/infra-{backend}", files={"main.tf": "# bench\n"})
        with servers[0].client(bench.token) as api:
            org = tfe.create_organization(api, f"bench-oauth-{backend}")
            created = api.post(
                f"/api/v2/organizations/{org}/oauth-clients",
                headers={"Content-Type": "application/vnd.api+json"},
                json={
                    "data": {
                        "type": "oauth-clients",
                        "attributes": {
                            "service-provider": "gitlab_hosted",
                            "http-url": forge.gitlab_http_url,
                            "api-url": forge.gitlab_api_url,
                            "key": app.client_id,
                            "secret": app.client_secret,
                            "webhook-secret": (hook_secret := secrets.token_urlsafe(24)),
                        },
                    }
                },
            )
            created.raise_for_status()
            client_id = created.json()["data"]["id"]
            pair = op.grant(app)
            # From here on, every token POST is a refresh (the burst's, or the refresh-ahead
            # sweeper's when it finds the expired token first).
            posts_before = int(op.stats(app)["token_posts"])
            token_id = expired_oauth_token(database_url, secret_key, client_id, pair)
            api.post(
                f"/api/v2/organizations/{org}/workspaces",
                headers={"Content-Type": "application/vnd.api+json"},
                json={
                    "data": {
                        "type": "workspaces",
                        "attributes": {
                            "name": "infra",
                            "queue-all-runs": True,
                            "vcs-repo": {"identifier": repo.path, "oauth-token-id": token_id},
                        },
                    }
                },
            ).raise_for_status()
        # One commit per push, so every delivery starts a run from its own archive.
        before = repo.head()
        hooks = []
        for i in range(args.burst):
            after = repo.commit({"main.tf": f"# change {i}\n"})
            hooks.append(webhook.gitlab_push(repo, before=before, after=after))
            before = after
        clients = [servers[i % len(servers)].client() for i in range(args.connections)]
        url = f"/api/cairn/v1/vcs-hooks/{client_id}"
        accepted = [0]
        lock = threading.Lock()
        start = threading.Barrier(len(clients) + 1)

        def run(k: int) -> None:
            mine = hooks[k :: len(clients)]
            start.wait()
            ok = 0
            for hook in mine:
                body = hook.body()
                ok += (
                    clients[k]
                    .post(url, content=body, headers=hook.headers(hook_secret, body))
                    .status_code
                    == 202
                )
            with lock:
                accepted[0] += ok

        threads = [threading.Thread(target=run, args=(k,)) for k in range(len(clients))]
        for t in threads:
            t.start()
        start.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        for client in clients:
            client.close()
        deadline = time.monotonic() + 600
        while True:
            states = delivery_states(database_url, client_id)
            if (
                not (states.get("queued", 0) + states.get("processing", 0))
                or time.monotonic() > deadline
            ):
                break
            time.sleep(0.25)
        handled_in = time.perf_counter() - t0
        out.append(
            Refreshes(
                backend,
                len(servers),
                args.burst,
                accepted[0],
                states,
                int(op.stats(app)["token_posts"]) - posts_before,
                handled_in,
            )
        )
        for server in servers:
            server.stop()
    finally:
        forge.stop()
        op.stop()


def report_refreshes(results: list[Refreshes]) -> None:
    print_header(
        f"   {'database':<12}{'replicas':>9}{'sent':>6}{'202s':>6}{'done':>6}{'failed':>7}"
        f"{'handled s':>10}{'token POSTs':>12}  target 1"
    )
    for r in results:
        print(
            f"   {r.backend:<12}{r.replicas:>9}{r.deliveries:>6}{r.accepted:>6}"
            f"{r.outcomes.get('done', 0):>6}{r.outcomes.get('failed', 0):>7}{r.handled_in:>10.1f}"
            f"{r.token_posts:>12}  {verdict(r.token_posts == 1)}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--burst", type=int, default=200, help="webhooks in the burst")
    parser.add_argument("--connections", type=int, default=20, help="connections (= threads)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--sqlite-only", action="store_true")
    only.add_argument("--postgres-only", action="store_true")
    args = parser.parse_args()
    backends = ["sqlite", "postgres"]
    if args.sqlite_only or args.postgres_only:
        backends = ["sqlite"] if args.sqlite_only else ["postgres"]
    results: list[Burst] = []
    with Bench("cairn-bench-vcs-", keep=args.keep) as bench:
        print(
            f"cairn VCS webhooks: HTTPS, {args.connections} gitlab_token connections, "
            f"{args.burst} Push Hook deliveries from {args.connections} threads, "
            f"{os.cpu_count()} CPUs"
        )
        for backend in backends:

            def one(b: str = backend) -> None:
                measure(bench, b, args, results)

            section(f"burst on {backend}", one)
        if results:
            report(results, args.burst)
        print("\n2. Token POSTs per burst on an expired gitlab_oauth connection (target 1)\n")
        refreshes: list[Refreshes] = []
        for backend in backends:

            def two(b: str = backend) -> None:
                token_posts(bench, b, args, refreshes)

            section(f"token POSTs on {backend}", two)
        if refreshes:
            report_refreshes(refreshes)


if __name__ == "__main__":
    main()
