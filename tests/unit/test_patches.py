"""Update records (sparse, delta, rows, low-rank, ia3) and the automatic choice, on a store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from git_theta import arrays, dtypes, filters
from git_theta.checkpoints.base import TensorSpec
from git_theta.errors import UpdateError
from git_theta.manifest import Entry
from git_theta.store import Store
from git_theta.updates import choose
from git_theta.updates.base import Record, ValueSpec
from git_theta.updates.delta import DeltaUpdate
from git_theta.updates.ia3 import apply_ia3
from git_theta.updates.incremental import depth
from git_theta.updates.low_rank import LowRankUpdate, apply_low_rank
from git_theta.updates.sparse import SparseUpdate, changed_positions


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "theta")


def raw(a: np.ndarray, dtype: str = "F32") -> bytes:
    return arrays.from_float(a, dtype)


def entry(store: Store, name: str, data: bytes, dtype: str, shape: tuple[int, ...]) -> Entry:
    """A dense entry for `data`, as the first `git add` would make it."""
    st = filters.CleanStats()
    h = filters.raw_hash(data)
    rec = filters._store_dense(store, memoryview(data), TensorSpec(name, dtype, shape), h, st)
    return Entry(name, dtype, shape, h, rec)


def rebuilt(store: Store, record: Record, name: str, dtype: str, shape: tuple[int, ...]) -> bytes:
    return b"".join(bytes(c) for c in filters.rebuild(store, record, ValueSpec(name, dtype, shape)))


def add(store: Store, old: Entry | None, data: bytes, dtype: str, shape: tuple[int, ...]) -> Entry:
    """What clean does for a changed value: choose, store, and return the new entry."""
    name = old.name if old else "w"
    h = filters.raw_hash(data)
    st = filters.CleanStats()
    rec = choose.store_changed(store, memoryview(data), TensorSpec(name, dtype, shape), h, old, st)
    return Entry(name, dtype, shape, h, rec)


@pytest.fixture(autouse=True)
def chain_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(choose.CHAIN_ENV, "8")
    choose.chain_max.cache_clear()


@pytest.mark.parametrize("dtype", ["F32", "BF16", "F16", "I64"])
def test_sparse_change_is_stored_as_sparse_and_rebuilds_exactly(store: Store, dtype: str) -> None:
    rng = np.random.default_rng(1)
    shape = (200, 50)
    a = rng.standard_normal(shape) * 10
    old = entry(store, "w", raw(a, dtype), dtype, shape)
    b = a.copy()
    flat = b.reshape(-1)
    flat[rng.choice(flat.size, 40, replace=False)] += 5
    new = add(store, old, raw(b, dtype), dtype, shape)
    assert new.record["type"] == "sparse"
    assert new.record["count"] == 40
    assert new.record["base"] == old.record
    assert rebuilt(store, new.record, "w", dtype, shape) == raw(b, dtype)


@pytest.mark.parametrize("dtype", ["F32", "BF16"])
def test_fine_tune_like_change_is_stored_as_xor_delta(store: Store, dtype: str) -> None:
    rng = np.random.default_rng(2)
    shape = (256, 256)
    a = rng.standard_normal(shape).astype(np.float32)
    old = entry(store, "w", raw(a, dtype), dtype, shape)
    b = a * (1 + 1e-3 * rng.standard_normal(shape)).astype(np.float32)
    new = add(store, old, raw(b, dtype), dtype, shape)
    assert new.record["type"] == "delta"
    assert new.record["op"] == "xor"
    assert new.record["size"] < old.record["size"] * (0.75 if dtype == "F32" else 0.3)
    assert rebuilt(store, new.record, "w", dtype, shape) == raw(b, dtype)


def test_sub_delta_rebuilds_exactly(store: Store) -> None:
    rng = np.random.default_rng(3)
    a = raw(rng.standard_normal((64, 64)))
    b = raw(rng.standard_normal((64, 64)))
    old = entry(store, "w", a, "F32", (64, 64))
    spec = ValueSpec("w", "F32", (64, 64))
    rec, _, _ = DeltaUpdate.candidate(old.record, a, b, spec, "sub").commit(store)
    assert rebuilt(store, rec, "w", "F32", (64, 64)) == b


def test_unrelated_new_value_is_stored_dense(store: Store) -> None:
    rng = np.random.default_rng(4)
    old = entry(store, "w", raw(rng.standard_normal((128, 128))), "F32", (128, 128))
    new = add(store, old, raw(rng.standard_normal((128, 128))), "F32", (128, 128))
    assert new.record["type"] == "dense"


def test_revert_to_a_stored_value_reuses_its_dense_object(store: Store) -> None:
    rng = np.random.default_rng(5)
    a = raw(rng.standard_normal((128, 128)))
    first = entry(store, "w", a, "F32", (128, 128))
    b = np.frombuffer(a, dtype=np.float32).copy()
    b[:3] += 1
    second = add(store, first, b.tobytes(), "F32", (128, 128))
    assert second.record["type"] == "sparse"
    back = add(store, second, a, "F32", (128, 128))
    assert back.record == first.record


def test_dtype_change_is_stored_dense(store: Store) -> None:
    a = np.arange(100, dtype=np.float64)
    old = entry(store, "w", raw(a, "F32"), "F32", (100,))
    new = add(store, old, raw(a, "BF16"), "BF16", (100,))
    assert new.record["type"] == "dense"


def test_trimmed_and_appended_rows(store: Store) -> None:
    rng = np.random.default_rng(6)
    a = rng.standard_normal((1000, 32)).astype(np.float32)
    old = entry(store, "emb", a.tobytes(), "F32", (1000, 32))
    drop = np.sort(rng.choice(1000, 200, replace=False))
    trimmed = np.delete(a, drop, axis=0)
    new = add(store, old, trimmed.tobytes(), "F32", trimmed.shape)
    assert new.record["type"] == "rows"
    assert (new.record["dropped"], new.record["appended"]) == (200, 0)
    assert "appended_oid" not in new.record
    assert new.record["dropped_size"] < 1000
    assert rebuilt(store, new.record, "emb", "F32", trimmed.shape) == trimmed.tobytes()
    grown = np.concatenate([trimmed, rng.standard_normal((5, 32)).astype(np.float32)])
    newer = add(store, new, grown.tobytes(), "F32", grown.shape)
    assert newer.record["type"] == "rows"
    assert (newer.record["dropped"], newer.record["appended"]) == (0, 5)
    assert depth(newer.record) == 2
    assert rebuilt(store, newer.record, "emb", "F32", grown.shape) == grown.tobytes()


def test_chain_is_capped_with_a_dense_keyframe(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(choose.CHAIN_ENV, "3")
    choose.chain_max.cache_clear()
    rng = np.random.default_rng(7)
    a = rng.standard_normal(4096).astype(np.float32)
    e = entry(store, "w", a.tobytes(), "F32", (4096,))
    depths = []
    for i in range(7):
        a = a.copy()
        a[i * 10 : i * 10 + 5] += 1
        e = add(store, e, a.tobytes(), "F32", (4096,))
        depths.append(depth(e.record))
        assert rebuilt(store, e.record, "w", "F32", (4096,)) == a.tobytes()
    assert depths == [1, 2, 3, 0, 1, 2, 3]


def test_unbuildable_base_falls_back_to_dense(store: Store) -> None:
    a = np.zeros(1000, dtype=np.float32)
    old = entry(store, "w", a.tobytes(), "F32", (1000,))
    store.path(old.record["oid"]).unlink()
    a[3] = 1
    new = add(store, old, a.tobytes(), "F32", (1000,))
    assert new.record["type"] == "dense"


def test_bad_chain_max_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(choose.CHAIN_ENV, "many")
    choose.chain_max.cache_clear()
    with pytest.raises(Exception, match=r"theta\.chain\.max must be a whole number"):
        choose.chain_max()


def test_changed_positions_compare_bit_patterns() -> None:
    a = np.array([0.0, np.nan, 1.0], dtype=np.float32)
    b = np.array([-0.0, np.nan, 1.0], dtype=np.float32)
    assert changed_positions(a.tobytes(), b.tobytes(), 4).tolist() == [0]


def test_hostile_sparse_record_is_refused(store: Store) -> None:
    a = np.zeros(100, dtype=np.float32)
    old = entry(store, "w", a.tobytes(), "F32", (100,))
    b = a.copy()
    b[[5, 7]] = 1
    spec = ValueSpec("w", "F32", (100,))
    cand = SparseUpdate.candidate(old.record, b.tobytes(), spec, np.array([5, 7]))
    rec, _, _ = cand.commit(store)
    with pytest.raises(UpdateError):
        rebuilt(store, {**rec, "count": 101}, "w", "F32", (100,))
    assert rebuilt(store, rec, "w", "F32", (100,)) == b.tobytes()
    bad = SparseUpdate.candidate(old.record, b.tobytes(), spec, np.array([7, 5]))
    bad_rec, _, _ = bad.commit(store)
    with pytest.raises(UpdateError, match="strictly increasing"):
        rebuilt(store, bad_rec, "w", "F32", (100,))


def test_low_rank_matches_a_float64_reference_and_is_reproducible(store: Store) -> None:
    rng = np.random.default_rng(8)
    w = rng.standard_normal((48, 32)).astype(np.float32)
    a = rng.standard_normal((4, 32)).astype(np.float32)
    b = rng.standard_normal((48, 4)).astype(np.float32)
    out = apply_low_rank(w.tobytes(), "F32", (48, 32), a, b, 0.5)
    ref = (w.astype(np.float64) + 0.5 * (b.astype(np.float64) @ a.astype(np.float64))).astype(
        np.float32
    )
    got = np.frombuffer(out, dtype=np.float32).reshape(48, 32)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)
    old = entry(store, "w", w.tobytes(), "F32", (48, 32))
    cand = LowRankUpdate.candidate(old.record, a.tobytes(), b.tobytes(), "F32", 4, 0.5, False)
    rec, _, _ = cand.commit(store)
    assert rebuilt(store, rec, "w", "F32", (48, 32)) == out
    # fan_in_fan_out: the weight is (in, out) and receives (B @ A).T
    t = apply_low_rank(w.T.copy().tobytes(), "F32", (32, 48), a, b, 0.5, transpose=True)
    assert np.frombuffer(t, dtype=np.float32).reshape(32, 48).T.tobytes() == out


def test_ia3_scales_rows_or_columns() -> None:
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    rows = apply_ia3(w.tobytes(), "F32", (2, 3), np.array([2.0, 3.0]), 0)
    cols = apply_ia3(w.tobytes(), "F32", (2, 3), np.array([1.0, 0.5, 2.0]), 1)
    assert np.frombuffer(rows, dtype=np.float32).tolist() == [0, 2, 4, 9, 12, 15]
    assert np.frombuffer(cols, dtype=np.float32).tolist() == [0, 0.5, 4, 3, 2, 10]


@pytest.mark.parametrize(
    "damage",
    [
        {"base_shape": ["1000", 32]},
        {"base_shape": [1000, 31]},
        {"dropped": 2000},
        {"appended": -1},
        {"index_dtype": "F32"},
    ],
)
def test_hostile_rows_record_is_refused(store: Store, damage: dict[str, object]) -> None:
    a = np.arange(1000 * 32, dtype=np.float32).reshape(1000, 32)
    old = entry(store, "emb", a.tobytes(), "F32", (1000, 32))
    trimmed = a[10:]
    new = add(store, old, trimmed.tobytes(), "F32", trimmed.shape)
    assert new.record["type"] == "rows"
    with pytest.raises(UpdateError):
        rebuilt(store, {**new.record, **damage}, "emb", "F32", trimmed.shape)


def test_delta_record_without_its_object_is_refused(store: Store) -> None:
    a = np.zeros(64, dtype=np.float32)
    old = entry(store, "w", a.tobytes(), "F32", (64,))
    with pytest.raises(UpdateError, match="lacks oid"):
        rebuilt(store, {"type": "delta", "op": "xor", "base": old.record}, "w", "F32", (64,))
    with pytest.raises(UpdateError, match="unknown op"):
        rebuilt(store, {"type": "delta", "op": "add", "base": old.record}, "w", "F32", (64,))


def _oid(blob: bytes) -> str:
    import hashlib

    return hashlib.sha256(blob).hexdigest()


def test_multi_chunk_chain_streams_and_keeps_the_in_memory_encoding(store: Store) -> None:
    """A 4 MiB value (4 codec chunks) through dense -> delta -> sparse -> rows: clean and
    rebuild walk the base chunk by chunk, yet the objects are byte for byte those of the
    whole-tensor encoders (same format as before), and every step rebuilds exactly."""
    from git_theta.updates.rows import RowsUpdate

    rng = np.random.default_rng(9)
    shape = (1024, 1024)
    spec = ValueSpec("w", "F32", shape)
    a = rng.standard_normal(shape).astype(np.float32)
    e0 = entry(store, "w", a.tobytes(), "F32", shape)
    b = a * (1 + rng.normal(0, 1e-3, shape).astype(np.float32))
    e1 = add(store, e0, b.tobytes(), "F32", shape)
    assert e1.record["type"] == "delta"
    want = DeltaUpdate.candidate(e0.record, a.tobytes(), b.tobytes(), spec).objects[""]
    assert e1.record["oid"] == _oid(want)
    assert rebuilt(store, e1.record, "w", "F32", shape) == b.tobytes()
    c = b.copy()
    flat = c.reshape(-1)
    # changes on both sides of chunk boundaries (262144 elements a chunk)
    hits = np.array([0, 5, 262143, 262144, 262145, 524287, 700000, flat.size - 1])
    flat[hits] += 1.0
    e2 = add(store, e1, c.tobytes(), "F32", shape)
    assert e2.record["type"] == "sparse" and e2.record["count"] == len(hits)
    cand = SparseUpdate.candidate(e1.record, c.tobytes(), spec, hits)
    assert e2.record["indices_oid"] == _oid(cand.objects["indices"])
    assert e2.record["values_oid"] == _oid(cand.objects["values"])
    assert rebuilt(store, e2.record, "w", "F32", shape) == c.tobytes()
    d = np.concatenate([np.delete(c, [3, 500, 1000], axis=0), rng.standard_normal((7, 1024))])
    d = d.astype(np.float32)
    e3 = add(store, e2, d.tobytes(), "F32", d.shape)
    assert e3.record["type"] == "rows" and e3.record["dropped"] == 3
    assert e3.record["appended"] == 7
    cand = RowsUpdate.candidate(
        e2.record, c.tobytes(), shape, d.tobytes(), ValueSpec("w", "F32", d.shape)
    )
    assert cand is not None
    assert e3.record["appended_oid"] == _oid(cand.objects["appended"])
    assert e3.record["dropped_oid"] == _oid(cand.objects["dropped"])
    assert rebuilt(store, e3.record, "w", "F32", d.shape) == d.tobytes()


def test_sparse_arrays_past_the_memory_cap_give_a_delta(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sparse arrays are collected only while their compressed size stays under the cap."""
    rng = np.random.default_rng(10)
    shape = (1024, 1024)
    a = rng.standard_normal(shape).astype(np.float32)
    e0 = entry(store, "w", a.tobytes(), "F32", shape)
    b = a.copy()
    flat = b.reshape(-1)
    flat[rng.choice(flat.size, flat.size // 20, replace=False)] += 1.0
    assert add(store, e0, b.tobytes(), "F32", shape).record["type"] == "sparse"
    monkeypatch.setattr(choose, "SPARSE_MAX_HELD", 1 << 16)
    e1 = add(store, e0, b.tobytes(), "F32", shape)
    assert e1.record["type"] == "delta"
    assert rebuilt(store, e1.record, "w", "F32", shape) == b.tobytes()


@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("dtype", ["F32", "BF16"])
def test_low_rank_and_ia3_bits_do_not_depend_on_row_blocks(
    monkeypatch: pytest.MonkeyPatch, dtype: str, transpose: bool
) -> None:
    """Rebuilds apply patches block of rows by block of rows: the bits are the same as one
    whole-matrix pass."""
    from git_theta.updates import low_rank

    rng = np.random.default_rng(11)
    shape = (37, 53)
    w = raw(rng.standard_normal(shape), dtype)
    out_, in_ = (shape[1], shape[0]) if transpose else shape
    a, b = rng.standard_normal((3, in_)), rng.standard_normal((out_, 3))
    vec = rng.standard_normal(shape[1])
    whole = apply_low_rank(w, dtype, shape, a, b, 0.3, transpose)
    scaled = apply_ia3(w, dtype, shape, vec, 1)
    monkeypatch.setattr(low_rank, "BLOCK_ELEMENTS", 7)
    assert low_rank.block_bytes(dtype, shape) == 53 * dtypes.get(dtype).itemsize
    assert apply_low_rank(w, dtype, shape, a, b, 0.3, transpose) == whole
    assert apply_ia3(w, dtype, shape, vec, 1) == scaled


def test_a_small_changed_value_is_stored_whole(store: Store) -> None:
    """Under WHOLE_MAX bytes a patch is not worth its base rebuild: a sparse change to a
    small bias is a dense copy; the same change to a value of WHOLE_MAX bytes is sparse."""
    for n, want in ((choose.WHOLE_MAX // 4 - 1, "dense"), (choose.WHOLE_MAX // 4, "sparse")):
        a = np.linspace(-1, 1, n, dtype=np.float32)
        old = entry(store, "b", raw(a), "F32", (n,))
        b = a.copy()
        b[:2] += 1
        new = add(store, old, raw(b), "F32", (n,))
        assert new.record["type"] == want
        assert rebuilt(store, new.record, "b", "F32", (n,)) == raw(b)


def test_a_dense_base_that_cannot_be_beaten_is_not_encoded_again(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fine-tune-like change: the delta beats the base's own dense size by far, so the
    dense candidate is never encoded (its writer is not even opened)."""
    rng = np.random.default_rng(11)
    a = rng.standard_normal((256, 256)).astype(np.float32)
    old = entry(store, "w", raw(a), "F32", (256, 256))
    b = a * (1 + 1e-3 * rng.standard_normal(a.shape)).astype(np.float32)
    calls: list[int] = []
    real = choose._write_value
    monkeypatch.setattr(choose, "_write_value", lambda *a: calls.append(1) or real(*a))
    new = add(store, old, raw(b), "F32", (256, 256))
    assert new.record["type"] == "delta" and calls == []
    # an unrelated value: the delta does not beat the base, so dense is tried (and wins)
    c = rng.standard_normal((256, 256)).astype(np.float32)
    assert add(store, old, raw(c), "F32", (256, 256)).record["type"] == "dense"
    assert calls == [1]
