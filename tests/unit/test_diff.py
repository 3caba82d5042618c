"""diff.py figures against numpy, on a real store in a temp dir (no git)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from git_theta import arrays, diff, dtypes, filters
from git_theta.errors import ObjectMissingError
from git_theta.manifest import Entry, Manifest
from git_theta.store import Store
from git_theta.updates.dense import DenseUpdate, store_value


def put(store: Store, name: str, values: np.ndarray, dtype: str) -> Entry:
    raw = arrays.from_float(values, dtype)
    obj = store_value(store, memoryview(raw), dtypes.get(dtype).itemsize)
    shape = tuple(values.shape)
    return Entry(name, dtype, shape, filters.raw_hash(raw), DenseUpdate.record(obj))


def manifest_of(*entries: Entry) -> Manifest:
    return Manifest("safetensors", "0" * 64, 0, tuple(entries))


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "theta")


@pytest.mark.parametrize("dtype", ["F32", "BF16", "F16", "F64", "I32"])
def test_figures_match_numpy(store: Store, dtype: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(diff, "BLOCK_ELEMENTS", 1000)  # several blocks, the last one short
    rng = np.random.default_rng(0)
    old = rng.standard_normal((57, 61)) * 10
    new = old.copy()
    new[::3] += rng.standard_normal(new[::3].shape)
    a, b = put(store, "w", old, dtype), put(store, "w", new, dtype)
    fig = diff.compare_values(store, a, store, b, "m")
    x = arrays.to_float(arrays.from_float(old, dtype), dtype, old.shape)
    y = arrays.to_float(arrays.from_float(new, dtype), dtype, new.shape)
    d = y - x
    assert fig.numel == old.size
    assert fig.l2 == pytest.approx(np.linalg.norm(d), rel=1e-12)
    assert fig.rel == pytest.approx(np.linalg.norm(d) / np.linalg.norm(x), rel=1e-12)
    assert fig.max_abs == np.abs(d).max()
    assert fig.changed == np.count_nonzero(d)


def test_nan_against_nan_is_unchanged_and_dtype_change_compares_values(store: Store) -> None:
    old = np.array([1.0, np.nan, 3.0, 0.0], np.float32)
    new = np.array([1.0, np.nan, 3.5, 0.0], np.float32)
    fig = diff.compare_values(
        store, put(store, "v", old, "F32"), store, put(store, "v", new, "F16"), "m"
    )
    assert fig.changed == 1
    assert fig.max_abs == 0.5 and fig.l2 == 0.5
    assert fig.old_l2 == pytest.approx(np.sqrt(10))
    one_sided = diff.compare_values(
        store, put(store, "v", new, "F32"), store, put(store, "v", np.ones(4), "F32"), "m"
    )
    assert np.isnan(one_sided.l2) and np.isnan(one_sided.max_abs) and one_sided.changed == 3
    a, b = put(store, "n", new, "F32"), put(store, "n", np.ones(4), "F32")
    j = diff.to_json(diff.diff_manifests("m", manifest_of(a), manifest_of(b), store))
    assert j["params"][0]["l2"] is None and j["params"][0]["changed"] == 3
    assert j["totals"]["l2"] is None
    zero = diff.compare_values(
        store,
        put(store, "z", np.zeros(3), "F32"),
        store,
        put(store, "z", np.ones(3), "F32"),
        "m",
    )
    assert zero.rel is None and zero.l2 == pytest.approx(np.sqrt(3))


def test_diff_manifests_statuses_patterns_and_missing_objects(store: Store) -> None:
    a1 = put(store, "a", np.zeros(4), "F32")
    b1 = put(store, "b", np.arange(4.0), "F32")
    c1 = put(store, "c", np.ones(4), "F32")
    b2 = put(store, "b", np.arange(4.0) + 1, "F32")
    c2 = put(store, "c", np.ones(2), "F32")
    d2 = put(store, "d", np.ones(1), "F32")
    old, new = manifest_of(a1, b1, c1), manifest_of(a1, b2, c2, d2)
    d = diff.diff_manifests("m", old, new, store)
    assert [(p.name, p.status) for p in d.params] == [
        ("b", "changed"),
        ("c", "changed"),
        ("d", "added"),
    ]
    assert d.unchanged == 1
    assert d.params[0].figures is not None and d.params[0].figures.l2 == 2.0
    assert d.params[1].shape_changed and d.params[1].figures is None
    only = diff.diff_manifests("m", old, new, store, patterns=["[ab]"])
    assert [p.name for p in only.params] == ["b"] and only.unchanged == 1
    store.path(b2.record["oid"]).unlink()
    broken = diff.diff_manifests("m", old, new, store)
    err = broken.params[0].error
    assert err is not None and "missing from the local store" in err and "parameter b" in err
    assert "1 could not be compared" in diff.render(broken)
    assert diff.to_json(broken)["totals"]["errors"] == 1
    with pytest.raises(ObjectMissingError):
        diff.compare_values(store, b1, store, b2, "m")


def test_blocks_cut_exact_sizes() -> None:
    out = list(diff._blocks([b"abc", b"", b"defgh", b"ij"], 4))
    assert out == [b"abcd", b"efgh", b"ij"]
