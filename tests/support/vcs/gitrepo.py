"""Real git repositories for the fake forge, driven by the ``git`` CLI.

Repositories are bare (``<root>/<group>/<project>.git``) so that ``git http-backend`` serves them
as they are; commits are written with a temporary index (``read-tree`` / ``update-index`` /
``write-tree`` / ``commit-tree``), so no work tree is needed and the shas, files and archives the
forge reports are git's own.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
from pathlib import Path

ZERO_SHA = "0" * 40


class GitError(RuntimeError):
    """A git command failed; the message carries its stderr."""


def git(
    git_dir: Path,
    *args: str,
    input: bytes | None = None,
    env: dict[str, str] | None = None,
) -> bytes:
    """Run ``git --git-dir=<git_dir> <args>`` and return its stdout."""
    full_env = {
        **os.environ,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        **(env or {}),
    }
    proc = subprocess.run(
        ["git", f"--git-dir={git_dir}", *args],
        input=input,
        capture_output=True,
        env=full_env,
        check=False,
    )
    if proc.returncode != 0:
        raise GitError(f"git {' '.join(args)}: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout


class GitRepo:
    """One bare repository plus the write operations the tests need (thread-safe)."""

    def __init__(self, git_dir: Path, default_branch: str = "main") -> None:
        self.git_dir = git_dir
        self.default_branch = default_branch
        self._lock = threading.Lock()

    @classmethod
    def init(cls, git_dir: Path, default_branch: str = "main") -> GitRepo:
        git_dir.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["git", "init", "-q", "--bare", f"--initial-branch={default_branch}", str(git_dir)],
            check=True,
            capture_output=True,
        )
        git(git_dir, "config", "http.receivepack", "false")
        return cls(git_dir, default_branch)

    @classmethod
    def clone_bare(cls, source: GitRepo, git_dir: Path) -> GitRepo:
        git_dir.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["git", "clone", "-q", "--bare", str(source.git_dir), str(git_dir)],
            check=True,
            capture_output=True,
        )
        return cls(git_dir, source.default_branch)

    def run(self, *args: str, input: bytes | None = None) -> bytes:
        return git(self.git_dir, *args, input=input)

    def resolve(self, ref: str | None = None) -> str | None:
        """The commit sha of a branch, tag or sha (None when it does not exist)."""
        try:
            out = self.run(
                "rev-parse", "--verify", "--quiet", f"{ref or self.default_branch}^{{commit}}"
            )
        except GitError:
            return None
        return out.decode().strip() or None

    def commit(
        self,
        files: dict[str, str | bytes | None],
        message: str = "change",
        branch: str | None = None,
        author: str = "alice",
    ) -> str:
        """Write ``files`` (None deletes) on top of ``branch`` and move the branch; the sha."""
        branch = branch or self.default_branch
        with self._lock, tempfile.TemporaryDirectory() as tmp:
            # An empty work tree: update-index insists on one, and never reads it here.
            index_env = {"GIT_INDEX_FILE": str(Path(tmp) / "index"), "GIT_WORK_TREE": tmp}
            parent = self.resolve(f"refs/heads/{branch}")
            if parent:
                git(self.git_dir, "read-tree", parent, env=index_env)
            else:
                git(self.git_dir, "read-tree", "--empty", env=index_env)
            for path, content in files.items():
                if content is None:
                    git(self.git_dir, "update-index", "--force-remove", path, env=index_env)
                    continue
                data = content.encode() if isinstance(content, str) else content
                blob = (
                    git(self.git_dir, "hash-object", "-w", "--stdin", input=data).decode().strip()
                )
                git(
                    self.git_dir,
                    "update-index",
                    "--add",
                    "--cacheinfo",
                    f"100644,{blob},{path}",
                    env=index_env,
                )
            tree = git(self.git_dir, "write-tree", env=index_env).decode().strip()
            who = {
                "GIT_AUTHOR_NAME": author,
                "GIT_AUTHOR_EMAIL": f"{author}@example.test",
                "GIT_COMMITTER_NAME": author,
                "GIT_COMMITTER_EMAIL": f"{author}@example.test",
            }
            parents = ["-p", parent] if parent else []
            sha = (
                git(self.git_dir, "commit-tree", tree, *parents, "-m", message, env=who)
                .decode()
                .strip()
            )
            git(self.git_dir, "update-ref", f"refs/heads/{branch}", sha, parent or ZERO_SHA)
            return sha

    def create_branch(self, name: str, from_ref: str | None = None) -> str:
        sha = self.resolve(from_ref)
        if sha is None:
            raise GitError(f"no such ref {from_ref or self.default_branch}")
        with self._lock:
            self.run("update-ref", f"refs/heads/{name}", sha, ZERO_SHA)
        return sha

    def tag(self, name: str, ref: str | None = None, message: str | None = None) -> str:
        sha = self.resolve(ref)
        if sha is None:
            raise GitError(f"no such ref {ref or self.default_branch}")
        with self._lock:
            if message is None:
                self.run("update-ref", f"refs/tags/{name}", sha, ZERO_SHA)
            else:
                env = {
                    "GIT_COMMITTER_NAME": "alice",
                    "GIT_COMMITTER_EMAIL": "alice@example.test",
                }
                git(self.git_dir, "tag", "-a", name, sha, "-m", message, env=env)
        return sha

    def files(self, sha: str) -> dict[str, bytes]:
        names = self.run("ls-tree", "-r", "-z", "--name-only", sha).decode().split("\0")
        return {name: self.run("show", f"{sha}:{name}") for name in names if name}

    def log(self, base: str | None, head: str) -> list[str]:
        """Commits in ``base..head`` (all ancestors of head when base is None), oldest first."""
        spec = head if base in (None, ZERO_SHA) else f"{base}..{head}"
        out = self.run("rev-list", "--reverse", spec).decode().split()
        return out

    def changed_files(self, base: str, head: str, *, merge_base: bool = False) -> list[str]:
        """Paths changed between two commits (``base...head`` when ``merge_base``)."""
        return [path for _, path, _ in self.diff(base, head, merge_base=merge_base)]

    def diff(
        self, base: str, head: str, *, merge_base: bool = False
    ) -> list[tuple[str, str, str | None]]:
        """(status letter A/M/D/R, path, old path for renames) between two commits."""
        spec = [f"{base}...{head}"] if merge_base else [base, head]
        out = self.run("diff", "--name-status", "-z", "-M", *spec).decode().split("\0")
        return _name_status(out)

    def commit_files(self, sha: str) -> list[tuple[str, str, str | None]]:
        """What one commit changed against its first parent (everything for a root commit)."""
        out = self.run(
            "diff-tree", "--root", "--no-commit-id", "-r", "-z", "-M", "--name-status", sha
        ).decode()
        return _name_status(out.split("\0"))

    def commit_info(self, sha: str) -> dict[str, str | list[str]]:
        fmt = "%H%x00%an%x00%ae%x00%aI%x00%cI%x00%P%x00%B"
        parts = self.run("show", "-s", f"--format={fmt}", sha).decode().split("\0", 6)
        return {
            "sha": parts[0],
            "author_name": parts[1],
            "author_email": parts[2],
            "authored_date": parts[3],
            "committed_date": parts[4],
            "parents": parts[5].split(),
            "message": parts[6].rstrip("\n"),
        }

    def archive(self, sha: str, prefix: str) -> bytes:
        """A gzipped tar of the commit's tree, every path under ``prefix/`` (as forges do)."""
        return self.run("archive", "--format=tar.gz", f"--prefix={prefix}/", sha)

    def merge_base(self, a: str, b: str) -> str:
        return self.run("merge-base", a, b).decode().strip()

    def copy_objects_from(self, other: GitRepo, ref: str) -> None:
        """Fetch ``ref`` of another repo (a fork) so that merge-base/compare work across them."""
        with self._lock:
            self.run("fetch", "-q", str(other.git_dir), f"+{ref}:refs/forks/{id(other)}")


def _name_status(fields: list[str]) -> list[tuple[str, str, str | None]]:
    result: list[tuple[str, str, str | None]] = []
    i = 0
    while i < len(fields) and fields[i]:
        status = fields[i]
        if status.startswith(("R", "C")):
            result.append((status[0], fields[i + 2], fields[i + 1]))
            i += 3
        else:
            result.append((status[0], fields[i + 1], None))
            i += 2
    return result
