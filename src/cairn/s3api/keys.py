"""Object keys → workspaces: the one mapping of the S3 endpoint (pure).

A bucket is an organization. A key is a state object, or the lock object of one
(``<state key>.tflock``, what Terraform ≥ 1.10's ``use_lockfile`` writes).

The workspace a state key names is, the first time a state is put under that key, the one
whose name is derived from the key (``workspace_name``): ``.tfstate`` dropped from the end,
every character a workspace name cannot hold (anything but letters, digits, ``-`` and
``_``) — ``/`` and ``:`` included — turned into ``-``, runs of ``-`` collapsed and trimmed.
So Terraform's layout maps as::

    key = "network/terraform.tfstate"              → workspace network-terraform
    env:/dev/network/terraform.tfstate             → workspace env-dev-network-terraform
    (workspace_key_prefix "env:", Terraform workspace "dev")

The key is then recorded (``s3api.model.S3Object``) and always reaches that workspace, even if
the workspace is renamed; listing a bucket lists the recorded keys whose workspace has a state.
A key that was never written reaches the workspace of its derived name for reading.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cairn.s3api.model import MAX_KEY

LOCK_SUFFIX = ".tflock"
STATE_SUFFIX = ".tfstate"
MAX_WORKSPACE_NAME = 90
_NOT_NAME = re.compile(r"[^A-Za-z0-9_-]+")
_DASHES = re.compile(r"-{2,}")


class BadKey(ValueError):
    """A key no workspace can be named from."""


@dataclass(frozen=True)
class ObjectKey:
    """A parsed key: the state key it is about, and whether it is that state's lock object."""

    state_key: str
    lock: bool

    @property
    def key(self) -> str:
        return self.state_key + LOCK_SUFFIX if self.lock else self.state_key


def parse(key: str) -> ObjectKey:
    if not key:
        raise BadKey("the object key is empty")
    if len(key.encode("utf-8")) > MAX_KEY:
        raise BadKey(f"the object key is longer than {MAX_KEY} bytes")
    if key.endswith(LOCK_SUFFIX) and len(key) > len(LOCK_SUFFIX):
        return ObjectKey(key[: -len(LOCK_SUFFIX)], lock=True)
    return ObjectKey(key, lock=False)


def workspace_name(state_key: str) -> str:
    """The name of the workspace a state key is first written to (see the module docstring)."""
    stem = state_key[: -len(STATE_SUFFIX)] if state_key.endswith(STATE_SUFFIX) else state_key
    name = _DASHES.sub("-", _NOT_NAME.sub("-", stem)).strip("-")
    if not name:
        raise BadKey(
            f"no workspace name can be made from the key {state_key!r}: it needs a letter or digit"
        )
    if len(name) > MAX_WORKSPACE_NAME:
        raise BadKey(
            f"the key {state_key!r} names workspace {name[:40]!r}…, longer than "
            f"{MAX_WORKSPACE_NAME} characters; use a shorter key"
        )
    return name
