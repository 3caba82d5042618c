"""The interface of update records, and the walk over the objects a record needs.

A record is a small JSON object in the manifest: `{"type": "dense", "oid": ..., "size": ...}`.
Every key named `oid` or ending in `_oid` refers to a store object; an incremental record
nests its base's whole record under `base`, so the chain is named by content, never by commit.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from git_theta.store import OID_RE, Store

Record = Mapping[str, Any]
MAX_DEPTH = 256
_TYPE_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class ValueSpec:
    """What a record must rebuild: dtype, shape, and for errors the parameter and file."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    path: str | None = None


class UpdateType(ABC):
    """Rebuilds a parameter's raw bytes from its record."""

    name: ClassVar[str]

    @abstractmethod
    def chunks(
        self, record: Record, spec: ValueSpec, store: Store, resolve: Resolver
    ) -> Iterator[bytes | memoryview]:
        """The raw little-endian bytes of the value, in order, in one or more chunks.

        `resolve(record, spec)` rebuilds a nested (base) record into bytes.
        """


Resolver = Callable[[Record, ValueSpec], bytes]


def validate_record(record: Any, depth: int = 0) -> None:
    """Structure checks shared by every record type (hostile manifests stop here)."""
    if depth > MAX_DEPTH:
        raise ValueError("records nested too deeply")
    if not isinstance(record, Mapping):
        raise ValueError("record is not an object")
    kind = record.get("type")
    if not isinstance(kind, str) or not _TYPE_RE.match(kind):
        raise ValueError(f"bad record type {kind!r}")
    for key, value in record.items():
        if key == "oid" or key.endswith("_oid"):
            if not isinstance(value, str) or not OID_RE.match(value):
                raise ValueError(f"bad object id in {key!r}")
        elif isinstance(value, Mapping):
            validate_record(value, depth + 1)


def record_oids(record: Record) -> set[str]:
    """Every object id a record refers to, nested bases included."""
    out: set[str] = set()
    stack: list[Any] = [record]
    while stack:
        r = stack.pop()
        if isinstance(r, Mapping):
            for key, value in r.items():
                if (key == "oid" or key.endswith("_oid")) and isinstance(value, str):
                    out.add(value)
                elif isinstance(value, Mapping):
                    stack.append(value)
    return out
