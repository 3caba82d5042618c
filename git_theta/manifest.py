"""The manifest: the small canonical text git stores in place of a checkpoint.

    git-theta-manifest 1
    format safetensors
    skeleton <oid> <size>
    {"name":"bert.embeddings.weight","dtype":"F32","shape":[30522,384],"hash":"blake3:...","record":{...}}
    ...

One parameter per line, sorted by name, keys in a fixed order, so the same checkpoint
always renders to the same bytes and `git diff` of two manifests reads parameter by
parameter. `skeleton` names the object holding everything of the file that is not tensor
data (headers, pickles, metadata), from which the checkpoint format rebuilds the file.
The leading version number lets later versions keep reading old manifests.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from git_theta import dtypes
from git_theta.errors import ManifestError
from git_theta.store import OID_RE

MAGIC = b"git-theta-manifest "
VERSION = 1
MAX_LINE = 1 << 20
MAX_ENTRIES = 1 << 22
MAX_NAME = 4096
HASH_RE = re.compile(r"^blake3:[0-9a-f]{64}$")
# Optional per-parameter data stored beside the value, each a record of its own:
# "fisher": the parameter's diagonal Fisher information (same shape, stored as F32).
EXTRA_KEYS = frozenset({"fisher"})


@dataclass(frozen=True)
class Entry:
    """One parameter: what it is (dtype, shape, hash of its raw bytes) and how it is stored."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    hash: str
    record: Mapping[str, Any] = field(hash=False, compare=True)
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=True)

    @property
    def nbytes(self) -> int:
        return dtypes.nbytes(self.dtype, self.shape)

    def render(self) -> str:
        obj: dict[str, Any] = {
            "name": self.name,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "hash": self.hash,
            "record": _canonical(self.record),
        }
        for key in sorted(self.extra):
            obj[key] = _canonical(self.extra[key])
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=True)


def _canonical(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _canonical(value[k]) for k in sorted(value)}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


@dataclass(frozen=True)
class Manifest:
    format: str
    skeleton_oid: str
    skeleton_size: int  # size of the stored skeleton object (what Git LFS transfers)
    entries: tuple[Entry, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "entries", tuple(sorted(self.entries, key=lambda e: e.name)))

    def by_name(self) -> dict[str, Entry]:
        return {e.name: e for e in self.entries}

    def oids(self) -> set[str]:
        """Every object this manifest needs, nested update bases included."""
        from git_theta.updates.base import record_oids

        out = {self.skeleton_oid}
        for e in self.entries:
            out |= record_oids(e.record)
            for value in e.extra.values():
                out |= record_oids(value)
        return out

    def render(self) -> bytes:
        lines = [
            f"{MAGIC.decode()}{VERSION}",
            f"format {self.format}",
            f"skeleton {self.skeleton_oid} {self.skeleton_size}",
        ]
        lines += [e.render() for e in self.entries]
        return ("\n".join(lines) + "\n").encode("ascii")


def is_manifest(head: bytes) -> bool:
    return head.startswith(MAGIC)


# the last few manifests parsed: a checkout's filter reads each one three times (its size
# for a direct checkout, which objects a fetch needs, the smudge itself)
_PARSED: dict[bytes, Manifest] = {}
_PARSED_KEEP = 4


def parse(data: bytes, path: str | None = None) -> Manifest:
    """Parse and validate a manifest; anything off raises ManifestError naming the line.

    Manifests are immutable, so the same text parses to the same (shared) Manifest.
    """
    key = data if type(data) is bytes else None
    m = _PARSED.get(key) if key is not None else None
    if m is None:
        m = _parse(data, path)
        if key is not None:
            if len(_PARSED) >= _PARSED_KEEP:
                _PARSED.pop(next(iter(_PARSED)), None)
            _PARSED[key] = m
    return m


def _parse(data: bytes, path: str | None) -> Manifest:
    if not is_manifest(data):
        raise ManifestError(path, "does not start with 'git-theta-manifest'", line=1)
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise ManifestError(path, "not ASCII text") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) < 3:
        raise ManifestError(path, "missing header lines")
    if len(lines) > MAX_ENTRIES + 3:
        raise ManifestError(path, f"more than {MAX_ENTRIES} parameters")
    version = lines[0][len(MAGIC) :]
    if version != str(VERSION):
        raise ManifestError(
            path,
            f"version {version!r} is not supported by this git-theta (reads {VERSION})",
            line=1,
        )
    fmt = _header(lines[1], "format", path, 2)
    if not re.match(r"^[A-Za-z0-9_.-]{1,64}$", fmt):
        raise ManifestError(path, f"bad format name {fmt!r}", line=2)
    skel = _header(lines[2], "skeleton", path, 3).split(" ")
    if len(skel) != 2 or not OID_RE.match(skel[0]) or not skel[1].isdigit():
        raise ManifestError(path, "skeleton line must be '<oid> <size>'", line=3)
    entries = [_entry(line, path, i + 4) for i, line in enumerate(lines[3:])]
    names = [e.name for e in entries]
    if names != sorted(names) or len(set(names)) != len(names):
        raise ManifestError(path, "parameters are not sorted and unique")
    return Manifest(fmt, skel[0], int(skel[1]), tuple(entries))


def _header(line: str, key: str, path: str | None, lineno: int) -> str:
    prefix = key + " "
    if not line.startswith(prefix):
        raise ManifestError(path, f"expected '{key} ...'", line=lineno)
    return line[len(prefix) :]


def _entry(line: str, path: str | None, lineno: int) -> Entry:
    if len(line) > MAX_LINE:
        raise ManifestError(path, "line too long", line=lineno)
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError) as exc:
        raise ManifestError(path, f"not JSON: {exc}", line=lineno) from None
    required = {"name", "dtype", "shape", "hash", "record"}
    if not isinstance(obj, dict) or not required <= set(obj) <= required | EXTRA_KEYS:
        raise ManifestError(path, "entry must have name, dtype, shape, hash, record", line=lineno)
    name, dtype, shape, hsh, record = (
        obj["name"],
        obj["dtype"],
        obj["shape"],
        obj["hash"],
        obj["record"],
    )
    if not isinstance(name, str) or len(name) > MAX_NAME:  # "" is a valid safetensors key
        raise ManifestError(path, "bad parameter name", line=lineno)
    if not isinstance(dtype, str) or dtype not in dtypes.DTYPES:
        raise ManifestError(path, f"unknown dtype {dtype!r} for {name}", line=lineno)
    if (
        not isinstance(shape, list)
        or len(shape) > 64
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
        or dtypes.numel(tuple(shape)) > dtypes.MAX_ELEMENTS
    ):
        raise ManifestError(path, f"bad shape for {name}", line=lineno)
    if not isinstance(hsh, str) or not HASH_RE.match(hsh):
        raise ManifestError(path, f"bad hash for {name}", line=lineno)
    if not isinstance(record, dict) or not isinstance(record.get("type"), str):
        raise ManifestError(path, f"bad storage record for {name}", line=lineno)
    from git_theta.updates.base import validate_record

    extra = {k: obj[k] for k in EXTRA_KEYS if k in obj}
    try:
        validate_record(record)
        for value in extra.values():
            validate_record(value)
    except ValueError as exc:
        raise ManifestError(path, f"bad storage record for {name}: {exc}", line=lineno) from None
    return Entry(name, dtype, tuple(shape), hsh, record, extra)


def build(
    format_name: str, skeleton_oid: str, skeleton_size: int, entries: Iterable[Entry]
) -> Manifest:
    return Manifest(format_name, skeleton_oid, skeleton_size, tuple(entries))
