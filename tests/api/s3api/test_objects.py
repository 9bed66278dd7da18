"""The S3 endpoint through boto3 (header-signed) and presigned URLs: state objects land in the
workspace's history, listing, conditional writes, lock objects."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from tests.api.s3api.conftest import S3Env
from tests.support.app import CT


def state(serial: int, lineage: str = "11111111-2222-3333-4444-555555555555") -> bytes:
    return json.dumps(
        {
            "version": 4,
            "terraform_version": "1.0.3",
            "serial": serial,
            "lineage": lineage,
            "outputs": {"x": {"value": serial, "type": "number"}},
            "resources": [],
        }
    ).encode()


def code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def test_put_get_head_list_and_tfe_view(s3: S3Env) -> None:
    client = s3.client()
    put = client.put_object(Bucket=s3.org, Key="network/terraform.tfstate", Body=state(1))
    import hashlib

    md5 = hashlib.md5(state(1)).hexdigest()
    assert put["ETag"] == f'"{md5}"'
    got = client.get_object(Bucket=s3.org, Key="network/terraform.tfstate")
    assert got["Body"].read() == state(1)
    assert client.head_object(Bucket=s3.org, Key="network/terraform.tfstate")["ETag"] == f'"{md5}"'
    client.put_object(Bucket=s3.org, Key="env:/dev/network/terraform.tfstate", Body=state(1))
    listed = client.list_objects_v2(Bucket=s3.org, Prefix="env:/")
    assert [o["Key"] for o in listed["Contents"]] == ["env:/dev/network/terraform.tfstate"]
    v1 = client.list_objects(Bucket=s3.org, Prefix="")
    assert [o["Key"] for o in v1["Contents"]] == [
        "env:/dev/network/terraform.tfstate",
        "network/terraform.tfstate",
    ]
    page = client.list_objects_v2(Bucket=s3.org, MaxKeys=1)
    assert page["IsTruncated"] and len(page["Contents"]) == 1
    rest = client.list_objects_v2(
        Bucket=s3.org, MaxKeys=1, ContinuationToken=page["NextContinuationToken"]
    )
    assert rest["Contents"][0]["Key"] == "network/terraform.tfstate"
    # The same history through the TFE API; the workspace was made (local execution).
    ws = s3.api.get(f"/api/v2/organizations/{s3.org}/workspaces/network-terraform").json()
    assert ws["data"]["attributes"]["execution-mode"] == "local"
    assert not ws["data"]["attributes"]["locked"]
    ws_id = ws["data"]["id"]
    cur = s3.api.get(f"/api/v2/workspaces/{ws_id}/current-state-version").json()
    assert cur["data"]["attributes"]["serial"] == 1
    # A newer serial is accepted, an older one refused (the state rules apply).
    client.put_object(Bucket=s3.org, Key="network/terraform.tfstate", Body=state(2))
    with pytest.raises(ClientError) as exc:
        client.put_object(Bucket=s3.org, Key="network/terraform.tfstate", Body=state(1))
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 409
    with pytest.raises(ClientError) as exc:
        client.get_object(Bucket=s3.org, Key="missing.tfstate")
    assert code(exc) == "NoSuchKey"
    with pytest.raises(ClientError) as exc:
        client.list_objects_v2(Bucket="no-such-org")
    assert code(exc) == "NoSuchBucket"


def test_presigned_urls(s3: S3Env) -> None:
    client = s3.client()
    client.put_object(Bucket=s3.org, Key="app.tfstate", Body=state(3))
    url = client.generate_presigned_url(
        "get_object", Params={"Bucket": s3.org, "Key": "app.tfstate"}, ExpiresIn=300
    )
    got = httpx.get(url)
    assert got.content == state(3), got.text
    tampered = httpx.get(url[:-1] + ("0" if url[-1] != "0" else "1"))
    assert tampered.status_code == 403
    assert "<Code>SignatureDoesNotMatch</Code>" in tampered.text
    put_url = client.generate_presigned_url(
        "put_object", Params={"Bucket": s3.org, "Key": "app.tfstate"}, ExpiresIn=300
    )
    assert httpx.put(put_url, content=state(4)).status_code == 200
    assert client.get_object(Bucket=s3.org, Key="app.tfstate")["Body"].read() == state(4)


def test_conditional_puts(s3: S3Env) -> None:
    client = s3.client()
    key = "cond.tfstate"
    client.put_object(Bucket=s3.org, Key=key, Body=state(1), IfNoneMatch="*")
    with pytest.raises(ClientError) as exc:
        client.put_object(Bucket=s3.org, Key=key, Body=state(2), IfNoneMatch="*")
    assert code(exc) == "PreconditionFailed"
    with pytest.raises(ClientError) as exc:
        client.put_object(Bucket=s3.org, Key=key, Body=state(2), IfMatch='"0123"')
    assert code(exc) == "PreconditionFailed"
    etag = client.head_object(Bucket=s3.org, Key=key)["ETag"]
    client.put_object(Bucket=s3.org, Key=key, Body=state(2), IfMatch=etag)
    assert client.get_object(Bucket=s3.org, Key=key)["Body"].read() == state(2)


def test_lock_objects_are_the_workspace_lock(s3: S3Env) -> None:
    client = s3.client()
    key = "locked.tfstate"
    client.put_object(Bucket=s3.org, Key=key, Body=state(1))
    info: dict[str, Any] = {
        "ID": "a3f1c2d4-0000-1111-2222-333344445555",
        "Operation": "OperationTypeApply",
    }
    client.put_object(
        Bucket=s3.org, Key=key + ".tflock", Body=json.dumps(info).encode(), IfNoneMatch="*"
    )
    ws = s3.api.get(f"/api/v2/organizations/{s3.org}/workspaces/locked").json()["data"]
    assert ws["attributes"]["locked"]
    got = json.loads(client.get_object(Bucket=s3.org, Key=key + ".tflock")["Body"].read())
    assert got == info
    with pytest.raises(ClientError) as exc:
        client.put_object(Bucket=s3.org, Key=key + ".tflock", Body=b"{}", IfNoneMatch="*")
    assert code(exc) == "PreconditionFailed"
    client.put_object(Bucket=s3.org, Key=key, Body=state(2))  # the holder writes
    # Someone else (a cairn API lock) cannot write while the S3 lock is held... and the S3
    # holder's delete releases it.
    client.delete_object(Bucket=s3.org, Key=key + ".tflock")
    ws = s3.api.get(f"/api/v2/workspaces/{ws['id']}").json()["data"]
    assert not ws["attributes"]["locked"]
    with pytest.raises(ClientError) as exc:
        client.get_object(Bucket=s3.org, Key=key + ".tflock")
    assert code(exc) == "NoSuchKey"
    # Locked through the TFE API by the admin's token: another identity's S3 write is refused.
    lock = s3.api.post(f"/api/v2/workspaces/{ws['id']}/actions/lock", json={}, headers=CT)
    assert lock.status_code == 200
    assert client.head_object(Bucket=s3.org, Key=key + ".tflock")["ContentLength"] > 0
