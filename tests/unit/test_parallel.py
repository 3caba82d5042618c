"""The thread pool when work on it waits for more work: no worker may wait on a job queued
behind itself (a one-worker pool makes any such wait a deadlock)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from git_theta import parallel
from git_theta.store import Store


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


def test_reading_an_object_queued_for_verification_does_not_wait_for_the_queue(
    one_worker: None, tmp_path: Path
) -> None:
    store = Store(tmp_path / "theta")
    oid = store.put(b"payload" * 1000).oid
    release = threading.Event()
    # the only worker is busy until the main thread has read the object
    blocker = parallel.pool().submit(release.wait, 30)
    store.verify_ahead([oid])  # queued behind the blocker
    with store.open_verified(oid) as view:
        assert bytes(view) == b"payload" * 1000
    release.set()
    assert blocker.result(timeout=30) is True  # released by us, not by its timeout
