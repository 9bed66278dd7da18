"""Tokens handed to runs verify for their whole lifetime while the keys rotate (issue 10, items
4 and 5): 20 concurrent runs across two real `cairn agent` processes, forced graceful rotations
every few seconds whose versions cross 9 → 10 and 99 → 100, zero failed verifications.

A real cairn server without built-in workers. On PostgreSQL, a second replica on the same
database (blobs in the database too) behind a round-robin TCP balancer whose URL is both
replicas' public URL, the issuer: the agents talk to the balancer, so both replicas claim jobs
and mint tokens (checked in their access logs), and the rotations alternate between the
replicas. Before it serves, the key set is re-seeded so that the active key has version 8.

Twenty agent-mode workspaces with auto-apply each get one run of a configuration whose only
resource is a `null_resource` (from the offline mirror) whose apply-time `local-exec` hands back
the two workload-identity tokens the apply was given (the generic audience and a tagged one).
While the runs go, a thread forces a graceful rotation each time two more runs have delivered
their tokens (at least 2 s apart): 8 → 9 → 10, then a history of long-retired keys 12…97 is
inserted (what a server keeps until it trims them), and 11 → 98 → 99 → 100. Six forced
rotations is what the JWKS bound (8 keys) admits while retired keys stay published for the
token lifetime plus two JWKS cache periods: a seventh is refused, which the test checks too.

Every token is verified by PyJWT through discovery + JWKS fetched over HTTP from every replica
directly (no cache: a fresh discovery and JWKS per verification), once as soon as the test sees
it and once more two seconds before it expires (the issuer's maximum lifetime is 20 s here),
with its `sub`, phase and run checked. The count of failed verifications must be 0. So that
the test can fail for want of rotations: the tokens must have been signed by at least four
different keys, among them keys absent from the JWKS served when the runs started, and by
version 100 while 99 (what a text sort calls newest, TFE's bug) is retired. (Run with retired
keys leaving the JWKS at once, 24 of the 80 verifications on SQLite fail.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import shutil
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from tests.e2e.runs_support import (
    AgentProcess,
    agent_workspace,
    create_pool,
    create_run,
    run_cli_config,
    server_env,
    start_agent,
    stop_all,
    upload_config,
    wait_registered,
    wait_status,
)
from tests.support import api as tfe_api
from tests.support import processes
from tests.support.identity import (
    DISCOVERY,
    JWKS,
    admin_keys,
    claims_of,
    header_of,
    rotate,
    secret_of,
    seed_first_version,
    seed_retired_history,
    sqlite_url,
    wait_for,
)
from tests.support.server import CairnServer
from tests.support.terraform import build_provider_mirror, hcl_string

pytestmark = pytest.mark.e2e

RUNS = 20
AUDIENCE = "cairn.rotation.e2e"
TAG = "SECOND"
AUDIENCE_TAGGED = "cairn.rotation.e2e.second"
TOKEN_TTL_S = 20  # CAIRN_OIDC_MAX_TOKEN_TTL: every token lives 20 s
LATE_MARGIN_S = 2.0  # the second verification, this long before `exp`
FIRST_VERSION = 8
HISTORY = range(12, 98)  # long-retired keys inserted after the rotation to 11 is planned
ROTATIONS = 6  # 8 → 9 → 10 → 11 → 98 → 99 → 100
ROTATE_EVERY_RUNS = 2  # a rotation each time two more runs delivered their tokens …
ROTATE_MIN_GAP_S = 2.0  # … and at least this long after the previous one


def probe(out: Path, name: str) -> str:
    """A configuration whose apply writes the job's two tokens to `<out>/<name>` (atomically)."""
    target = out / name
    command = (
        f'printf "%s\\n%s\\n" "$TFC_WORKLOAD_IDENTITY_TOKEN" "$TFC_WORKLOAD_IDENTITY_TOKEN_{TAG}"'
        f" > {target}.part && mv {target}.part {target}"
    )
    return f"""\
resource "null_resource" "probe" {{
  provisioner "local-exec" {{
    command = {hcl_string(command)}
  }}
}}
"""


# --- verifying on every replica ----------------------------------------------------------------


@dataclass(frozen=True)
class Replica:
    """One replica as a verifier reaches it: discovery and JWKS fetched from `base`, which must
    announce `issuer` (behind a load balancer every replica serves the same documents)."""

    name: str
    base: str
    issuer: str
    ssl_context: ssl.SSLContext | None

    def _get(self, path: str) -> dict[str, Any]:
        verify: ssl.SSLContext | bool = self.ssl_context or True
        response = httpx.get(self.base + path, verify=verify, timeout=10.0)
        response.raise_for_status()
        doc: dict[str, Any] = response.json()
        return doc

    def jwks(self) -> dict[str, Any]:
        return self._get(JWKS)

    def verify(self, token: str, audience: str) -> dict[str, Any]:
        """PyJWT, as a cloud does: discovery → `jwks_uri` (fetched from this replica) → the
        key named by the token's `kid`; signature, `iss`, `aud`, `exp`, `nbf` checked."""
        doc = self._get(DISCOVERY)
        if doc["issuer"] != self.issuer:
            raise AssertionError(f"{self.name} announces issuer {doc['issuer']!r}")
        jwks_uri: str = doc["jwks_uri"]
        if not jwks_uri.startswith(self.issuer + "/"):
            raise AssertionError(f"{self.name}: jwks_uri {jwks_uri!r} outside the issuer")
        client = jwt.PyJWKClient(
            self.base + jwks_uri.removeprefix(self.issuer),
            cache_jwk_set=False,
            ssl_context=self.ssl_context,
        )
        key = client.get_signing_key_from_jwt(token)
        claims: dict[str, Any] = jwt.decode(
            token,
            key=key,
            algorithms=["RS256", "ES256"],
            audience=audience,
            issuer=self.issuer,
            options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]},
        )
        return claims


def replica_of(server: CairnServer, name: str, issuer: str) -> Replica:
    context = server.ssl_context()
    return Replica(
        name, server.url, issuer, context if isinstance(context, ssl.SSLContext) else None
    )


@dataclass
class Checks:
    """Every verification made, and its failures (a message each), from several threads."""

    replicas: list[Replica]
    runs: dict[str, str]  # workspace name → run ID
    made: int = 0
    failures: list[str] = field(default_factory=list)
    kids: dict[str, set[str]] = field(default_factory=dict)  # kid → workspaces
    late: list[tuple[float, str, str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def check(self, name: str, token: str, audience: str, when: str) -> None:
        for replica in self.replicas:
            problem = None
            try:
                claims = replica.verify(token, audience)
                if claims["terraform_run_phase"] != "apply":
                    problem = f"phase {claims['terraform_run_phase']!r}"
                elif claims["terraform_run_id"] != self.runs[name]:
                    problem = f"run {claims['terraform_run_id']!r}, not {self.runs[name]!r}"
                elif not claims["sub"].endswith(f":workspace:{name}:run_phase:apply"):
                    problem = f"sub {claims['sub']!r}"
            except Exception as exc:  # every failure is counted, none stops the others
                problem = f"{type(exc).__name__}: {exc}"
            with self.lock:
                self.made += 1
                if problem is not None:
                    kid = header_of(token).get("kid")
                    self.failures.append(
                        f"{name} ({audience}, kid {kid}) {when} on {replica.name}: {problem}"
                    )

    def first(self, name: str, tokens: list[tuple[str, str]]) -> None:
        """Verify at once, and schedule the verification just before expiry."""
        for token, audience in tokens:
            self.check(name, token, audience, "at once")
            exp = float(claims_of(token)["exp"])
            with self.lock:
                self.kids.setdefault(header_of(token)["kid"], set()).add(name)
                self.late.append((exp - LATE_MARGIN_S, name, token, audience))

    def run_late(self, stop: threading.Event) -> None:
        """The second verification of every token, `LATE_MARGIN_S` before its `exp`."""
        while True:
            with self.lock:
                self.late.sort()
                due = [item for item in self.late if item[0] <= time.time()]
                self.late = self.late[len(due) :]
                pending = len(self.late)
            for _, name, token, audience in due:
                self.check(name, token, audience, "before expiry")
            if stop.is_set() and not pending and not due:
                return
            time.sleep(0.1)


# --- the servers ----------------------------------------------------------------------------


@pytest.fixture
def agents() -> Iterator[list[AgentProcess]]:
    started: list[AgentProcess] = []
    try:
        yield started
    finally:
        stop_all(started, now=True)


class RoundRobin:
    """A layer-4 load balancer in front of the replicas: TLS passes through, and each new
    connection goes to the next replica (so both replicas serve agents and mint tokens)."""

    def __init__(self, ports: list[int]) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._next = itertools.cycle(ports)
        self.connections: Counter[int] = Counter()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed
                return
            port = next(self._next)
            self.connections[port] += 1
            try:
                upstream = socket.create_connection(("127.0.0.1", port), timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            ends = [2]
            lock = threading.Lock()
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(
                    target=self._pipe, args=(src, dst, ends, lock, (client, upstream)), daemon=True
                ).start()

    @staticmethod
    def _pipe(
        src: socket.socket,
        dst: socket.socket,
        ends: list[int],
        lock: threading.Lock,
        both: tuple[socket.socket, socket.socket],
    ) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
        with lock:
            ends[0] -= 1
            last = ends[0] == 0
        if last:
            for sock in both:
                sock.close()

    def close(self) -> None:
        self._listener.close()


def start_site(
    backend: str,
    server_factory: Callable[..., CairnServer],
    admin_token: str,
    tmp_path: Path,
    stack: contextlib.ExitStack,
) -> tuple[list[CairnServer], CairnServer]:
    """The replicas (one on SQLite, two on PostgreSQL), keys re-seeded at FIRST_VERSION, and
    the front the agents use: the server itself, or a round-robin balancer whose URL is every
    replica's public URL (the issuer)."""
    env = server_env(CAIRN_OIDC_MAX_TOKEN_TTL=f"{TOKEN_TTL_S}s")
    if backend == "postgres":  # blobs the replicas share: in the database
        env["CAIRN_BLOB_STORE"] = "database"
    first = server_factory(backend, env=env)
    first.stop()
    url = first.database_url or sqlite_url(first.data_dir)
    seed_first_version(url, secret_of(first), FIRST_VERSION)
    if backend != "postgres":
        return [first.start()], first
    second = CairnServer(
        data_dir=tmp_path / "replica-b",
        database_url=first.database_url,
        admin_token=admin_token,
        env={**env, "CAIRN_SECRET_KEY": secret_of(first)},
        port=processes.free_port(),
    )
    balancer = RoundRobin([first.port, second.port])
    stack.callback(balancer.close)
    # The front: the first server's address book (its dev CA) at the balancer's port.
    front = dataclasses.replace(first, port=balancer.port, _proc=None, _starts=0)
    for server in (first, second):
        server.extra_args = ("--public-url", front.url)  # the last --public-url wins
    # One certificate for the public name, on both replicas.
    shutil.copytree(first.data_dir / "tls", second.data_dir / "tls")
    first.start()
    stack.callback(second.stop)
    second.start()
    return [first, second], front


def versions_by_kid(server: CairnServer, admin_token: str) -> dict[str, tuple[int, str]]:
    with server.client(admin_token) as api:
        return {key["kid"]: (key["version"], key["state"]) for key in admin_keys(api)}


def test_tokens_of_20_runs_verify_on_every_replica_while_keys_rotate(
    backend: str,
    server_factory: Callable[..., CairnServer],
    admin_token: str,
    agents: list[AgentProcess],
    tmp_path: Path,
) -> None:
    out = tmp_path / "tokens"
    out.mkdir()
    cli_config = run_cli_config(tmp_path / "run.tfrc", build_provider_mirror(tmp_path / "mirror"))
    with contextlib.ExitStack() as stack:
        servers, front = start_site(backend, server_factory, admin_token, tmp_path, stack)
        home = servers[0]
        issuer = front.url
        replicas = [replica_of(s, f"replica {i}", issuer) for i, s in enumerate(servers)]
        db_url = home.database_url or sqlite_url(home.data_dir)
        keys = versions_by_kid(home, admin_token)
        assert sorted(keys.values()) == [(8, "active"), (9, "next")], keys
        jwks_at_start = {key["kid"] for key in replicas[0].jwks()["keys"]}

        api = stack.enter_context(home.client(admin_token))
        org = tfe_api.create_organization(api, tfe_api.unique_name("rotation"))
        pool_id, pool_token = create_pool(api, org)
        names = [f"ws-{i:02d}" for i in range(RUNS)]
        ws_ids: dict[str, str] = {}
        for name in names:
            ws_id = agent_workspace(api, org, pool_id, name, **{"auto-apply": True})
            for key, value in (
                ("TFC_WORKLOAD_IDENTITY_AUDIENCE", AUDIENCE),
                (f"TFC_WORKLOAD_IDENTITY_AUDIENCE_{TAG}", AUDIENCE_TAGGED),
            ):
                attributes = {"key": key, "value": value, "category": "env"}
                tfe_api.document(
                    api.post(
                        f"/api/v2/workspaces/{ws_id}/vars",
                        json={"data": {"type": "vars", "attributes": attributes}},
                        headers={"Content-Type": tfe_api.JSONAPI},
                    ),
                    201,
                )
            ws_ids[name] = ws_id
        configs = {n: upload_config(api, ws_ids[n], probe(out, n).encode()) for n in names}

        for letter in "ab":
            agents.append(
                start_agent(
                    front,
                    pool_token,
                    f"agent-{letter}",
                    tmp_path / letter,
                    tf_cli_config=cli_config,
                )
            )
        # Stopped before the replicas (the stack unwinds first): an agent whose server is gone
        # retries its deregistration for a while.
        stack.callback(stop_all, agents, now=True)
        wait_registered(api, pool_id, 2, agents)
        runs = {name: create_run(api, ws_ids[name], configs[name]) for name in names}
        checks = Checks(replicas, runs)

        stop = threading.Event()
        late = threading.Thread(target=checks.run_late, args=(stop,), daemon=True)
        late.start()
        rotations: list[tuple[float, int]] = []  # (when, active version after)
        rotation_errors: list[str] = []
        delivered: list[str] = []

        def rotator() -> None:
            last = 0.0
            try:
                for n in range(ROTATIONS):
                    while len(delivered) < ROTATE_EVERY_RUNS * (n + 1) or (
                        time.monotonic() - last < ROTATE_MIN_GAP_S
                    ):
                        if stop.is_set():
                            return
                        time.sleep(0.05)
                    if n == 2:  # 10 is active, 11 next: a long history numbers the next 98
                        seed_retired_history(db_url, HISTORY)
                    with servers[n % len(servers)].client(admin_token) as admin:
                        answer = rotate(admin, "graceful", force=True)
                    if answer.status_code != 200:
                        rotation_errors.append(f"rotation {n + 1}: {answer.text}")
                        return
                    doc = answer.json()["data"]
                    assert doc["rotation"]["forced"] is True
                    version = next(k["version"] for k in doc["keys"] if k["state"] == "active")
                    rotations.append((time.monotonic(), version))
                    last = time.monotonic()
            except Exception as exc:
                rotation_errors.append(f"{type(exc).__name__}: {exc}")

        rotating = threading.Thread(target=rotator, daemon=True)
        rotating.start()
        try:

            def collect() -> bool | None:
                for agent in agents:
                    assert agent.proc.poll() is None, f"{agent.name} exited:\n{agent.output()}"
                for name in names:
                    path = out / name
                    if name in delivered or not path.exists():
                        continue
                    token, tagged = path.read_text().split()
                    checks.first(name, [(token, AUDIENCE), (tagged, AUDIENCE_TAGGED)])
                    delivered.append(name)
                return True if len(delivered) == RUNS else None

            wait_for(
                collect,
                timeout=240,
                interval=0.2,
                what=lambda: (
                    f"{RUNS} runs' tokens (delivered: {delivered}; rotations: "
                    f"{rotations}; {rotation_errors})"
                ),
            )
            for name in names:
                wait_status(api, runs[name], ["applied"], timeout=60)
            rotating.join(timeout=30)
        finally:
            stop.set()
            late.join(timeout=TOKEN_TTL_S + 30)

        assert not rotation_errors, rotation_errors
        assert [version for _, version in rotations] == [9, 10, 11, 98, 99, 100], rotations

        assert not late.is_alive() and not checks.late, "every token verified before expiry"
        assert checks.made == RUNS * 2 * 2 * len(replicas), checks.made
        assert checks.failures == [], (
            f"{len(checks.failures)} of {checks.made} verifications failed:\n"
            + "\n".join(checks.failures[:20])
        )

        # The rotations really happened under the runs: several keys signed their tokens,
        # among them keys that did not exist when the runs started — a verifier that kept the
        # JWKS it had fetched then rejects those tokens.
        keys = versions_by_kid(home, admin_token)
        signing_versions = sorted(keys[kid][0] for kid in checks.kids)
        assert len(checks.kids) >= 4, f"tokens signed by versions {signing_versions} only"
        stale = sorted(kid for kid in checks.kids if kid not in jwks_at_start)
        assert stale, f"no token signed by a key newer than the start (versions {signing_versions})"
        # Every replica serves the same JWKS at the end: 8 → 11 and 98 → 101, the history out.
        final = [sorted(k["kid"] for k in r.jwks()["keys"]) for r in replicas]
        assert all(kids == final[0] for kids in final), final
        published = sorted(keys[kid][0] for kid in final[0])
        assert published == [8, 9, 10, 11, 98, 99, 100, 101], published
        # TFE's bug picked the "newest" version sorted as text: 99 here, a retired key. cairn
        # signs with the active key, chosen by state: 100, which signed the last tokens.
        assert max(published, key=str) == 99
        assert 100 in signing_versions, signing_versions
        by_version = {version: (kid, state) for kid, (version, state) in keys.items()}
        assert by_version[99][1] == "retired" and by_version[100][1] == "active"
        # On PostgreSQL both replicas handed tokens to the runs (the balancer's doing).
        minted_by = [r.log_path.read_text().count("/workload-identity") for r in servers]
        assert all(minted_by), f"workload-identity calls per replica: {minted_by}"
        # The JWKS bound holds: a seventh forced rotation within the retirement window waits.
        refused = rotate(api, "graceful", force=True)
        assert refused.status_code == 409, refused.text
        assert "limited to 8" in refused.text
