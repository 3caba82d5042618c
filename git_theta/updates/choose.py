"""The automatic choice, on clean, of how a changed parameter is stored.

For a parameter that changed against the version in the index, with the same dtype, the
candidates are (each only where it applies):

- `sparse`: few elements changed (at most SPARSE_MAX_FRACTION of them);
- `delta`: bit patterns XORed with the base, for dense small changes (fine-tunes);
- `rows`: the shape changed only in its leading axis and the base's rows survive in order;
- `dense`: always; free when the same value is already stored (a revert).

The smallest wins, counting the bytes of its objects plus its record text. XOR was measured
against integer difference on real MiniLM weights moved by relative noise 1e-3 (codec
ratio, smaller is better): fp32 0.542 (xor) vs 0.584 (sub), bf16 0.100 vs 0.141, dense
0.847 / 0.692; so clean uses XOR (the `delta` type still reads both).

The base value is rebuilt from the previous record (one parameter at a time) and checked
against its manifest hash; a base that cannot be rebuilt (objects not fetched, damage) or
a chain already `chain_max()` records deep gets a dense keyframe instead.
"""

from __future__ import annotations

import os
from functools import cache
from typing import TYPE_CHECKING, Any

from git_theta import dtypes
from git_theta.checkpoints.base import TensorSpec
from git_theta.errors import GitThetaError
from git_theta.store import Store
from git_theta.updates.base import Record, ValueSpec
from git_theta.updates.delta import DeltaUpdate
from git_theta.updates.incremental import Candidate, depth, encode_bytes
from git_theta.updates.rows import RowsUpdate
from git_theta.updates.sparse import SparseUpdate, changed_positions

if TYPE_CHECKING:
    from git_theta.filters import CleanStats
    from git_theta.manifest import Entry

DEFAULT_CHAIN_MAX = 8
SPARSE_MAX_FRACTION = 0.3  # beyond this, index + value per element outweighs a dense copy
DELTA_MIN_FRACTION = 0.01  # below this, sparse always wins
SAMPLE = 1 << 20  # bytes per sample when estimating a dense copy of a large value
CHAIN_ENV = "GIT_THETA_CHAIN_MAX"


@cache
def chain_max() -> int:
    """Longest chain of incremental records before a dense keyframe: $GIT_THETA_CHAIN_MAX,
    else `git config theta.chain.max`, else 8. 0 turns incremental storage off. Read once."""
    from git_theta import git

    value = os.environ.get(CHAIN_ENV)
    if value is None:
        value = git.config_get("theta.chain.max")
    if value is None:
        return DEFAULT_CHAIN_MAX
    try:
        n = int(value)
    except ValueError:
        raise GitThetaError(
            f"theta.chain.max must be a whole number, not {value!r}",
            hint="fix it with `git config theta.chain.max 8`",
        ) from None
    return max(0, n)


def store_changed(
    txn: Store, data: memoryview, spec: TensorSpec, h: str, old: Entry | None, st: CleanStats
) -> Record:
    """Store a new or changed value the cheapest way; return its record."""
    from git_theta import filters

    group = dtypes.get(spec.dtype).itemsize
    kind = f"dense/g{group}"
    if old is None or old.dtype != spec.dtype or txn.recall(h, kind) is not None:
        return filters._store_dense(txn, data, spec, h, st)
    if depth(old.record) + 1 > chain_max():
        return filters._store_dense(txn, data, spec, h, st)
    base = _rebuild_base(txn, old)
    if base is None:
        return filters._store_dense(txn, data, spec, h, st)
    vspec = ValueSpec(spec.name, spec.dtype, spec.shape)
    candidates = _incremental(old, base, data, vspec)
    if not candidates:
        return filters._store_dense(txn, data, spec, h, st)
    best = min(candidates, key=lambda c: c.cost)
    dense = _dense_unless_beaten(data, group, best.cost)
    if dense is not None and dense.cost <= best.cost:
        best = dense
    record, new_objects, new_bytes = best.commit(txn)
    st.new_objects += new_objects
    st.new_bytes += new_bytes
    if record["type"] == "dense":
        from git_theta.store import StoredObject

        txn.remember(h, kind, StoredObject(record["oid"], record["size"]))
    return record


def _rebuild_base(txn: Store, old: Entry) -> bytes | None:
    from git_theta import filters

    try:
        base = b"".join(
            bytes(c)
            for c in filters.rebuild(txn, old.record, ValueSpec(old.name, old.dtype, old.shape))
        )
    except GitThetaError:
        return None
    if len(base) != old.nbytes or filters.raw_hash(base) != old.hash:
        return None
    return base


def _incremental(old: Entry, base: bytes, data: memoryview, spec: ValueSpec) -> list[Candidate]:
    out: list[Candidate] = []
    if spec.shape != old.shape:
        rows = RowsUpdate.candidate(old.record, base, old.shape, data, spec)
        return [rows] if rows is not None else []
    itemsize = dtypes.get(spec.dtype).itemsize
    positions = changed_positions(base, data, itemsize)
    numel = max(1, dtypes.numel(spec.shape))
    fraction = len(positions) / numel
    if fraction <= SPARSE_MAX_FRACTION:
        out.append(SparseUpdate.candidate(old.record, data, spec, positions))
    if fraction >= DELTA_MIN_FRACTION:
        out.append(DeltaUpdate.candidate(old.record, base, data, spec, "xor"))
    return out


def _dense_unless_beaten(data: memoryview, group: int, beat: int) -> Candidate | None:
    """The dense candidate, or None when samples show it cannot beat `beat` bytes.

    A large value is first sampled (start, middle, end): if even a 10% margin leaves the
    extrapolated dense size above `beat`, the full encoding is skipped (it would lose).
    """
    n = len(data)
    if n > 4 * SAMPLE:
        starts = [s - s % group for s in (0, n // 2, n - SAMPLE)]
        sampled = sum(len(encode_bytes(data[s : s + SAMPLE], group)) for s in starts)
        estimate = sampled * n / (len(starts) * SAMPLE)
        if estimate * 0.9 > beat:
            return None
    record: dict[str, Any] = {"type": "dense"}
    return Candidate(record, {"": encode_bytes(data, group)})
