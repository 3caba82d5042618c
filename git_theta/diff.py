"""Per-parameter diff summaries of two versions of a checkpoint, from manifests and the store.

A diff never re-cleans whole files: parameters whose dtype, shape and content hash agree
are skipped, and each changed value is rebuilt from its record (any update type, chains
resolved) one block of elements at a time, so memory stays bounded by a block, not the
tensor. Figures are computed in float64 (complex128 for complex dtypes):

- `l2`: ||new - old||_2, the L2 norm of the change;
- `rel`: l2 / ||old||_2 (None when the old value is all zeros);
- `max_abs`: max |new - old|;
- `changed`: how many elements differ.

NaN against NaN counts as unchanged; NaN against a number makes `l2` and `max_abs` NaN
(the change is not a number); ||old|| leaves NaNs out.

A value whose objects are missing or corrupt gets an `error` instead of figures; the rest
of the diff goes on.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import blake3
import numpy as np

from git_theta import arrays, dtypes, filters
from git_theta.errors import GitThetaError, ObjectCorruptError
from git_theta.manifest import Entry, Manifest
from git_theta.store import Store
from git_theta.updates.base import ValueSpec, record_oids

BLOCK_ELEMENTS = 1 << 20  # elements compared at a time (8 MiB of float64 per side)


@dataclass(frozen=True)
class Figures:
    """How much a value changed (see the module docstring)."""

    numel: int
    l2: float
    old_l2: float
    max_abs: float
    changed: int

    @property
    def rel(self) -> float | None:
        return self.l2 / self.old_l2 if self.old_l2 > 0 else None

    @property
    def changed_frac(self) -> float:
        return self.changed / self.numel if self.numel else 0.0


@dataclass(frozen=True)
class ParamDiff:
    """One parameter that differs: `status` is "added", "removed" or "changed"."""

    name: str
    status: str
    old: Entry | None
    new: Entry | None
    figures: Figures | None = None
    error: str | None = None

    @property
    def dtype_changed(self) -> bool:
        return self.old is not None and self.new is not None and self.old.dtype != self.new.dtype

    @property
    def shape_changed(self) -> bool:
        return self.old is not None and self.new is not None and self.old.shape != self.new.shape


@dataclass(frozen=True)
class FileDiff:
    """The parameters that differ between two versions of one file, sorted by name."""

    path: str
    params: tuple[ParamDiff, ...]
    unchanged: int
    old_exists: bool = True
    new_exists: bool = True
    error: str | None = None  # the file could not be compared at all (then params is empty)

    def count(self, status: str) -> int:
        return sum(1 for p in self.params if p.status == status)

    @property
    def l2(self) -> float:
        """L2 norm of the change over every changed parameter with figures."""
        return math.sqrt(sum(p.figures.l2**2 for p in self.params if p.figures is not None))

    @property
    def changed_elements(self) -> int:
        return sum(p.figures.changed for p in self.params if p.figures is not None)

    @property
    def compared_elements(self) -> int:
        return sum(p.figures.numel for p in self.params if p.figures is not None)

    @property
    def errors(self) -> int:
        return sum(1 for p in self.params if p.error is not None)


def matches(name: str, patterns: Sequence[str]) -> bool:
    """True when `patterns` is empty or `name` matches one of them (fnmatch)."""
    return not patterns or any(fnmatch.fnmatchcase(name, p) for p in patterns)


def diff_manifests(
    path: str,
    old: Manifest | None,
    new: Manifest | None,
    store: Store,
    *,
    new_store: Store | None = None,
    patterns: Sequence[str] = (),
    figures: bool = True,
) -> FileDiff:
    """Compare two versions of `path` (None: the file does not exist on that side).

    Values are read from `store` (old side) and `new_store` (new side, default `store`).
    With `figures=False` only names, dtypes, shapes and hashes are compared (no store reads).
    """
    new_store = new_store or store
    before = old.by_name() if old is not None else {}
    after = new.by_name() if new is not None else {}
    out: list[ParamDiff] = []
    unchanged = 0
    for name in sorted(before.keys() | after.keys()):
        if not matches(name, patterns):
            continue
        a, b = before.get(name), after.get(name)
        if a is None:
            out.append(ParamDiff(name, "added", None, b))
        elif b is None:
            out.append(ParamDiff(name, "removed", a, None))
        elif (a.hash, a.dtype, a.shape) == (b.hash, b.dtype, b.shape):
            unchanged += 1
        elif not figures or a.shape != b.shape:
            out.append(ParamDiff(name, "changed", a, b))
        else:
            try:
                fig = compare_values(store, a, new_store, b, path)
                out.append(ParamDiff(name, "changed", a, b, figures=fig))
            except GitThetaError as exc:
                out.append(ParamDiff(name, "changed", a, b, error=str(exc)))
    return FileDiff(path, tuple(out), unchanged, old is not None, new is not None)


def _blocks(chunks: Iterable[bytes | memoryview], size: int) -> Iterator[bytes]:
    """The byte stream of `chunks` cut into blocks of exactly `size` bytes (last shorter)."""
    buf = bytearray()
    for chunk in chunks:
        buf += chunk
        while len(buf) >= size:
            yield bytes(buf[:size])
            del buf[:size]
    if buf:
        yield bytes(buf)


class _Checked:
    """The raw bytes of a stored value, block by block, checked against the manifest hash."""

    def __init__(self, store: Store, e: Entry, path: str) -> None:
        self.e = e
        self.path = path
        self.chunks = filters.rebuild(store, e.record, ValueSpec(e.name, e.dtype, e.shape, path))
        self.hash = blake3.blake3()
        self.n = 0

    def blocks(self) -> Iterator[bytes]:
        for block in _blocks(self.chunks, BLOCK_ELEMENTS * dtypes.get(self.e.dtype).itemsize):
            self.hash.update(block)
            self.n += len(block)
            yield block
        if self.n != self.e.nbytes or "blake3:" + self.hash.hexdigest() != self.e.hash:
            oids = sorted(record_oids(self.e.record)) or ["0" * 64]
            raise ObjectCorruptError(
                oids[0],
                "rebuilds to a value whose hash differs from the manifest",
                param=self.e.name,
                path=self.path,
            )


def _numbers(block: bytes, dtype: str) -> np.ndarray:
    n = len(block) // dtypes.get(dtype).itemsize
    if dtypes.get(dtype).kind == "complex":
        return arrays.to_numpy(block, dtype, (n,)).astype(np.complex128)
    return arrays.to_float(block, dtype, (n,))


def compare_values(
    old_store: Store, old: Entry, new_store: Store, new: Entry, path: str
) -> Figures:
    """Figures of the change from `old` to `new` (same shape), streamed block by block."""
    a, b = _Checked(old_store, old, path), _Checked(new_store, new, path)
    sq = old_sq = 0.0
    max_abs = 0.0
    changed = 0
    blocks_a, blocks_b = a.blocks(), b.blocks()
    for block_a in blocks_a:
        block_b = next(blocks_b, b"")
        x, y = _numbers(block_a, old.dtype), _numbers(block_b, new.dtype)
        if len(x) != len(y):
            break  # one side is short: its hash check below reports it
        both_nan = np.isnan(x) & np.isnan(y)
        d = np.where(both_nan, 0, y - x)
        sq += float(np.vdot(d, d).real)
        finite_x = np.where(np.isnan(x), 0, x)
        old_sq += float(np.vdot(finite_x, finite_x).real)
        if len(d):
            m = float(np.max(np.abs(d)))
            if math.isnan(m) or not m <= max_abs:
                max_abs = m
        changed += int(len(d) - np.count_nonzero((x == y) | both_nan))
    for rest in (blocks_a, blocks_b):  # drain both: runs their hash checks
        for _ in rest:
            pass
    numel = dtypes.numel(old.shape)
    return Figures(numel, math.sqrt(sq), math.sqrt(old_sq), max_abs, changed)


# -- rendering ---------------------------------------------------------------------------------


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.4g}"


def describe(e: Entry) -> str:
    return f"{e.dtype} [{','.join(str(d) for d in e.shape)}]"


def _param_line(p: ParamDiff) -> str:
    if p.status == "added":
        assert p.new is not None
        return f"  A {p.name}  {describe(p.new)}"
    if p.status == "removed":
        assert p.old is not None
        return f"  D {p.name}  {describe(p.old)}"
    assert p.old is not None and p.new is not None
    what = (
        describe(p.new)
        if not (p.dtype_changed or p.shape_changed)
        else (f"{describe(p.old)} -> {describe(p.new)}")
    )
    line = f"  M {p.name}  {what}"
    if p.error is not None:
        return f"{line}  ({p.error})"
    f = p.figures
    if f is None:
        return f"{line}  shape changed" if p.shape_changed else line
    return (
        f"{line}  |d|={_fmt(f.l2)}  rel={_fmt(f.rel)}  max|d|={_fmt(f.max_abs)}"
        f"  changed={100 * f.changed_frac:.2f}% ({f.changed}/{f.numel})"
    )


def render(d: FileDiff) -> str:
    """The human summary printed by `git diff` (through the diff driver) and `git theta diff`."""
    if d.error is not None:
        return f"theta diff {d.path}: cannot compare: {d.error}\n"
    if not d.old_exists:
        state = " (new file)"
    elif not d.new_exists:
        state = " (deleted)"
    else:
        state = ""
    counts = (
        f"{d.count('changed')} changed, {d.count('added')} added, "
        f"{d.count('removed')} removed, {d.unchanged} unchanged"
    )
    lines = [f"theta diff {d.path}{state}: {counts}"]
    lines += [_param_line(p) for p in d.params]
    if d.params:
        total = d.unchanged + d.count("changed") + d.count("removed") + d.count("added")
        summary = (
            f"  total: {len(d.params)} of {total} parameters differ; "
            f"{d.changed_elements} of {d.compared_elements} compared elements changed; "
            f"|d|={_fmt(d.l2)}"
        )
        if d.errors:
            summary += f"; {d.errors} could not be compared"
        lines.append(summary)
    return "\n".join(lines) + "\n"


def _entry_json(e: Entry | None) -> dict[str, Any] | None:
    if e is None:
        return None
    return {"dtype": e.dtype, "shape": list(e.shape), "hash": e.hash, "record": e.record["type"]}


def _finite(x: float | None) -> float | None:
    """JSON has no NaN or infinity: those become null (as does an undefined `rel`)."""
    return x if x is not None and math.isfinite(x) else None


def to_json(d: FileDiff) -> dict[str, Any]:
    """A JSON-ready form of `d` (stable keys, for scripts); non-finite figures are null."""
    params = []
    for p in d.params:
        item: dict[str, Any] = {
            "name": p.name,
            "status": p.status,
            "old": _entry_json(p.old),
            "new": _entry_json(p.new),
            "dtype_changed": p.dtype_changed,
            "shape_changed": p.shape_changed,
        }
        if p.figures is not None:
            f = p.figures
            item.update(
                numel=f.numel,
                l2=_finite(f.l2),
                rel=_finite(f.rel),
                max_abs=_finite(f.max_abs),
                changed=f.changed,
                changed_frac=f.changed_frac,
            )
        if p.error is not None:
            item["error"] = p.error
        params.append(item)
    return {
        "path": d.path,
        "old_exists": d.old_exists,
        "new_exists": d.new_exists,
        "error": d.error,
        "params": params,
        "totals": {
            "changed": d.count("changed"),
            "added": d.count("added"),
            "removed": d.count("removed"),
            "unchanged": d.unchanged,
            "l2": _finite(d.l2),
            "changed_elements": d.changed_elements,
            "compared_elements": d.compared_elements,
            "errors": d.errors,
        },
    }
