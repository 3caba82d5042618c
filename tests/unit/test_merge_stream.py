"""Block-wise merging gives bit for bit the whole-value result, and checks its inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from git_theta import arrays, merge_driver, merge_stream
from git_theta.checkpoints.base import TensorSpec
from git_theta.errors import ObjectCorruptError
from git_theta.filters import CleanStats, _store_dense, raw_hash
from git_theta.manifest import Entry
from git_theta.merge_driver import Conflict, merge_blockwise, merge_value, parse_choice
from git_theta.store import Store

# inf - inf in the deltas of the special values: NaN, as intended
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def _stored(store: Store, name: str, dtype: str, shape: tuple[int, ...], data: bytes) -> Entry:
    spec = TensorSpec(name, dtype, shape)
    return Entry(
        name,
        dtype,
        shape,
        raw_hash(data),
        _store_dense(store, memoryview(data), spec, raw_hash(data), CleanStats()),
    )


def _value(rng: np.random.Generator, dtype: str, shape: tuple[int, ...]) -> bytes:
    v = rng.standard_normal(shape) * 3
    flat = v.reshape(-1)
    if flat.size > 8:  # values that exercise the casts: NaN, infinities, -0, tiny, huge
        flat[1:7] = [np.nan, np.inf, -np.inf, -0.0, 1e-300, 65519.0]
    return arrays.from_float(v, dtype)


def _entry(
    store: Store,
    rng: np.random.Generator,
    name: str,
    dtype: str,
    shape: tuple[int, ...],
    fisher: bool = False,
) -> Entry:
    e = _stored(store, name, dtype, shape, _value(rng, dtype, shape))
    if not fisher:
        return e
    f = np.abs(rng.standard_normal(shape)).astype(np.float32)
    f.reshape(-1)[::5] = 0
    fe = _stored(store, name, "F32", shape, f.tobytes())
    return Entry(e.name, e.dtype, e.shape, e.hash, e.record, {"fisher": fe.record})


DTYPES = [
    ("F64", "F64", "F64"),
    ("F32", "F32", "F32"),
    ("F16", "F16", "F16"),
    ("BF16", "BF16", "BF16"),
    ("F8_E4M3", "F8_E4M3", "F8_E4M3"),
    ("F8_E5M2", "F8_E5M2", "F8_E5M2"),
    ("F16", "F32", "BF16"),  # mixed: computed in float64 and float32, cast to ours' type
]
CHOICES = [
    "average",
    "average weights=1,3",
    "fisher weights=2,1",
    "task-arithmetic scale=0.7",
    "dare",
    "dare density=0.3 seed=5 scale=1.5",
]


@pytest.mark.parametrize("types", DTYPES, ids=lambda t: "-".join(t))
@pytest.mark.parametrize("text", CHOICES)
def test_blockwise_equals_the_whole_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, types: tuple[str, str, str], text: str
) -> None:
    monkeypatch.setattr(merge_stream, "BLOCK", 97)  # many blocks, a short last one
    store = Store(tmp_path / "store")
    rng = np.random.default_rng(len(text) + len(DTYPES))
    choice = parse_choice(text)
    assert merge_driver.load_strategy(choice.strategy).blockwise
    shape = (41, 23)
    db, do, dt = types
    ours = _entry(store, rng, "w", do, shape, fisher=True)
    theirs = _entry(store, rng, "w", dt, shape, fisher=True)
    bases = [_entry(store, rng, "w", db, shape)]
    if "average" in text or "fisher" in text:
        bases.append(None)
    for base in bases:
        c = Conflict("w", base, ours, theirs)
        dtype, whole = merge_value(store, c, choice, "m")
        with store.transaction() as txn:
            h, record = merge_blockwise(store, txn, c, choice, "m")
        assert dtype == do
        assert h == raw_hash(whole)
        assert merge_driver.load_value(store, Entry("w", do, shape, h, record), "m").tobytes() == (
            arrays.to_numpy(whole, do, shape).astype(merge_driver.compute_dtype(do)).tobytes()
        )
        # the very object the whole-value path stores
        with store.transaction() as txn:
            assert merge_driver._store_raw(txn, whole, do) == (h, record)


def test_dare_blocks_draw_the_masks_of_the_whole_value() -> None:
    from git_theta.merges.base import MergeInput
    from git_theta.merges.dare import Dare

    rng = np.random.default_rng(3)
    base, ours, theirs = (rng.standard_normal(1000) for _ in range(3))
    opts = {"seed": "4", "density": "0.4"}
    whole = Dare().merge(MergeInput("p", ours, theirs, base, options=opts))
    parts = [
        Dare().merge(
            MergeInput(
                "p",
                ours[i : i + 77],
                theirs[i : i + 77],
                base[i : i + 77],
                options=opts,
                offset=i,
                size=1000,
            )
        )
        for i in range(0, 1000, 77)
    ]
    assert np.concatenate(parts).tobytes() == whole.tobytes()


def test_empty_parameter(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    rng = np.random.default_rng(0)
    c = Conflict(
        "e", None, _entry(store, rng, "e", "F32", (0, 4)), _entry(store, rng, "e", "F32", (0, 4))
    )
    choice = parse_choice("average")
    _, whole = merge_value(store, c, choice, "m")
    with store.transaction() as txn:
        assert merge_blockwise(store, txn, c, choice, "m") == merge_driver._store_raw(
            txn, whole, "F32"
        )


def test_rechunk_cuts_exact_pieces() -> None:
    data = bytes(range(256)) * 10
    pieces = [data[:5], memoryview(data[5:700]), b"", data[700:701], data[701:]]
    out = [bytes(p) for p in merge_stream.rechunk(pieces, 64)]
    assert b"".join(out) == data
    assert [len(p) for p in out] == [64] * 40
    assert [len(bytes(p)) for p in merge_stream.rechunk([data], 1000)] == [1000, 1000, 560]


def _tampered(e: Entry) -> Entry:
    # the same objects, but a manifest hash they do not rebuild to
    return Entry(e.name, e.dtype, e.shape, "blake3:" + "0" * 64, e.record, e.extra)


def test_a_value_that_rebuilds_wrong_stops_the_merge_and_stores_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(merge_stream, "BLOCK", 100)
    store = Store(tmp_path / "store")
    rng = np.random.default_rng(1)
    ours, theirs = (_entry(store, rng, "w", "F32", (1000,)) for _ in range(2))
    before = set(store.iter_oids())
    for c in (
        Conflict("w", None, _tampered(ours), theirs),
        Conflict("w", None, ours, _tampered(theirs)),
    ):
        bad = "rebuilds to a value whose hash differs"
        with pytest.raises(ObjectCorruptError, match=bad), store.transaction() as txn:
            merge_blockwise(store, txn, c, parse_choice("average"), "m")
    assert set(store.iter_oids()) == before


def test_a_fisher_of_the_wrong_size_fails_as_in_the_whole_value_path(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    rng = np.random.default_rng(2)
    ours = _entry(store, rng, "w", "F32", (10,), fisher=True)
    theirs = _entry(store, rng, "w", "F32", (10,))
    short = _stored(store, "w", "F32", (9,), np.ones(9, np.float32).tobytes())
    theirs = Entry("w", "F32", (10,), theirs.hash, theirs.record, {"fisher": short.record})
    c = Conflict("w", None, ours, theirs)
    with pytest.raises(ObjectCorruptError) as whole:
        merge_value(store, c, parse_choice("fisher"), "m")
    with pytest.raises(ObjectCorruptError) as streamed, store.transaction() as txn:
        merge_blockwise(store, txn, c, parse_choice("fisher"), "m")
    assert str(streamed.value) == str(whole.value)
    assert "holds 36 bytes" in str(streamed.value)


def test_describe_reads_block_by_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(merge_stream, "BLOCK", 50)
    store = Store(tmp_path / "store")
    rng = np.random.default_rng(5)
    values = [rng.standard_normal((30, 11)) for _ in range(3)]
    b, o, t = (_stored(store, "w", "F64", (30, 11), v.tobytes()) for v in values)
    hint = merge_driver.describe(store, Conflict("w", b, o, t), "m")
    assert hint is not None and hint.cosine is not None
    d_o, d_t = values[1] - values[0], values[2] - values[0]
    assert hint.norm_ours == pytest.approx(np.linalg.norm(d_o), rel=1e-12)
    assert hint.norm_theirs == pytest.approx(np.linalg.norm(d_t), rel=1e-12)
    cos = np.vdot(d_o, d_t) / (np.linalg.norm(d_o) * np.linalg.norm(d_t))
    assert hint.cosine == pytest.approx(cos, rel=1e-9)
