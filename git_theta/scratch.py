"""A throwaway overlay over the store: clean a checkpoint in memory, never touch the store.

`git theta status`, `git theta diff` and the diff driver must compare a working-tree
checkpoint against a manifest without adding anything to the repository. They clean the
file into a `ScratchStore`: new objects land in a private directory under `theta/tmp`
(same filesystem, so no copy), reads fall back to the real store, and the directory is
deleted when the block ends. Unchanged parameters are only hashed (clean's `previous`).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from git_theta import filters, manifest
from git_theta.manifest import Manifest
from git_theta.store import Store, StoredObject
from git_theta.streams import ByteSource


class ScratchStore(Store):
    """Writes go to `root` (a scratch directory); reads see `root` first, then `base`."""

    def __init__(self, root: Path, base: Store) -> None:
        super().__init__(root)
        self.base = base

    def has(self, oid: str) -> bool:
        return super().has(oid) or self.base.has(oid)

    def _location(self, oid: str) -> Path:
        own = super()._location(oid)
        return own if own.is_file() else self.base._location(oid)

    def recall(self, raw_hash: str, kind: str) -> StoredObject | None:
        """A value the real store already holds (say, `git diff` just cleaned the file) is
        found through its raw map and not encoded again."""
        return super().recall(raw_hash, kind) or self.base.recall(raw_hash, kind)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Store]:
        """No staging: everything written here is thrown away with the scratch directory."""
        yield self


@contextlib.contextmanager
def scratch(store: Store) -> Iterator[ScratchStore]:
    """A ScratchStore over `store`, removed with everything in it when the block ends."""
    store.tmp.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(dir=store.tmp, prefix="scratch-"))
    try:
        yield ScratchStore(root, store)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def clean_file(
    path: Path, label: str, store: ScratchStore, previous: Manifest | None = None
) -> Manifest:
    """The manifest of the checkpoint (or manifest) at `path`, its new objects in `store`."""
    with open(path, "rb") as f:
        text = filters.clean(ByteSource(f), label, store, previous=previous)
    return manifest.parse(text, label)


@dataclass(frozen=True)
class HashedTensor:
    name: str
    dtype: str
    shape: tuple[int, ...]
    hash: str


def hash_tensors(path: Path, label: str) -> list[HashedTensor]:
    """Name, dtype, shape and content hash of every tensor of a checkpoint file, nothing
    stored (the textconv view of a checkpoint git handed over instead of a manifest)."""
    from git_theta.checkpoints.base import TensorPart

    with open(path, "rb") as f:
        src = ByteSource(f)
        fmt = filters.detect(src.peek(filters.SNIFF_BYTES), label)
        out = [
            HashedTensor(p.spec.name, p.spec.dtype, p.spec.shape, filters.raw_hash(p.data))
            for p in fmt.split(src, label)
            if isinstance(p, TensorPart)
        ]
    return sorted(out, key=lambda t: t.name)
