"""Which workspaces a VCS event starts a run in: HCP's rules as pure functions (no I/O).

The rules (reference runs-agents-vcs.md §4.3, HCP's ``workspaces/settings/vcs.mdx``), in the
order :func:`decide` applies them:

* **push** to a branch → a run when the branch is the workspace's (``vcs-repo.branch``; empty =
  the repository's default branch, as the payload names it). A workspace that triggers on tags
  (``tags-regex`` set) does not run on branch pushes — HCP's three trigger kinds (always, paths,
  tags) are exclusive. A deleted branch starts nothing.
* **tag** push whose name matches ``tags-regex`` (``re.search``; anchor it to match whole names)
  → a run, whatever the branch. File triggers do not apply to tags.
* **change request** (GitLab merge request, GitHub pull request) opened, reopened or given new
  commits (GitLab ``update`` with ``oldrev``, GitHub ``synchronize``) that targets the workspace
  branch, in a workspace with ``speculative-enabled`` → a speculative (plan-only) run on the
  head commit. From a fork only when the connection allows fork plans.
* **file triggers** (push and change request, ``file-triggers-enabled``): a run only if a changed
  path is under the working directory or a trigger prefix — or, when trigger patterns are set,
  matches one of them (patterns replace the directory rule: list the working directory in them
  if it should count). An empty working directory with no patterns is the repository root:
  every change counts. No file list (unknown, too long) → run.
* **guards**: a workspace with no run yet ignores VCS events unless ``queue-all-runs`` (HCP: the
  first run is queued by hand); a commit that already started a run in the workspace is not
  run again (a forge's redelivery, a tag on an already-run commit).

Glob syntax of trigger patterns (HCP's): rooted at the repository root (a leading ``/`` is
optional), ``*`` matches within one path segment, ``?`` one character of a segment, ``**`` any
number of segments (including none); dot-files match like any other name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Final, Literal

from cairn.webhooks.events import OPENED, REOPENED, SYNCHRONIZE, VcsEvent

PLAN_ACTIONS: Final = frozenset({OPENED, REOPENED, SYNCHRONIZE})
MAX_PATTERN: Final = 1000  # characters of one glob turned into a regular expression

Verdict = Literal["run", "plan", "skip"]


@dataclass(frozen=True)
class WorkspaceTriggers:
    """What the rules read of a workspace (and its history)."""

    id: str
    name: str
    branch: str | None = None
    tags_regex: str | None = None
    working_directory: str | None = None
    file_triggers_enabled: bool = True
    trigger_prefixes: Sequence[str] = ()
    trigger_patterns: Sequence[str] = ()
    speculative_enabled: bool = True
    queue_all_runs: bool = False
    has_runs: bool = True
    sha_already_run: bool = False


@dataclass(frozen=True)
class Decision:
    """``run`` (a normal run), ``plan`` (a speculative plan) or ``skip``; ``reason`` is one line
    for the vcs-events list. ``untouched`` marks a skip because no changed file concerns the
    workspace — HCP still posts a passing status for those."""

    verdict: Verdict
    reason: str
    untouched: bool = False


def decide(
    event: VcsEvent,
    ws: WorkspaceTriggers,
    *,
    files: Sequence[str] | None,
    allow_fork_plans: bool,
) -> Decision:
    """What ``event`` means for ``ws``; ``files`` are the changed paths as finally known
    (the payload's, or the forge's compare API's), ``None`` when unknown."""
    verdict: Verdict
    if event.kind == "push":
        if event.deleted:
            return _skip(f"branch {event.branch} was deleted")
        if ws.tags_regex:
            return _skip("the workspace runs on tags only (tags-regex is set)")
        wanted = ws.branch or event.default_branch
        if event.branch != wanted:
            return _skip(f"push to {event.branch}; the workspace follows {wanted or '?'}")
        verdict = "run"
    elif event.kind == "tag":
        if event.deleted:
            return _skip(f"tag {event.tag} was deleted")
        if not ws.tags_regex:
            return _skip("the workspace does not run on tags (no tags-regex)")
        if not tag_matches(ws.tags_regex, event.tag or ""):
            return _skip(f"tag {event.tag} does not match tags-regex")
        verdict = "run"
    elif event.kind == "pull_request":
        if event.action not in PLAN_ACTIONS:
            return _skip(f"change request {event.action or 'event'}: nothing to plan")
        wanted = ws.branch or event.default_branch
        if event.branch != wanted:
            return _skip(f"change request targets {event.branch}; the workspace follows {wanted}")
        if not ws.speculative_enabled:
            return _skip("speculative plans are disabled in the workspace")
        if event.is_fork and not allow_fork_plans:
            return _skip("change request from a fork (the connection does not allow fork plans)")
        verdict = "plan"
    else:
        return _skip(f"{event.kind} event: nothing to run")
    if not ws.has_runs and not ws.queue_all_runs:
        return _skip("the workspace has no run yet: queue one by hand (or set queue-all-runs)")
    if ws.sha_already_run:
        return _skip(f"commit {event.sha[:12]} already started a run in the workspace")
    filtered = event.kind != "tag" and ws.file_triggers_enabled and files is not None
    if filtered and files is not None and not any_triggers(files, ws):
        return Decision("skip", "no changed file concerns the workspace", untouched=True)
    return Decision(verdict, "speculative plan" if verdict == "plan" else "run")


def _skip(reason: str) -> Decision:
    return Decision("skip", reason)


def tag_matches(regex: str, tag: str) -> bool:
    """Whether ``tag`` matches the workspace's ``tags-regex`` (an invalid regex matches
    nothing; the workspaces API validates it on write)."""
    try:
        return re.search(regex, tag) is not None
    except re.error:
        return False


def any_triggers(files: Iterable[str], ws: WorkspaceTriggers) -> bool:
    """Whether one of ``files`` (repository-relative paths) is one the workspace watches."""
    if ws.trigger_patterns:
        regexes = [glob_regex(p) for p in ws.trigger_patterns]
        return any(r.fullmatch(f.lstrip("/")) for f in files for r in regexes)
    dirs = [_directory(d) for d in (ws.working_directory or "", *ws.trigger_prefixes)]
    if "" in dirs:
        return any(True for _ in files)
    return any(f.lstrip("/").startswith(d) for f in files for d in dirs)


def _directory(path: str) -> str:
    """A working directory or prefix as ``a/b/`` ('' for the root)."""
    parts = [p for p in path.strip().split("/") if p and p != "."]
    return "/".join(parts) + "/" if parts else ""


@lru_cache(maxsize=512)
def glob_regex(pattern: str) -> re.Pattern[str]:
    """The regular expression of one trigger pattern (see the module docstring)."""
    glob = pattern.strip()[:MAX_PATTERN].lstrip("/")
    out: list[str] = []
    i = 0
    while i < len(glob):
        c = glob[i]
        if glob.startswith("**", i):
            i += 2
            if glob.startswith("/", i):  # "**/": zero or more whole segments
                out.append("(?:[^/]*/)*")
                i += 1
            else:  # "**" at the end (or before a name): anything, slashes included
                out.append(".*")
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        else:
            out.append(re.escape(c))
        i += 1
    if glob.endswith("/"):
        out.append(".*")  # a directory pattern covers what is under it
    return re.compile("".join(out))
