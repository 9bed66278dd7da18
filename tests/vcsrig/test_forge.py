"""The fake forge answers like GitLab and GitHub, over real git repositories."""

from __future__ import annotations

import gzip
import io
import secrets
import subprocess
import tarfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.vcs.forge import Forge, GitHubApp, Repo
from tests.support.vcs.gitlab_op import GitLabOp

pytestmark = pytest.mark.e2e


def _repo(forge: Forge, files: dict[str, str | bytes | None] | None = None) -> Repo:
    return forge.create_repo(
        f"acme/infra-{secrets.token_hex(4)}", files or {"main.tf": "# main\n", "mod/a.tf": "a\n"}
    )


def _gl(forge: Forge, token: str, path: str, method: str = "GET", **kw: object) -> httpx.Response:
    return httpx.request(
        method,
        forge.gitlab_api_url + path,
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
        **kw,  # type: ignore[arg-type]
    )


def _gh(forge: Forge, token: str, path: str, method: str = "GET", **kw: object) -> httpx.Response:
    return httpx.request(
        method,
        forge.github_api_url + path,
        headers={"Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json"},
        timeout=10,
        **kw,  # type: ignore[arg-type]
    )


def _members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }


def _app_jwt(app: GitHubApp, *, key_pem: str | None = None, exp_in: int = 540) -> str:
    now = int(time.time())
    claims = {"iat": now - 60, "exp": now + exp_in, "iss": app.app_id}
    return jwt.encode(claims, key_pem or app.private_key_pem, algorithm="RS256")


def test_gitlab_archive_of_a_real_commit(forge: Forge, gitlab_op: GitLabOp) -> None:
    repo = _repo(forge)
    first = repo.head()
    second = repo.commit({"main.tf": "# changed\n", "mod/a.tf": None, "b.tf": "b\n"})
    token = gitlab_op.grant()["access_token"]
    resp = _gl(
        forge,
        token,
        f"/projects/{quote(repo.path, safe='')}/repository/archive.tar.gz",
        params={"sha": first},
    )
    assert resp.status_code == 200, resp.text
    prefix = f"{repo.name}-{first}/"
    assert _members(resp.content) == {prefix + "main.tf": b"# main\n", prefix + "mod/a.tf": b"a\n"}
    by_id = _gl(forge, token, f"/projects/{repo.project_id}/repository/archive.tar.gz?sha={second}")
    assert set(_members(by_id.content)) == {
        f"{repo.name}-{second}/main.tf",
        f"{repo.name}-{second}/b.tf",
    }
    gzip.decompress(by_id.content)  # a real gzip stream
    assert forge.archive_fetches(repo) == 2 and forge.archive_fetches(repo, first) == 1
    missing = _gl(forge, token, "/projects/acme%2Fnope")
    assert missing.status_code == 404 and missing.json() == {"message": "404 Project Not Found"}


def test_gitlab_archive_rate_limit(forge_factory: object, gitlab_op: GitLabOp) -> None:
    assert callable(forge_factory)
    own: Forge = forge_factory(gitlab_op)
    repo = _repo(own)
    token = own.add_pat("gitlab")
    own.set_archive_rate_limit(5)
    path = f"/projects/{repo.project_id}/repository/archive.tar.gz?sha={repo.head()}"
    codes = [_gl(own, token, path).status_code for _ in range(6)]
    assert codes == [200] * 5 + [429]
    assert own.archive_fetches(repo) == 5


def test_gitlab_tokens_statuses_hooks(forge: Forge, gitlab_op: GitLabOp) -> None:
    repo = _repo(forge)
    sha = repo.head()
    pat = forge.add_pat("gitlab", expires_at=datetime.now(UTC) + timedelta(days=30))
    me = _gl(forge, pat, "/personal_access_tokens/self")
    assert me.json()["active"] is True and me.json()["expires_at"]
    base = f"/projects/{repo.project_id}"
    posted = _gl(
        forge,
        pat,
        f"{base}/statuses/{sha}",
        "POST",
        data={"state": "pending", "name": "cairn/acme"},
    )
    assert posted.status_code == 201, posted.text
    again = _gl(
        forge,
        pat,
        f"{base}/statuses/{sha}",
        "POST",
        data={"state": "pending", "name": "cairn/acme"},
    )
    assert again.status_code == 400 and "Cannot transition status" in again.json()["message"]
    done = _gl(
        forge,
        pat,
        f"{base}/statuses/{sha}",
        "POST",
        json={"state": "success", "name": "cairn/acme", "target_url": "https://c/r"},
    )
    assert done.status_code == 201
    bad = _gl(forge, pat, f"{base}/statuses/{sha}", "POST", data={"state": "failure"})
    assert bad.status_code == 400
    assert [s.state for s in forge.statuses(repo, sha)] == ["pending", "success"]
    assert repo.commit_status(sha) == {"cairn/acme": "success"}
    hook = _gl(
        forge,
        pat,
        f"{base}/hooks",
        "POST",
        json={"url": "https://cairn.test/h", "token": "s3cret", "merge_requests_events": True},
    )
    assert hook.status_code == 201 and "token" not in hook.json()
    [record] = forge.hooks(repo)
    assert record.secret == "s3cret" and "merge_requests_events" in record.events
    assert _gl(forge, pat, f"{base}/hooks/{record.id}", "DELETE").status_code == 204
    assert _gl(forge, pat, f"{base}/hooks/{record.id}", "DELETE").status_code == 404
    assert forge.hooks(repo) == []
    read_only = forge.add_pat("gitlab", scopes=("read_api",))
    denied = _gl(forge, read_only, f"{base}/statuses/{sha}", "POST", data={"state": "running"})
    assert denied.status_code == 403
    forge.expire_token(pat)
    expired = _gl(forge, pat, "/user")
    assert expired.status_code == 401 and expired.json()["error"] == "invalid_token"
    assert len(forge.calls(token=pat)) == 9


def test_gitlab_compare_and_merge_request(forge: Forge, gitlab_op: GitLabOp) -> None:
    repo = _repo(forge)
    base = repo.head()
    repo.create_branch("feature")
    repo.commit({"mod/b.tf": "b\n"}, branch="feature")
    head = repo.commit({"main.tf": "x\n"}, branch="feature")
    token = gitlab_op.grant()["access_token"]
    cmp = _gl(
        forge, token, f"/projects/{repo.project_id}/repository/compare?from={base}&to={head}"
    ).json()
    assert {d["new_path"] for d in cmp["diffs"]} == {"mod/b.tf", "main.tf"}
    assert [c["id"] for c in cmp["commits"]] == repo.log(base, head)
    fork = repo.fork(f"alice/fork-{secrets.token_hex(3)}")
    fork_head = fork.commit({"fork.tf": "f\n"}, branch="feature")
    mr = forge.open_merge_request(repo, "feature", source_repo=fork)
    changes = _gl(
        forge, token, f"/projects/{repo.project_id}/merge_requests/{mr.iid}/changes"
    ).json()
    assert changes["sha"] == fork_head and changes["source_project_id"] == fork.project_id
    assert {c["new_path"] for c in changes["changes"]} == {"mod/b.tf", "main.tf", "fork.tf"}
    commit = _gl(forge, token, f"/projects/{repo.project_id}/repository/commits/{head}").json()
    assert commit["id"] == head and commit["author_name"] == "alice"


def test_clone_over_git_http_backend(forge: Forge, tmp_path: Path) -> None:
    repo = _repo(forge)
    repo.tag("v1.0.0", message="release")
    subprocess.run(
        ["git", "clone", "-q", repo.clone_url, str(tmp_path / "c")], check=True, timeout=60
    )
    assert (tmp_path / "c" / "mod" / "a.tf").read_text() == "a\n"
    tags = subprocess.run(
        ["git", "-C", str(tmp_path / "c"), "tag"], check=True, capture_output=True, text=True
    ).stdout
    assert tags.split() == ["v1.0.0"]


def test_github_app_installation_token_and_tarball(forge: Forge) -> None:
    repo = _repo(forge)
    other = _repo(forge)
    app = forge.add_github_app()
    inst = forge.add_installation(app, account="acme", repos=(repo.path,))
    listed = _gh(forge, _app_jwt(app), "/app/installations")
    assert [i["id"] for i in listed.json()] == [inst]
    minted = _gh(forge, _app_jwt(app), f"/app/installations/{inst}/access_tokens", "POST")
    assert minted.status_code == 201, minted.text
    body = minted.json()
    expires = datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00"))
    assert timedelta(minutes=59) < expires - datetime.now(UTC) <= timedelta(hours=1)
    token = body["token"]
    assert [t.token for t in forge.installation_tokens(inst)] == [token]
    sha = repo.head()
    tarball = _gh(forge, token, f"/repos/{repo.path}/tarball/{sha}")
    assert tarball.status_code == 302
    location = tarball.headers["location"]
    download = httpx.get(location, timeout=10)
    owner, name = repo.path.split("/")
    assert set(_members(download.content)) == {
        f"{owner}-{name}-{sha[:7]}/main.tf",
        f"{owner}-{name}-{sha[:7]}/mod/a.tf",
    }
    assert httpx.get(location, timeout=10).status_code == 404  # one-time URL
    assert forge.archive_fetches(repo, sha) == 1
    assert _gh(forge, token, f"/repos/{other.path}").status_code == 404  # not installed there
    assert _gh(forge, token, "/user").status_code == 403
    status = _gh(
        forge,
        token,
        f"/repos/{repo.path}/statuses/{sha}",
        "POST",
        json={"state": "pending", "context": "cairn/acme", "description": "queued"},
    )
    assert status.status_code == 201
    too_long = _gh(
        forge,
        token,
        f"/repos/{repo.path}/statuses/{sha}",
        "POST",
        json={"state": "success", "description": "x" * 141},
    )
    assert too_long.status_code == 422
    wrong_state = _gh(
        forge, token, f"/repos/{repo.path}/statuses/{sha}", "POST", json={"state": "failed"}
    )
    assert wrong_state.status_code == 422
    assert [s.state for s in forge.statuses(repo)] == ["pending"]
    forge.expire_token(token)
    assert _gh(forge, token, f"/repos/{repo.path}").json()["message"] == "Bad credentials"


def test_github_app_jwt_is_verified(forge: Forge) -> None:
    app = forge.add_github_app()
    inst = forge.add_installation(app, repos=())
    path = f"/app/installations/{inst}/access_tokens"
    other_key = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    wrong_key = _gh(forge, _app_jwt(app, key_pem=other_key), path, "POST")
    assert wrong_key.status_code == 401
    expired = _gh(forge, _app_jwt(app, exp_in=-5), path, "POST")
    assert expired.status_code == 401 and "Expiration time" in expired.json()["message"]
    too_far = _gh(forge, _app_jwt(app, exp_in=3600), path, "POST")
    assert too_far.status_code == 401
    hs256 = jwt.encode(
        {"iat": int(time.time()), "exp": int(time.time()) + 60, "iss": app.app_id},
        "k" * 32,
        algorithm="HS256",
    )
    assert _gh(forge, hs256, path, "POST").status_code == 401
    other_app = forge.add_github_app()
    assert _gh(forge, _app_jwt(other_app), path, "POST").status_code == 404
    assert forge.installation_tokens(inst) == []
    assert _gh(forge, _app_jwt(app), path, "POST").status_code == 201


def test_github_pull_files_paginate_and_hooks(forge: Forge) -> None:
    repo = _repo(forge)
    repo.create_branch("many")
    repo.commit({f"f/{i:03}.tf": f"{i}\n" for i in range(150)}, branch="many")
    pr = forge.open_merge_request(repo, "many")
    token = forge.add_pat("github")
    first = _gh(forge, token, f"/repos/{repo.path}/pulls/{pr.number}/files?per_page=100")
    assert len(first.json()) == 100 and 'rel="next"' in first.headers["link"]
    second = _gh(forge, token, f"/repos/{repo.path}/pulls/{pr.number}/files?per_page=100&page=2")
    assert len(second.json()) == 50 and "link" not in second.headers
    cmp = _gh(forge, token, f"/repos/{repo.path}/compare/{pr.base_sha}...{pr.head_sha}").json()
    assert len(cmp["files"]) == 150 and cmp["ahead_by"] == 1
    hook = _gh(
        forge,
        token,
        f"/repos/{repo.path}/hooks",
        "POST",
        json={
            "name": "web",
            "config": {"url": "https://cairn.test/h", "secret": "s", "content_type": "json"},
            "events": ["push", "pull_request"],
        },
    )
    assert hook.status_code == 201 and hook.json()["config"]["secret"] == "********"
    assert forge.hooks(repo)[0].events == ("push", "pull_request")
    forge.fail_next(1, 502, "/hooks")
    assert _gh(forge, token, f"/repos/{repo.path}/hooks").status_code == 502
    assert _gh(forge, token, f"/repos/{repo.path}/hooks").status_code == 200


def test_github_oauth_app(forge: Forge) -> None:
    app = forge.add_github_oauth_app()
    url = f"{forge.github_http_url}/login/oauth/authorize?client_id={app.client_id}&state=s1"
    callback = forge.github_authorize(url)
    assert callback["state"] == "s1"
    form = {
        "client_id": app.client_id,
        "client_secret": app.client_secret,
        "code": callback["code"],
    }
    resp = httpx.post(
        f"{forge.github_http_url}/login/oauth/access_token",
        data=form,
        headers={"Accept": "application/json"},
        timeout=10,
    )
    token = resp.json()["access_token"]
    assert _gh(forge, token, "/user").json()["login"] == "alice"
    replay = httpx.post(
        f"{forge.github_http_url}/login/oauth/access_token",
        data=form,
        headers={"Accept": "application/json"},
        timeout=10,
    )
    assert replay.status_code == 200 and replay.json()["error"] == "bad_verification_code"
