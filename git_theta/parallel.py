"""A process-wide thread pool and an order-keeping map with a bounded window.

hashing, byte-grouping and zstd release the GIL, so threads use every core.
"""

from __future__ import annotations

import os
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


@cache
def pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers(), thread_name_prefix="git-theta")


def ordered_map(fn: Callable[[T], R], items: Iterable[T], window: int | None = None) -> Iterator[R]:
    """`map(fn, items)` run on the pool, results in input order, at most `window` in flight.

    The window bounds memory: a consumer slower than the workers does not let results pile up.
    """
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
