"""Three-way merge of manifests, parameter by parameter (git's `merge.theta.driver`).

Per parameter, by the identity of its value (dtype, shape, hash of the raw bytes):
changed on one side only, or changed the same way on both -> taken without asking; added or
removed on one side -> follows that side; changed differently on both sides, added
differently on both, or changed on one side and removed on the other -> a *conflict*,
merged by the strategy a chooser assigns to it. Values are rebuilt and merged one parameter
at a time; a `blockwise` strategy gets one block of a parameter at a time (merge_stream.py),
so memory stays bounded by a few blocks; the others hold the whole parameter (three copies
plus the result).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from git_theta import arrays, codec, dtypes, manifest, merge_stream, plugins
from git_theta.checkpoints.base import CheckpointFormat, TensorSpec
from git_theta.errors import MergeConflictError, MergeError, ObjectCorruptError
from git_theta.filters import load_blob, raw_hash, rebuild
from git_theta.manifest import Entry, Manifest
from git_theta.merges.base import NEEDS_BASE, NEEDS_FISHER, MergeInput, MergeStrategy
from git_theta.store import Store
from git_theta.updates.base import Record, ValueSpec
from git_theta.updates.dense import DenseUpdate, store_value

OURS, THEIRS, BASE = "ours", "theirs", "base"


@dataclass(frozen=True)
class Choice:
    """A strategy name and its options, as written `average weights=1,3`."""

    strategy: str
    options: Mapping[str, str] = field(default_factory=dict)

    def render(self) -> str:
        return " ".join([self.strategy, *(f"{k}={v}" for k, v in sorted(self.options.items()))])


def parse_choice(text: str, where: str = "strategy") -> Choice:
    """`NAME [KEY=VALUE ...]` -> Choice; the strategy must be installed, options known."""
    words = shlex.split(text, comments=True)
    if not words:
        raise MergeError(f"{where}: empty strategy")
    options: dict[str, str] = {}
    for word in words[1:]:
        key, eq, value = word.partition("=")
        if not eq or not key:
            raise MergeError(f"{where}: option {word!r} is not KEY=VALUE")
        options[key] = value
    strategy = load_strategy(words[0])
    strategy.check_options(options)
    return Choice(words[0], options)


def load_strategy(name: str) -> MergeStrategy:
    return plugins.load(plugins.MERGES, name)  # type: ignore[no-any-return]


def strategy_names() -> list[str]:
    return list(plugins.available(plugins.MERGES))


# -- planning: which parameters need a decision ------------------------------------------------


def _key(e: Entry | None) -> tuple[str, tuple[int, ...], str] | None:
    return None if e is None else (e.dtype, e.shape, e.hash)


@dataclass(frozen=True)
class Conflict:
    """A parameter both sides changed differently (an absent side is None)."""

    name: str
    base: Entry | None
    ours: Entry | None
    theirs: Entry | None

    @property
    def kind(self) -> str:
        if self.ours is None:
            return "removed by ours, changed by theirs"
        if self.theirs is None:
            return "changed by ours, removed by theirs"
        if self.base is None:
            return "added differently on both sides"
        return "changed differently on both sides"


@dataclass(frozen=True)
class Plan:
    """Entries decided by the three-way rules (None: removed), and the conflicts left."""

    decided: Mapping[str, Entry | None]
    conflicts: tuple[Conflict, ...]


def plan(base: Manifest | None, ours: Manifest, theirs: Manifest) -> Plan:
    b = base.by_name() if base is not None else {}
    o, t = ours.by_name(), theirs.by_name()
    decided: dict[str, Entry | None] = {}
    conflicts = []
    for name in sorted(set(b) | set(o) | set(t)):
        eb, eo, et = b.get(name), o.get(name), t.get(name)
        kb, ko, kt = _key(eb), _key(eo), _key(et)
        if ko == kt:
            # same value on both sides: ours' entry, unless only theirs touched the extras
            decided[name] = et if (eo == eb and et != eb) else eo
        elif ko == kb:
            decided[name] = et
        elif kt == kb:
            decided[name] = eo
        else:
            conflicts.append(Conflict(name, eb, eo, et))
    return Plan(decided, tuple(conflicts))


# -- values ------------------------------------------------------------------------------------


def load_value(store: Store, e: Entry, path: str | None) -> np.ndarray:
    """The parameter's values as floats (see compute_dtype), checked against its hash."""
    data = b"".join(
        bytes(c) for c in rebuild(store, e.record, ValueSpec(e.name, e.dtype, e.shape, path))
    )
    if len(data) != e.nbytes or raw_hash(data) != e.hash:
        raise ObjectCorruptError(
            sorted(_record_oids(e))[0],
            "rebuilds to a value whose hash differs",
            param=e.name,
            path=path,
        )
    return arrays.to_numpy(data, e.dtype, e.shape).astype(compute_dtype(e.dtype))


def compute_dtype(dtype: str) -> type[np.floating]:
    """float64 for 32- and 64-bit values (exact results); float32, half the memory, for the
    16- and 8-bit types, which float32 represents exactly."""
    return np.float64 if dtypes.get(dtype).itemsize >= 4 else np.float32


def load_fisher(store: Store, e: Entry | None, path: str | None) -> np.ndarray | None:
    if e is None or "fisher" not in e.extra:
        return None
    spec = ValueSpec(e.name + " (fisher)", "F32", e.shape, path)
    data = b"".join(bytes(c) for c in rebuild(store, e.extra["fisher"], spec))
    if len(data) != dtypes.nbytes("F32", e.shape):
        raise MergeError(f"{path}: Fisher information of {e.name} does not match its shape")
    return arrays.to_numpy(data, "F32", e.shape).astype(compute_dtype(e.dtype))


def _record_oids(e: Entry) -> set[str]:
    from git_theta.updates.base import record_oids

    return record_oids(e.record) or {"0" * 64}


@dataclass(frozen=True)
class Hint:
    """How the two sides moved a parameter away from the base."""

    norm_ours: float
    norm_theirs: float
    cosine: float | None


def describe(store: Store, c: Conflict, path: str | None) -> Hint | None:
    """Norms of both deltas and their cosine (None when a side or the base is missing)."""
    if c.base is None or c.ours is None or c.theirs is None:
        return None
    if not (c.base.shape == c.ours.shape == c.theirs.shape):
        return None
    # block by block, sums in float64: memory stays bounded for any parameter size
    streams: list[merge_stream.Stream | None] = [
        merge_stream.value_stream(e, compute_dtype(e.dtype), path)
        for e in (c.base, c.ours, c.theirs)
    ]
    oo = tt = ot = 0.0
    for b, o, t in merge_stream.aligned_blocks(store, streams, path, merge_stream.BLOCK):
        assert b is not None and o is not None and t is not None
        d_o, d_t = o - b, t - b
        oo += float(np.dot(d_o, d_o))
        tt += float(np.dot(d_t, d_t))
        ot += float(np.dot(d_o, d_t))
    no, nt = float(np.sqrt(oo)), float(np.sqrt(tt))
    cos = ot / (no * nt) if no > 0 and nt > 0 else None
    return Hint(no, nt, cos)


# -- merging -----------------------------------------------------------------------------------

# A chooser gets every conflict and returns a Choice for those it resolves (it may leave
# some out); it raises MergeConflictError(aborted=True) to abort.
Chooser = Callable[[Sequence[Conflict]], Mapping[str, Choice]]


def check_choice(c: Conflict, choice: Choice, path: str) -> None:
    """Fail early, naming the parameter, when `choice` cannot merge conflict `c`."""
    strategy = load_strategy(choice.strategy)
    if strategy.picks is not None:
        if strategy.picks == BASE and c.base is None:
            raise MergeError(f"{path}: {c.name} has no common ancestor, so take-base cannot apply")
        return
    if c.ours is None or c.theirs is None:
        raise MergeError(
            f"{path}: {c.name} was {c.kind}; {choice.strategy} needs both values",
            hint="choose take-ours or take-theirs for it",
        )
    if c.ours.shape != c.theirs.shape:
        raise MergeError(
            f"{path}: {c.name} has shape {list(c.ours.shape)} in ours and "
            f"{list(c.theirs.shape)} in theirs; {choice.strategy} cannot combine them",
            hint="choose take-ours or take-theirs for it",
        )
    for e in (c.ours, c.theirs, c.base):
        if e is not None and not dtypes.get(e.dtype).is_float:
            raise MergeError(
                f"{path}: {c.name} holds {e.dtype} values; {choice.strategy} only merges floats",
                hint="choose take-ours, take-theirs or take-base for it",
            )
    if c.base is None and NEEDS_BASE in strategy.needs:
        raise MergeError(
            f"{path}: {choice.strategy} needs the common ancestor of {c.name}, but both "
            "sides added it",
            hint="choose take-ours, take-theirs, average or fisher for it",
        )
    if c.base is not None and c.base.shape != c.ours.shape and NEEDS_BASE in strategy.needs:
        raise MergeError(
            f"{path}: {c.name} changed shape since the common ancestor; "
            f"{choice.strategy} needs the ancestor's value",
            hint="choose take-ours, take-theirs or average for it",
        )
    if NEEDS_FISHER in strategy.needs:
        for side, e in ((OURS, c.ours), (THEIRS, c.theirs)):
            if "fisher" not in e.extra:
                raise MergeError(
                    f"{path}: {choice.strategy} merge of {c.name}: {side} has no Fisher "
                    "information for it",
                    hint="store it on that branch with `git theta add PATH --fisher FILE`, "
                    "or choose another strategy for this parameter",
                )


def merge_value(store: Store, c: Conflict, choice: Choice, path: str | None) -> tuple[str, bytes]:
    """(dtype, raw bytes) of the merged value of conflict `c` (both sides present)."""
    assert c.ours is not None and c.theirs is not None
    strategy = load_strategy(choice.strategy)
    needs = strategy.needs
    base = (
        load_value(store, c.base, path)
        if c.base is not None and c.base.shape == c.ours.shape
        else None
    )
    fisher = NEEDS_FISHER in needs
    inp = MergeInput(
        name=c.name,
        ours=load_value(store, c.ours, path),
        theirs=load_value(store, c.theirs, path),
        base=base,
        fisher_ours=load_fisher(store, c.ours, path) if fisher else None,
        fisher_theirs=load_fisher(store, c.theirs, path) if fisher else None,
        options=choice.options,
    )
    out = np.asarray(strategy.merge(inp))
    if out.shape != c.ours.shape:
        raise MergeError(f"strategy {choice.strategy} returned shape {out.shape} for {c.name}")
    return c.ours.dtype, arrays.from_float(out, c.ours.dtype)


def merge_blockwise(
    store: Store, txn: Store, c: Conflict, choice: Choice, path: str | None
) -> tuple[str, Record]:
    """(raw hash, dense record) of the merged value of `c`, merged and stored block by block.

    Bit for bit what merge_value and _store_raw give, for a `blockwise` strategy.
    """
    assert c.ours is not None and c.theirs is not None
    ours, theirs = c.ours, c.theirs
    strategy = load_strategy(choice.strategy)
    base = c.base if c.base is not None and c.base.shape == ours.shape else None
    fisher = NEEDS_FISHER in strategy.needs

    def fisher_of(e: Entry) -> merge_stream.Stream | None:
        if not fisher or "fisher" not in e.extra:
            return None
        return merge_stream.fisher_stream(e, compute_dtype(e.dtype), path)

    streams = [
        merge_stream.value_stream(e, compute_dtype(e.dtype), path) if e is not None else None
        for e in (base, ours, theirs)
    ]
    streams += [fisher_of(ours), fisher_of(theirs)]
    numel = dtypes.numel(ours.shape)

    def merged() -> Iterator[bytes]:
        offset = 0
        block = merge_stream.BLOCK
        for b, o, t, fo, ft in merge_stream.aligned_blocks(store, streams, path, block):
            assert o is not None and t is not None
            inp = MergeInput(
                name=c.name,
                ours=o,
                theirs=t,
                base=b,
                fisher_ours=fo,
                fisher_theirs=ft,
                options=choice.options,
                offset=offset,
                size=numel,
            )
            out = np.asarray(strategy.merge(inp))
            if out.shape != o.shape:
                raise MergeError(
                    f"strategy {choice.strategy} returned shape {out.shape} for a block "
                    f"of shape {o.shape} of {c.name}"
                )
            offset += o.size
            yield arrays.from_float(out, ours.dtype)

    return merge_stream.DenseSink(txn, ours.dtype, ours.shape).store(merged())


def _store_raw(txn: Store, data: bytes, dtype: str) -> tuple[str, dict[str, object]]:
    h = raw_hash(data)
    group = dtypes.get(dtype).itemsize
    kind = f"dense/g{group}"
    obj = txn.recall(h, kind)
    if obj is None:
        obj = store_value(txn, memoryview(data), group)
        txn.remember(h, kind, obj)
    return h, DenseUpdate.record(obj)


def resolve_conflicts(
    store: Store,
    txn: Store,
    conflicts: Sequence[Conflict],
    choices: Mapping[str, Choice],
    path: str,
) -> Iterator[tuple[str, Entry | None]]:
    """Merged entry (None: removed) of each conflict, computed one parameter at a time."""
    for c in conflicts:
        choice = choices[c.name]
        strategy = load_strategy(choice.strategy)
        if strategy.picks is not None:
            yield c.name, {OURS: c.ours, THEIRS: c.theirs, BASE: c.base}[strategy.picks]
            continue
        assert c.ours is not None
        if strategy.blockwise:
            dtype = c.ours.dtype
            h, record = merge_blockwise(store, txn, c, choice, path)
        else:
            dtype, data = merge_value(store, c, choice, path)
            h, record = _store_raw(txn, data, dtype)
            del data
        yield c.name, Entry(c.name, dtype, c.ours.shape, h, record)


def merge(
    base: Manifest | None,
    ours: Manifest,
    theirs: Manifest,
    store: Store,
    *,
    path: str,
    choose: Chooser,
) -> Manifest:
    """The merged manifest; new objects (values, skeleton) are published only on success.

    Raises MergeConflictError listing the conflicts `choose` left unresolved.
    """
    p = plan(base, ours, theirs)
    choices = dict(choose(p.conflicts)) if p.conflicts else {}
    unresolved = [c.name for c in p.conflicts if c.name not in choices]
    if unresolved:
        raise MergeConflictError(path, unresolved)
    for c in p.conflicts:
        check_choice(c, choices[c.name], path)
    merged = dict(p.decided)
    with store.transaction() as txn:
        merged.update(resolve_conflicts(store, txn, p.conflicts, choices, path))
        entries = [e for e in merged.values() if e is not None]
        fmt_name, skel_oid, skel_size = merged_skeleton(
            store, txn, base, ours, theirs, entries, path
        )
    return manifest.build(fmt_name, skel_oid, skel_size, entries)


def _specs(entries: Sequence[Entry]) -> set[tuple[str, str, tuple[int, ...]]]:
    return {(e.name, e.dtype, e.shape) for e in entries}


def merged_skeleton(
    store: Store,
    txn: Store,
    base: Manifest | None,
    ours: Manifest,
    theirs: Manifest,
    entries: Sequence[Entry],
    path: str,
) -> tuple[str, str, int]:
    """(format, skeleton oid, size): ours' skeleton unless only theirs changed it, rebuilt by
    the format when the merged parameters (names, dtypes, shapes) differ from its own."""
    side = theirs if base is not None and ours.skeleton_oid == base.skeleton_oid else ours
    if _specs(side.entries) == _specs(entries):
        return side.format, side.skeleton_oid, side.skeleton_size
    fmt: CheckpointFormat = plugins.load(plugins.CHECKPOINTS, side.format)
    skeleton = load_blob(store, side.skeleton_oid, path=path)
    specs = {e.name: TensorSpec(e.name, e.dtype, e.shape) for e in entries}
    try:
        new = fmt.respec(skeleton, specs)
    except NotImplementedError:
        raise MergeError(
            f"{path}: the merge adds, removes or reshapes parameters, and the {side.format} "
            "format cannot rebuild its file layout for that",
            hint=f"resolve those parameters with take-ours/take-theirs, or merge by hand from "
            f"`git theta resolve {path} --export DIR`",
        ) from None
    obj = txn.put(codec.encode(new, 1))
    return side.format, obj.oid, obj.size  # manifests record the stored size
