"""Run calls at the same instant: one thread each, released together by a barrier."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


def simultaneously(calls: Sequence[Callable[[], T]], *, timeout: float = 60.0) -> list[T]:
    """Call every function in its own thread, all released at once; results in order."""
    barrier = threading.Barrier(len(calls), timeout=timeout)

    def run(call: Callable[[], T]) -> T:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [pool.submit(run, call) for call in calls]
        return [f.result(timeout=timeout) for f in futures]
