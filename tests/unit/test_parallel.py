"""The thread pool when work on it maps over the pool: no worker may wait on a job queued
behind itself (a one-worker pool makes any such wait a deadlock)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from git_theta import parallel


@pytest.fixture
def one_worker(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("GIT_THETA_THREADS", "1")
    parallel.pool.cache_clear()
    yield
    parallel.pool().shutdown(wait=True)
    parallel.pool.cache_clear()


def test_ordered_map_inside_a_pool_job_runs_inline(one_worker: None) -> None:
    def job() -> list[int]:
        assert parallel.in_pool()
        return list(parallel.ordered_map(lambda x: x * x, range(10)))

    assert not parallel.in_pool()
    assert parallel.pool().submit(job).result(timeout=30) == [x * x for x in range(10)]


def test_ordered_map_keeps_order_and_stops_early() -> None:
    seen: list[int] = []

    def square(x: int) -> int:
        seen.append(x)
        return x * x

    it = parallel.ordered_map(square, range(1000), window=3)
    assert [next(it) for _ in range(5)] == [0, 1, 4, 9, 16]
    it.close()
    assert len(seen) < 20  # at most the window ran ahead, not the whole input
