"""What higher floors do when a run changes status, registered in ``app.py``.

Runs sit below ``webhooks``, which posts a commit status for runs a VCS event started; runs
must not import it, so it registers an ``after_change`` callback here. Every transition of the
run machine (``runs.scheduler`` — admitted, queued, confirmed, finished — and
``runs.lifecycle`` — started, planned) calls :meth:`RunHooks.changed` in the transaction that
made it, with that session: what a callback writes (an outbox row) commits or rolls back with
the transition itself. A callback must be cheap for runs it does not care about (one look at
the row it is handed) and must not raise for them: an exception refuses the transition.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from cairn.runs.model import Run

AfterChange = Callable[[Session, Run], None]
"""``(session, run)``: ``run.status`` was just set (not necessarily flushed)."""


@dataclass
class RunHooks:
    """Callbacks run by the run machine after each status change, in order."""

    after_change: list[AfterChange] = field(default_factory=list)

    def changed(self, s: Session, run: Run) -> None:
        for hook in self.after_change:
            hook(s, run)
