"""Refusals with S3's error codes: wrong secret, expired credentials, a skewed clock, a revoked
source token, an organization scope; and the credentials exchange's own validation."""

from __future__ import annotations

from datetime import timedelta

import pytest
from botocore.exceptions import ClientError

from tests.api.s3api.conftest import S3Env
from tests.support.app import CT


def code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def test_wrong_secret_expired_skewed(s3: S3Env) -> None:
    creds = s3.credentials()
    with pytest.raises(ClientError) as exc:
        s3.client({**creds, "SecretAccessKey": creds["SecretAccessKey"] + "x"}).list_objects_v2(
            Bucket=s3.org
        )
    assert code(exc) == "SignatureDoesNotMatch"
    with pytest.raises(ClientError) as exc:
        s3.client({**creds, "AccessKeyId": "AKIAIOSFODNN7EXAMPLE"}).list_objects_v2(Bucket=s3.org)
    assert code(exc) == "InvalidAccessKeyId"
    s3.client(creds).list_objects_v2(Bucket=s3.org)
    s3.app.advance(timedelta(minutes=16))  # the server's clock runs ahead of the client's
    with pytest.raises(ClientError) as exc:
        s3.client(creds).list_objects_v2(Bucket=s3.org)
    assert code(exc) == "RequestTimeTooSkewed"
    # Credentials issued 16 minutes ago for 15 minutes have expired (the clocks agree).
    s3.app.advance(timedelta(minutes=-32))
    short = s3.credentials(None, **{"duration-seconds": 900})
    s3.app.advance(timedelta(minutes=16))
    with pytest.raises(ClientError) as exc:
        s3.client(short).list_objects_v2(Bucket=s3.org)
    assert code(exc) == "ExpiredToken"


def test_revoking_the_source_token_ends_the_credentials(s3: S3Env) -> None:
    body = {"data": {"type": "authentication-tokens", "attributes": {"description": "s3"}}}
    me = s3.api.get("/api/v2/account/details").json()["data"]["id"]
    made = s3.api.post(f"/api/v2/users/{me}/authentication-tokens", json=body, headers=CT).json()
    token, token_id = made["data"]["attributes"]["token"], made["data"]["id"]
    creds = s3.credentials(token)
    client = s3.client(creds)
    client.list_objects_v2(Bucket=s3.org)
    assert s3.api.delete(f"/api/v2/authentication-tokens/{token_id}").status_code == 204
    with pytest.raises(ClientError) as exc:
        client.list_objects_v2(Bucket=s3.org)
    assert code(exc) == "InvalidToken"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_organization_scope_and_exchange_validation(s3: S3Env) -> None:
    scoped = s3.client(s3.credentials(organization=s3.org))
    scoped.list_objects_v2(Bucket=s3.org)
    with pytest.raises(ClientError) as exc:
        scoped.list_objects_v2(Bucket="other-org")
    assert code(exc) == "AccessDenied"
    for body, status in [
        ({"duration-seconds": 60}, 422),
        ({"duration-seconds": 13 * 3600}, 422),
        ({"duration-seconds": "3600"}, 422),
        ({"organization": "no-such-org-here"}, 404),
    ]:
        response = s3.api.post("/api/cairn/v1/s3-credentials", json=body)
        assert response.status_code == status, (body, response.text)
    assert s3.api.post("/api/cairn/v1/s3-credentials", content=b"x" * 5000).status_code == 413
    anonymous = s3.api.post("/api/cairn/v1/s3-credentials", headers={"Authorization": ""})
    assert anonymous.status_code == 401
    creds = s3.credentials(None, **{"duration-seconds": 7200})
    assert creds["AccessKeyId"].startswith("CAIRN") and len(creds["AccessKeyId"]) == 20
    assert creds["Expiration"].endswith("Z") and creds["Version"] == 1


def test_unsigned_requests_are_refused_in_xml(s3: S3Env) -> None:
    import httpx

    response = httpx.get(f"{s3.url}/s3/{s3.org}/x.tfstate")
    assert response.status_code == 403
    assert "<Code>AccessDenied</Code>" in response.text
    assert response.headers["x-amz-request-id"]
