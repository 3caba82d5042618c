"""`git theta add PATH --fisher FILE`: store a diagonal Fisher with a checkpoint's version.

Each tensor of FILE (any installed checkpoint format) is the diagonal Fisher information of
the parameter of the same name and shape; it is stored as F32 in the parameter's manifest
entry under `fisher`, and the `fisher` merge strategy reads it from there. Parameters FILE
does not mention simply have none. Clean keeps an unchanged parameter's entry, extras
included, so after this the working-tree file does not show as modified.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from git_theta import arrays, dtypes, git, manifest
from git_theta.checkpoints.base import SkeletonPart
from git_theta.errors import CheckpointError, GitThetaError
from git_theta.filters import SNIFF_BYTES, detect, raw_hash
from git_theta.manifest import Entry, Manifest
from git_theta.store import Store
from git_theta.streams import ByteSource
from git_theta.updates.dense import DenseUpdate, store_value


def read_fisher(
    src: ByteSource, fisher_path: str, m: Manifest, store: Store, path: str
) -> dict[str, dict[str, Any]]:
    """{parameter: record of its F32 Fisher diagonal}, stored in `store` one tensor at a time."""
    entries = m.by_name()
    fmt = detect(src.peek(SNIFF_BYTES), fisher_path)
    out: dict[str, dict[str, Any]] = {}
    for part in fmt.split(src, fisher_path):
        if isinstance(part, SkeletonPart):
            continue
        spec = part.spec
        e = entries.get(spec.name)
        if e is None:
            raise CheckpointError(
                fisher_path,
                f"tensor {spec.name} is not a parameter of {path}",
                hint="the Fisher file must use the checkpoint's parameter names",
            )
        if spec.shape != e.shape:
            raise CheckpointError(
                fisher_path,
                f"tensor {spec.name} has shape {list(spec.shape)} but the parameter has "
                f"{list(e.shape)}",
            )
        if not dtypes.get(spec.dtype).is_float:
            raise CheckpointError(fisher_path, f"tensor {spec.name} is {spec.dtype}, not floats")
        values = arrays.to_float(part.data, spec.dtype, spec.shape)
        if not np.all(np.isfinite(values)) or np.any(values < 0):
            raise CheckpointError(
                fisher_path,
                f"tensor {spec.name} has negative or non-finite values; a diagonal Fisher is "
                "a mean of squared gradients",
            )
        raw = arrays.from_float(values, "F32")
        kind = "dense/g4"
        h = raw_hash(raw)
        obj = store.recall(h, kind)
        if obj is None:
            obj = store_value(store, memoryview(raw), 4)
            store.remember(h, kind, obj)
        out[spec.name] = DenseUpdate.record(obj)
    return out


def with_fisher(m: Manifest, fisher: Mapping[str, Mapping[str, Any]]) -> Manifest:
    """`m` with the given Fisher records attached (other entries unchanged)."""
    entries = [
        Entry(e.name, e.dtype, e.shape, e.hash, e.record, {**e.extra, "fisher": fisher[e.name]})
        if e.name in fisher
        else e
        for e in m.entries
    ]
    return manifest.build(m.format, m.skeleton_oid, m.skeleton_size, entries)


def add_with_fisher(path: str, fisher_path: str, store: Store) -> tuple[str, int]:
    """`git add PATH`, then restage its manifest with the Fisher diagonals of FISHER_PATH.

    Returns (repository-relative path, number of parameters given a Fisher diagonal).
    """
    root = git.toplevel()
    rel = Path(os.path.relpath(os.path.abspath(path), root)).as_posix()
    git.add(rel, cwd=root)
    staged = git.index_entries(rel, cwd=root)
    if 0 not in staged:
        raise GitThetaError(f"{rel} is not staged after `git add`", hint="is it ignored?")
    mode, oid = staged[0]
    data = git.show_blob(oid, cwd=root) or b""
    if not manifest.is_manifest(data):
        raise GitThetaError(
            f"{rel} is not tracked by git-theta", hint=f"run `git theta track {rel}` first"
        )
    m = manifest.parse(data, rel)
    with store.transaction() as txn, open(fisher_path, "rb") as f:
        fisher = read_fisher(ByteSource(f), fisher_path, m, txn, rel)
    new = with_fisher(m, fisher).render()
    git.stage_blob(rel, git.hash_object(new, cwd=root), mode, cwd=root)
    return rel, len(fisher)
