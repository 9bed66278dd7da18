"""``cairn serve`` is ready in well under a second (``bench/startup.py``) because what only a
PostgreSQL database, an upgrade (Alembic), S3, AWS STS or a client command needs is imported
where it is used. This guard names those packages: a module-level import of one of them in
any module the server imports (a new domain's too) fails here, with the way out."""

from __future__ import annotations

import json
import subprocess
import sys

# Each costs tens of milliseconds of every start of a server that does not use it.
LAZY = (
    "alembic",  # upgrades only (cairn.migrations.migrate imports it when there is one)
    "boto3",  # the S3 blob store only
    "botocore",
    "psycopg",  # PostgreSQL only
    "sqlalchemy.dialects.postgresql",
    "jwcrypto",
)


def test_what_cairn_serve_imports_leaves_out_the_lazy_packages() -> None:
    code = (
        "import sys, json, cairn.cli.main, cairn.cli.serve, cairn.app; "
        f"print(json.dumps(sorted(m for m in {list(LAZY)!r} if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded == [], (
        f"importing the server imports {loaded}: import them inside the function that uses "
        "them (see ARCHITECTURE.md, 'A quick start')"
    )
