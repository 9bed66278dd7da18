"""The forge clients against the VCS rig's fake forge (GitLab v4 and GitHub REST over real git
repositories): what each call returns, how errors read, and that no token leaks."""

from __future__ import annotations

import gzip
import io
import secrets
import tarfile
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from cairn.errors import PayloadTooLarge
from cairn.vcs.forges import ForgeError, ForgeUnauthorized, forge_for, with_fresh_credential
from cairn.vcs.model import OAuthClient
from cairn.vcs.tokens import ForgeCredential
from tests.support.app import InProcessCairn
from tests.support.vcs.forge import Forge, Repo
from tests.unit.vcs.support import gitlab_oauth_token, vcs_tokens


def _gitlab(forge: Forge, token: str) -> ForgeCredential:
    return ForgeCredential(
        "ot-test", "gitlab_token", "gitlab_hosted", forge.gitlab_api_url, forge.url, token
    )


def _github(forge: Forge, token: str) -> ForgeCredential:
    return ForgeCredential(
        "ot-test", "github_token", "github", forge.github_api_url, forge.url, token
    )


def _repo(forge: Forge, files: dict[str, str | bytes | None] | None = None) -> Repo:
    return forge.create_repo(
        f"acme/infra-{secrets.token_hex(4)}", files or {"main.tf": "# main\n", "modules/a.tf": ""}
    )


def _untar(chunks: list[bytes]) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(b"".join(chunks))), mode="r:") as tar:
        return {
            m.name.split("/", 1)[1]: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }


@pytest.mark.parametrize("flavor", ["gitlab", "github"])
def test_repository_calls(forge: Forge, flavor: str) -> None:
    repo = _repo(forge)
    base = repo.head()
    head = repo.commit({"modules/a.tf": "# changed\n", "b.tf": "x", "main.tf": None}, "change")
    token = forge.add_pat(flavor)
    cred = _gitlab(forge, token) if flavor == "gitlab" else _github(forge, token)
    client = forge_for(cred)
    assert client.default_branch(repo.path) == "main"
    files = _untar(list(client.archive(repo.path, head)))
    assert files == {"modules/a.tf": b"# changed\n", "b.tf": b"x"}
    info = client.commit(repo.path, head)
    assert info.message.startswith("change")
    assert info.author
    assert client.compare_files(repo.path, base, head) == ["b.tf", "main.tf", "modules/a.tf"]
    repo.create_branch("feature", head)
    mr_head = repo.commit({"c.tf": "y"}, "feature work", branch="feature")
    mr = forge.open_merge_request(repo, "feature")
    assert mr.head_sha == mr_head
    assert client.merge_request_files(repo.path, mr.number) == ["c.tf"]
    assert repr(client).count(token) == 0


def test_gitlab_statuses_are_mapped(forge: Forge) -> None:
    repo = _repo(forge)
    sha = repo.head()
    client = forge_for(_gitlab(forge, forge.add_pat("gitlab")))
    client.set_status(repo.path, sha, "pending", "cairn/acme", "queued", "https://cairn/x")
    client.set_status(repo.path, sha, "pending", "cairn/acme", "queued", None)  # same: no error
    client.set_status(repo.path, sha, "failure", "cairn/acme", "plan failed", None)
    states = [s.state for s in forge.statuses(repo=repo.path, sha=sha)]
    assert states[0] == "pending" and states[-1] == "failed"


def test_github_statuses(forge: Forge) -> None:
    repo = _repo(forge)
    sha = repo.head()
    client = forge_for(_github(forge, forge.add_pat("github")))
    client.set_status(repo.path, sha, "pending", "cairn/acme", "queued", "https://cairn/x")
    client.set_status(repo.path, sha, "error", "cairn/acme", "x" * 500, None)
    recorded = forge.statuses(repo=repo.path, sha=sha)
    assert [s.state for s in recorded] == ["pending", "error"]
    assert recorded[0].target_url == "https://cairn/x"
    assert len(recorded[1].description or "") == 140


@pytest.mark.parametrize("flavor", ["gitlab", "github"])
def test_hooks(forge: Forge, flavor: str) -> None:
    repo = _repo(forge)
    token = forge.add_pat(flavor)
    client = forge_for(_gitlab(forge, token) if flavor == "gitlab" else _github(forge, token))
    hook_id = client.create_hook(
        repo.path, "https://cairn.example/api/cairn/v1/vcs-hooks/oc-1", "s3"
    )
    (hook,) = forge.hooks(repo=repo.path)
    assert (str(hook.id), hook.url, hook.secret) == (
        hook_id,
        "https://cairn.example/api/cairn/v1/vcs-hooks/oc-1",
        "s3",
    )
    expected = {
        "gitlab": {"push", "tag_push", "merge_requests"},
        "github": {"push", "pull_request"},
    }
    assert expected[flavor] <= {e.replace("_events", "") for e in hook.events}
    client.delete_hook(repo.path, hook_id)
    client.delete_hook(repo.path, hook_id)  # already gone: fine
    assert forge.hooks(repo=repo.path) == []


def test_whoami_and_token_expiry(forge: Forge) -> None:
    expires = datetime(2030, 5, 1, tzinfo=UTC)
    user, expiry = forge_for(
        _gitlab(forge, forge.add_pat("gitlab", user="bob", expires_at=expires))
    ).whoami()
    assert (user, expiry) == ("bob", expires)
    user, expiry = forge_for(_github(forge, forge.add_pat("github", user="carol"))).whoami()
    assert (user, expiry) == ("carol", None)


@pytest.mark.parametrize("flavor", ["gitlab", "github"])
def test_errors_name_the_problem_not_the_token(forge: Forge, flavor: str) -> None:
    repo = _repo(forge)
    token = forge.add_pat(flavor)
    cred = _gitlab(forge, token) if flavor == "gitlab" else _github(forge, token)
    with pytest.raises(ForgeError) as missing:
        forge_for(cred).commit("acme/does-not-exist", repo.head())
    assert missing.value.status == 502 and missing.value.forge_status == 404
    forge.revoke_token(token)
    with pytest.raises(ForgeUnauthorized) as refused:
        forge_for(cred).default_branch(repo.path)
    for err in (missing.value, refused.value):
        assert token not in str(err.to_jsonapi()) and token not in repr(err)


def test_a_401_reads_the_credential_once_more(forge: Forge) -> None:
    repo = _repo(forge)
    old, new = forge.add_pat("gitlab"), forge.add_pat("gitlab")
    forge.revoke_token(old)
    handed = iter([_gitlab(forge, old), _gitlab(forge, new), _gitlab(forge, old)])
    assert (
        with_fresh_credential(lambda: next(handed), lambda f: f.default_branch(repo.path)) == "main"
    )
    forge.revoke_token(new)
    handed = iter([_gitlab(forge, new), _gitlab(forge, new)])
    with pytest.raises(ForgeUnauthorized):
        with_fresh_credential(lambda: next(handed), lambda f: f.default_branch(repo.path))


@pytest.mark.parametrize("flavor", ["gitlab", "github"])
def test_archive_size_cap(forge: Forge, flavor: str) -> None:
    repo = _repo(forge, {"big.bin": secrets.token_bytes(300_000)})
    token = forge.add_pat(flavor)
    cred = _gitlab(forge, token) if flavor == "gitlab" else _github(forge, token)
    with pytest.raises(PayloadTooLarge) as err:
        b"".join(forge_for(cred, max_archive_bytes=100_000).archive(repo.path, repo.head()))
    assert "CAIRN_MAX_CONFIG_MB" in err.value.detail
    assert len(b"".join(forge_for(cred).archive(repo.path, repo.head()))) > 100_000


def test_github_big_changes(forge: Forge) -> None:
    repo = _repo(forge)
    base = repo.head()
    repo.create_branch("wide", base)
    head = repo.commit({f"f{i:03}.tf": str(i) for i in range(320)}, "wide", branch="wide")
    client = forge_for(_github(forge, forge.add_pat("github")))
    assert client.compare_files(repo.path, base, head) is None  # ≥ 300: GitHub truncates
    mr = forge.open_merge_request(repo, "wide")
    files = client.merge_request_files(repo.path, mr.number)
    assert files is not None and len(files) == 320  # four pages


def test_github_repository_ids_are_checked(forge: Forge) -> None:
    from cairn.errors import Invalid

    client = forge_for(_github(forge, forge.add_pat("github")))
    with pytest.raises(Invalid):
        client.default_branch("acme/../../user")


def test_pat_expiry_from_the_forge(forge: Forge) -> None:
    token = forge.add_pat("gitlab", expires_at=datetime.now(UTC) + timedelta(days=3))
    _user, expiry = forge_for(_gitlab(forge, token)).whoami()
    assert expiry is not None and expiry.date() == (datetime.now(UTC) + timedelta(days=3)).date()


def test_a_refreshed_gitlab_oauth_token_works_at_the_forge(
    app: InProcessCairn, forge: Forge
) -> None:
    """The whole path: an expired OAuth token, refreshed through the forge's /oauth/token,
    used on its API; the pair it replaced is refused there (GitLab kills it on refresh)."""
    tid, _cid, grant, _client = gitlab_oauth_token(app, forge.gitlab_op)
    with app.ctx.db.unit_of_work(write=True) as s:  # the connection talks to the forge's host
        s.execute(
            update(OAuthClient)
            .where(OAuthClient.id == _cid)
            .values(http_url=forge.gitlab_http_url, api_url=forge.gitlab_api_url)
        )
        s.commit()
    repo = _repo(forge)
    tokens = vcs_tokens(app)

    def fresh() -> ForgeCredential:
        return tokens.credential(tid)

    assert with_fresh_credential(fresh, lambda f: f.default_branch(repo.path)) == "main"
    assert forge_for(fresh()).whoami()[0] == "alice"
    stale = ForgeCredential(
        tid, "gitlab_oauth", "gitlab_hosted", forge.gitlab_api_url, forge.url, grant["access_token"]
    )
    with pytest.raises(ForgeUnauthorized):
        forge_for(stale).default_branch(repo.path)
