"""A process-wide thread pool and an order-keeping map with a bounded window.

hashing, byte-grouping and zstd release the GIL, so threads use every core. Work already
running on the pool (a value decoded ahead) maps inline: a worker that queued jobs behind
its own and waited on them could leave every worker waiting and none working.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from functools import cache
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def workers() -> int:
    env = os.environ.get("GIT_THETA_THREADS")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, min(8, os.cpu_count() or 1))


_local = threading.local()


def _mark_worker() -> None:
    _local.worker = True


def in_pool() -> bool:
    """True on one of pool()'s threads."""
    return bool(getattr(_local, "worker", False))


@cache
def pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(
        max_workers=workers(), thread_name_prefix="git-theta", initializer=_mark_worker
    )


def ordered_map(fn: Callable[[T], R], items: Iterable[T], window: int | None = None) -> Iterator[R]:
    """`map(fn, items)` run on the pool, results in input order, at most `window` in flight.

    The window bounds memory: a consumer slower than the workers does not let results pile up.
    On a pool thread it is plain `map` (see the module's docstring).
    """
    if in_pool():
        yield from map(fn, items)
        return
    ex = pool()
    limit = window or 2 * workers()
    pending: deque[Future[R]] = deque()
    try:
        for item in items:
            pending.append(ex.submit(fn, item))
            if len(pending) >= limit:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for f in pending:
            f.cancel()
