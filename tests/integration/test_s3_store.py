"""`cairn serve --blob-store s3` against a real S3 API (moto's server on loopback).

Real server processes, real HTTP: state versions uploaded the ways Terraform uploads them
(inline, and the two-step hosted upload) land in the bucket under their content address and
download byte for byte; a missing setting or bucket stops the server at start with a message
saying what to set; S3 throttling or an outage is a JSON:API 503 (never a 500, never a
traceback, never a credential in the log) and nothing is committed; a server killed (SIGKILL)
in the middle of a multipart upload loses no acknowledged version and leaves no row without
bytes; and two replicas on PostgreSQL share one bucket.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import TEST_SECRET_KEY
from tests.integration.test_crash_upload import (
    KILL_AFTER,
    PausingBody,
    assert_version1_intact,
    crash,
    hosted_upload,
    inline_document,
    large_version,
    post_inline,
    put_bytes,
    seed,
    small_version_2,
    wait_for,
)
from tests.support import api as tfe
from tests.support.postgres import PostgresCluster
from tests.support.processes import free_port
from tests.support.s3 import ACCESS_KEY, FaultyS3, MotoS3, running_moto
from tests.support.server import CairnServer, cairn_executable
from tests.support.statefile import (
    md5_hex,
    new_lineage,
    null_resource,
    post_version,
    state_file,
    upload_inline,
    version_body,
)
from tests.support.terraform import TerraformCLI, build_provider_mirror, remote_backend

PREFIX = "states/"


@pytest.fixture(scope="module")
def moto_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    yield from running_moto(tmp_path_factory)


def s3_env(moto: MotoS3, bucket: str, endpoint: str | None = None) -> dict[str, str]:
    return {
        **moto.env(),
        "CAIRN_BLOB_STORE": "s3",
        "CAIRN_S3_BUCKET": bucket,
        "CAIRN_S3_ENDPOINT": endpoint or moto.endpoint,
        "CAIRN_S3_PREFIX": PREFIX,
    }


def s3_server(
    root: Path, moto: MotoS3, bucket: str, admin_token: str, **kwargs: Any
) -> CairnServer:
    env = {**s3_env(moto, bucket, kwargs.pop("endpoint", None)), **kwargs.pop("env", {})}
    return CairnServer(data_dir=root, plain_http=True, admin_token=admin_token, env=env, **kwargs)


@pytest.fixture(scope="module")
def bucket(moto_s3: MotoS3) -> str:
    return moto_s3.create_bucket("cairn-states")


@pytest.fixture(scope="module")
def srv(
    moto_s3: MotoS3, bucket: str, admin_token: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CairnServer]:
    """One plain-HTTP server on SQLite with its blobs in the module's bucket."""
    server = s3_server(tmp_path_factory.mktemp("s3") / "data", moto_s3, bucket, admin_token)
    try:
        server.start()
        assert "blobs:     s3" in server.output(), server.output()
        assert f"s3://{bucket}/{PREFIX} at {moto_s3.endpoint}" in server.output()
        yield server
    finally:
        server.stop()


@pytest.fixture
def running(srv: CairnServer) -> CairnServer:
    """The module's server, running (the crash test leaves it killed)."""
    if not srv.running:
        srv.start()
    return srv


def blob_keys(moto: MotoS3, bucket: str) -> list[str]:
    return moto.keys(bucket, f"{PREFIX}sha256/")


def workspace(api: httpx.Client, name: str = "s3") -> str:
    org = tfe.create_organization(api, tfe.unique_name(name))
    ws = tfe.create_workspace(api, org, "app")
    tfe.workspace_action(api, ws, "lock")
    return ws


def test_inline_and_hosted_uploads_roundtrip_through_the_bucket(
    running: CairnServer, admin_token: str, moto_s3: MotoS3, bucket: str
) -> None:
    lineage = new_lineage()
    small = state_file(1, lineage, outputs={"a": {"value": "b", "type": "string"}})
    # Large enough for a multipart upload (three 8 MiB parts).
    large = state_file(2, lineage, resources=[null_resource("big")], pad_to=20 * 1024 * 1024)
    with running.client(admin_token) as api:
        ws = workspace(api)
        v1 = upload_inline(api, ws, small)
        pending = hosted_upload(api, ws, large)
        tfe.expect(put_bytes(pending["attributes"]["hosted-state-upload-url"], large), 200)
        current = tfe.current_state_version(api, ws)
        assert current["id"] == pending["id"]
        assert current["attributes"]["md5"] == md5_hex(large)
        assert tfe.download_state(api, current) == large
        first = tfe.document(api.get(f"/api/v2/state-versions/{v1['id']}"), 200)["data"]
        assert tfe.download_state(api, first) == small
        outputs = tfe.document(api.get(f"/api/v2/state-versions/{v1['id']}/outputs"), 200)
        assert [o["attributes"]["name"] for o in outputs["data"]] == ["a"]
    keys = blob_keys(moto_s3, bucket)
    for raw in (small, large):
        assert f"{PREFIX}sha256/{hashlib.sha256(raw).hexdigest()}" in keys
    assert moto_s3.uploads(bucket) == []
    assert moto_s3.keys(bucket, f"{PREFIX}tmp/") == []


def test_terraform_state_push_and_pull_shape(running: CairnServer, admin_token: str) -> None:
    """What `terraform state push`/`pull` do through the remote backend: create a version
    with the state inline, read the current version, download its `hosted-state-download-url`
    (and the JSON state when given)."""
    lineage = new_lineage()
    raw = state_file(1, lineage, resources=[null_resource("web", 3)])
    json_state = json.dumps({"format_version": "1.0", "values": {}}).encode()
    with running.client(admin_token) as api:
        ws = workspace(api, "push")
        body = version_body(raw)
        body["data"]["attributes"]["json-state"] = base64.b64encode(json_state).decode()
        created = tfe.document(post_version(api, ws, body), 201)["data"]
        current = tfe.current_state_version(api, ws)
        assert current["id"] == created["id"]
        url = current["attributes"]["hosted-state-download-url"]
        assert tfe.expect(api.get(url), 200).content == raw
        json_url = current["attributes"]["hosted-json-state-download-url"]
        assert tfe.expect(api.get(json_url), 200).content == json_state


@pytest.mark.e2e
def test_terraform_apply_and_pull_with_blobs_in_s3(
    running: CairnServer, admin_token: str, moto_s3: MotoS3, bucket: str, tmp_path: Path
) -> None:
    """The real Terraform 1.0.3 CLI (`backend "remote"`) applies, re-applies and pulls its
    state while the bytes live in the bucket."""
    cli = TerraformCLI.for_plain_http(
        tmp_path,
        api_url=running.api_url,
        token=admin_token,
        mirror=build_provider_mirror(tmp_path / "mirror"),
    )
    with running.client(admin_token) as api:
        org = tfe.create_organization(api, tfe.unique_name("tf-s3"))
        backend = remote_backend(cli.hostname, org, name="app")
        project = cli.project("app", TERRAFORM_CONFIG.replace("BACKEND", backend))
        project.init()
        project.apply()
        project.apply("-var", "generation=2")
        pulled = project.state_pull()
        instances = pulled["resources"][0]["instances"]
        assert [i["attributes"]["triggers"]["generation"] for i in instances] == ["2"] * 5
        ws_id = tfe.read_workspace(api, org, "app")["id"]
        current = tfe.current_state_version(api, ws_id)
        downloaded = tfe.download_state(api, current)
        assert json.loads(downloaded) == pulled
    digest = hashlib.sha256(downloaded).hexdigest()
    assert f"{PREFIX}sha256/{digest}" in blob_keys(moto_s3, bucket)


TERRAFORM_CONFIG = """\
terraform {
  required_providers {
    null = {
      source  = "hashicorp/null"
      version = "2.1.2"
    }
  }
BACKEND}

variable "generation" {
  type    = string
  default = "1"
}

resource "null_resource" "item" {
  count    = 5
  triggers = { generation = var.generation }
}
"""


def test_s3_outage_is_a_503_and_commits_nothing(
    moto_s3: MotoS3, admin_token: str, tmp_path: Path
) -> None:
    bucket = moto_s3.create_bucket("cairn-outage")
    proxy = FaultyS3(moto_s3)
    # At debug level, where botocore would log signed request headers if cairn let it.
    server = s3_server(
        tmp_path / "data",
        moto_s3,
        bucket,
        admin_token,
        endpoint=proxy.endpoint,
        env={"CAIRN_LOG_LEVEL": "debug"},
    )
    try:
        server.start()
        lineage = new_lineage()
        raw1 = state_file(1, lineage)
        raw2 = state_file(2, lineage, resources=[null_resource("x")])
        with server.client(admin_token) as api:
            ws = workspace(api, "outage")
            v1 = upload_inline(api, ws, raw1)
            for status in (503, 500):
                proxy.failing = status
                answer = post_version(api, ws, version_body(raw2), 503)
                assert answer.status_code == 503, answer.text
                error = answer.json()["errors"][0]
                assert error["status"] == "503"
                assert "S3 blob store could not" in error["detail"], error
                assert answer.headers["retry-after"]
                download = api.get(f"/api/v2/state-versions/{v1['id']}/download")
                assert download.status_code == 503, download.text
                assert "try again" in download.json()["errors"][0]["detail"]
            proxy.failing = None
            assert tfe.current_state_version(api, ws)["id"] == v1["id"]
            assert tfe.download_state(api, tfe.current_state_version(api, ws)) == raw1
            v2 = upload_inline(api, ws, raw2)
            assert tfe.current_state_version(api, ws)["id"] == v2["id"]
        log = server.log_path.read_text(errors="replace")
        assert "Traceback" not in log
        assert moto_s3.secret not in log and ACCESS_KEY not in log
        assert "could not store a blob" in log or "S3 request failed" in log
        assert '"status": 500' not in log and '"status":500' not in log
    finally:
        server.stop()
        proxy.close()


def test_start_refuses_s3_without_a_bucket_or_with_a_missing_one(
    moto_s3: MotoS3, tmp_path: Path
) -> None:
    def start(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        args = [str(cairn_executable()), "serve", "--data-dir", str(tmp_path / "d")]
        args += ["--plain-http", "--listen", f"127.0.0.1:{free_port()}", "--blob-store", "s3"]
        return subprocess.run(
            args, env=env, capture_output=True, text=True, timeout=60, check=False
        )

    base = {k: v for k, v in CairnServer(tmp_path).environment().items()}
    no_bucket = start({**base, **moto_s3.env()})
    assert no_bucket.returncode == 2, no_bucket
    assert "CAIRN_S3_BUCKET" in no_bucket.stderr

    env = {**base, **s3_env(moto_s3, "no-such-cairn-bucket")}
    missing = start(env)
    assert missing.returncode == 2, missing
    assert "s3://no-such-cairn-bucket/states/" in missing.stderr
    assert moto_s3.endpoint in missing.stderr and "does not exist" in missing.stderr
    assert moto_s3.secret not in missing.stderr + missing.stdout


def test_kill_during_multipart_upload_keeps_previous_version(
    running: CairnServer, admin_token: str, moto_s3: MotoS3, bucket: str
) -> None:
    """SIGKILL while a 50 MB hosted upload is streaming into S3 as a multipart upload."""
    srv = running
    with srv.client(admin_token) as api:
        seeded = seed(api)
        raw2 = large_version(seeded)
        pending = hosted_upload(api, seeded.workspace_id, raw2)
    url = pending["attributes"]["hosted-state-upload-url"]

    def multipart_started() -> bool:
        return any(u["parts"] > 0 for u in moto_s3.uploads(bucket))

    with ThreadPoolExecutor(max_workers=1) as pool, PausingBody(raw2, KILL_AFTER) as body:
        request = pool.submit(put_bytes, url, body)
        assert body.paused.wait(timeout=30), "the upload never got going"
        wait_for(multipart_started, "a part of the upload is in S3")
        crash(srv, body, request)

    srv.start()
    assert_version1_intact(srv, admin_token, seeded)
    # Every version the server lists has its bytes in the bucket.
    with srv.client(admin_token) as api:
        listing = tfe.document(
            api.get(f"/api/v2/workspaces/{seeded.workspace_id}/state-versions"), 200
        )
        for version in listing["data"]:
            assert tfe.download_state(api, version)
        raw2_small = small_version_2(seeded)
        retry = hosted_upload(api, seeded.workspace_id, raw2_small)
        tfe.expect(put_bytes(retry["attributes"]["hosted-state-upload-url"], raw2_small), 200)
        current = tfe.current_state_version(api, seeded.workspace_id)
        assert current["id"] == retry["id"]
        assert tfe.download_state(api, current) == raw2_small
        tfe.workspace_action(api, seeded.workspace_id, "unlock")
    # The killed upload's parts are still in S3, under tmp/, until housekeeping aborts them.
    assert all(u["Key"].startswith(f"{PREFIX}tmp/upload-") for u in moto_s3.uploads(bucket))


def test_kill_during_inline_upload_into_s3_keeps_previous_version(
    running: CairnServer, admin_token: str, moto_s3: MotoS3, bucket: str
) -> None:
    """The inline path Terraform 1.0.3 uses: the state is streamed out of the JSON:API body
    into a multipart upload; SIGKILL once parts of it are in S3."""
    srv = running
    with srv.client(admin_token) as api:
        seeded = seed(api)
    before = {u["Key"] for u in moto_s3.uploads(bucket)}

    def new_parts_in_s3() -> bool:
        return any(u["parts"] > 0 and u["Key"] not in before for u in moto_s3.uploads(bucket))

    document = inline_document(large_version(seeded))
    with ThreadPoolExecutor(max_workers=1) as pool, PausingBody(document, 2 * KILL_AFTER) as body:
        request = pool.submit(post_inline, srv, admin_token, seeded.workspace_id, body)
        assert body.paused.wait(timeout=30), "the upload never got going"
        wait_for(new_parts_in_s3, "a part of the inline upload is in S3")
        crash(srv, body, request)

    srv.start()
    assert_version1_intact(srv, admin_token, seeded)
    with srv.client(admin_token) as api:
        v2 = upload_inline(api, seeded.workspace_id, small_version_2(seeded))
        assert tfe.current_state_version(api, seeded.workspace_id)["id"] == v2["id"]
        tfe.workspace_action(api, seeded.workspace_id, "unlock")


@pytest.mark.postgres
def test_two_replicas_on_postgresql_share_the_bucket(
    request: pytest.FixtureRequest,
    moto_s3: MotoS3,
    admin_token: str,
    tmp_path: Path,
) -> None:
    cluster: PostgresCluster = request.getfixturevalue("pg")
    database_url = cluster.create_database("s3replicas")
    bucket = moto_s3.create_bucket("cairn-replicas")
    replicas = [
        s3_server(
            tmp_path / f"replica-{i}",
            moto_s3,
            bucket,
            admin_token,
            database_url=database_url,
            env={"CAIRN_SECRET_KEY": TEST_SECRET_KEY},
        )
        for i in range(2)
    ]
    try:
        for replica in replicas:
            replica.start()
        with replicas[0].client(admin_token) as a, replicas[1].client(admin_token) as b:
            ws = workspace(a, "replicas")
            lineage = new_lineage()
            upload_inline(a, ws, state_file(1, lineage))
            # Written through one replica, read through the other.
            raw = state_file(2, lineage, resources=[null_resource("shared", 2)])
            upload_inline(b, ws, raw)
            assert tfe.download_state(a, tfe.current_state_version(a, ws)) == raw
            # The same serial with different bytes at once: exactly one wins.
            states = [
                state_file(3, lineage, resources=[null_resource(f"writer-{i}")]) for i in range(2)
            ]
            with ThreadPoolExecutor(max_workers=2) as pool:
                answers = list(
                    pool.map(
                        lambda pair: post_version(pair[0], ws, version_body(pair[1]), 201, 409),
                        zip([a, b], states, strict=True),
                    )
                )
            statuses = sorted(r.status_code for r in answers)
            assert statuses == [201, 409], [r.text[:300] for r in answers]
            winner = states[[r.status_code for r in answers].index(201)]
            for api in (a, b):
                current = tfe.current_state_version(api, ws)
                assert current["attributes"]["md5"] == md5_hex(winner)
                assert tfe.download_state(api, current) == winner
    finally:
        for replica in replicas:
            replica.stop()
