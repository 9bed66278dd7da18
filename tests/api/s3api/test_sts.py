"""STS AssumeRoleWithWebIdentity with a cairn id-token, through botocore's own web-identity
credential provider (AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN, AWS_ENDPOINT_URL_STS)."""

from __future__ import annotations

from pathlib import Path

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.api.s3api.conftest import S3Env
from tests.api.s3api.test_objects import state
from tests.support.app import CT


def _workspace(s3: S3Env, name: str) -> str:
    body = {"data": {"type": "workspaces", "attributes": {"name": name}}}
    made = s3.api.post(f"/api/v2/organizations/{s3.org}/workspaces", json=body, headers=CT)
    assert made.status_code == 201, made.text
    ws_id: str = made.json()["data"]["id"]
    return ws_id


def _id_token(s3: S3Env, ws_id: str, phase: str, audience: str | None = None) -> str:
    body = {"audience": audience or f"{s3.app.url}/s3", "run_phase": phase}
    minted = s3.api.post(f"/api/cairn/v1/workspaces/{ws_id}/id-tokens", json=body)
    assert minted.status_code == 201, minted.text
    token: str = minted.json()["token"]
    return token


def _client(
    s3: S3Env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, token: str, role: str
) -> object:
    token_file = tmp_path / f"token-{len(list(tmp_path.iterdir()))}"
    token_file.write_text(token)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("AWS_ROLE_ARN", role)
    monkeypatch.setenv("AWS_ROLE_SESSION_NAME", "ci-job")
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", f"{s3.url}/s3/sts")
    return boto3.Session(region_name="us-east-1").client(
        "s3",
        endpoint_url=f"{s3.url}/s3",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


def test_web_identity_credentials(
    s3: S3Env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ws_id = _workspace(s3, "app")
    role = f"arn:cairn:iam::{s3.org}:role/workspace/app"
    apply: object = _client(s3, monkeypatch, tmp_path, _id_token(s3, ws_id, "apply"), role)
    apply.put_object(Bucket=s3.org, Key="app.tfstate", Body=state(1))  # type: ignore[attr-defined]
    got = apply.get_object(Bucket=s3.org, Key="app.tfstate")  # type: ignore[attr-defined]
    assert got["Body"].read() == state(1)
    cur = s3.api.get(f"/api/v2/workspaces/{ws_id}/current-state-version").json()
    assert cur["data"]["attributes"]["serial"] == 1

    # A plan phase reads, but does not write.
    plan: object = _client(s3, monkeypatch, tmp_path, _id_token(s3, ws_id, "plan"), role)
    assert plan.get_object(Bucket=s3.org, Key="app.tfstate")["Body"].read() == state(1)  # type: ignore[attr-defined]
    with pytest.raises(ClientError) as exc:
        plan.put_object(Bucket=s3.org, Key="app.tfstate", Body=state(2))  # type: ignore[attr-defined]
    assert exc.value.response["Error"]["Code"] == "AccessDenied"

    # Another workspace: the role does not trust this token.
    other = _client(
        s3,
        monkeypatch,
        tmp_path,
        _id_token(s3, ws_id, "apply"),
        f"arn:cairn:iam::{s3.org}:role/workspace/other",
    )
    with pytest.raises(ClientError) as exc:
        other.list_objects_v2(Bucket=s3.org)  # type: ignore[attr-defined]
    assert exc.value.response["Error"]["Code"] == "AccessDenied"


def test_sts_refuses_bad_tokens(s3: S3Env) -> None:
    ws_id = _workspace(s3, "app2")
    form = {
        "Action": "AssumeRoleWithWebIdentity",
        "Version": "2011-06-15",
        "RoleArn": f"arn:cairn:iam::{s3.org}:role/workspace/app2",
        "RoleSessionName": "x",
    }
    wrong_aud = _id_token(s3, ws_id, "apply", audience="sts.amazonaws.com")
    for token, code in [("not-a-jwt", "InvalidIdentityToken"), (wrong_aud, "InvalidIdentityToken")]:
        answer = httpx.post(f"{s3.url}/s3/sts", data={**form, "WebIdentityToken": token})
        assert answer.status_code == 400
        assert f"<Code>{code}</Code>" in answer.text
    answer = httpx.post(f"{s3.url}/s3/sts", data={**form, "Action": "AssumeRole"})
    assert "<Code>InvalidAction</Code>" in answer.text
