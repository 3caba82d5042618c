"""Give git's index the stat data of checkpoints git-theta wrote itself (direct checkout).

After a direct checkout the index describes the manifest git wrote, not the checkpoint that
replaced it, so `git status` would see the file as modified. `git update-index --refresh`
fixes that, but only by sending the whole file through the clean filter (git has no way to
set stat data otherwise): for a 500 MB checkpoint about a third of a second, all of it
copying bytes git-theta has just written. This module patches the fixed-size stat fields
of those entries in place instead, as git itself does when it refreshes an entry:

- the index is locked first (`index.lock`, created exclusively, the lock git takes);
- only stage-0 regular-file entries whose blob is the manifest just written are touched;
  their mode, blob, flags and every other entry and extension keep their bytes;
- entries that were racily clean against the old index (changed in the second it was
  written) get size 0, as git does when it rewrites an index, so they are re-checked;
- the trailing checksum is recomputed (left all-zero if the index has none).

Index versions 2 and 3 are patched; anything else (version 4's compressed paths, a split
index, an index being written by another git) makes `patch` return no paths, and the
caller falls back to git's refresh. See gitformat-index(5).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from git_theta import git

_HEADER = struct.Struct(">4sII")
_STAT = struct.Struct(">10I")  # ctime s, ns, mtime s, ns, dev, ino, mode, uid, gid, size
_FLAGS = struct.Struct(">H")
_EXTENDED = 0x4000
_STAGE = 0x3000
_NAME_MASK = 0x0FFF
_REGULAR = 0o100000
_SYMLINK = 0o120000
_TYPE_MASK = 0o170000
_MTIME_S, _MODE, _SIZE = 2, 6, 9  # positions in _STAT

_HASHES = {"sha1": 20, "sha256": 32}


@dataclass(frozen=True)
class Written:
    """A file git-theta wrote: its stat data then, and the blob (manifest) git indexes."""

    stat: os.stat_result
    blob: str


def blob_id(data: bytes, algorithm: str) -> str:
    """The object id git gives `data` as a blob."""
    return hashlib.new(algorithm, b"blob %d\0" % len(data) + data).hexdigest()


def repo_layout(cwd: str | Path | None = None) -> tuple[Path, str]:
    """The index file (per worktree, GIT_INDEX_FILE honoured) and the object format."""
    out = git.run_text("rev-parse", "--git-path", "index", "--show-object-format", cwd=cwd)
    index, algorithm = out.splitlines()
    p = Path(index)
    if not p.is_absolute():
        p = Path(cwd or os.getcwd()) / p
    return p, algorithm.strip()


def _u32(value: int) -> int:
    return value & 0xFFFFFFFF


def stat_fields(st: os.stat_result, mode: int) -> tuple[int, ...]:
    """The ten stat words git stores for a file (each truncated to 32 bits, as git does)."""
    return tuple(
        _u32(v)
        for v in (
            st.st_ctime_ns // 1_000_000_000,
            st.st_ctime_ns % 1_000_000_000,
            st.st_mtime_ns // 1_000_000_000,
            st.st_mtime_ns % 1_000_000_000,
            st.st_dev,
            st.st_ino,
            mode,
            st.st_uid,
            st.st_gid,
            st.st_size,
        )
    )


def patch(written: Mapping[str, Written], *, index: Path, algorithm: str) -> set[str]:
    """Record the stat data of `written` (paths relative to the top level, `/`-separated)
    in the index; returns the paths recorded (none if the index cannot be patched)."""
    width = _HASHES.get(algorithm)
    if width is None or not written:
        return set()
    lock = index.with_name(index.name + ".lock")
    try:
        fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError:
        return set()  # another git holds the index (or none can be made): git refreshes
    committed = False
    try:
        data = bytearray(index.read_bytes())
        done = _patch_entries(data, written, width, old_mtime=int(os.stat(index).st_mtime))
        if not done:
            return set()
        body = memoryview(data)[:-width]
        if any(data[-width:]):  # index.skipHash leaves the checksum zero
            data[-width:] = hashlib.new(algorithm, body).digest()
        body.release()
        with os.fdopen(fd, "wb") as f:
            fd = -1
            f.write(data)
        with contextlib.suppress(OSError):
            os.chmod(lock, os.stat(index).st_mode & 0o777)
        os.replace(lock, index)
        committed = True
        return done
    except (OSError, ValueError, struct.error):
        return set()
    finally:
        if fd >= 0:
            os.close(fd)
        if not committed:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock)


def _patch_entries(
    data: bytearray, written: Mapping[str, Written], width: int, *, old_mtime: int
) -> set[str]:
    """Patch `data` (a whole index) in place; the paths patched, empty if the index is of a
    kind this module leaves to git."""
    if len(data) < _HEADER.size + width:
        return set()
    signature, version, count = _HEADER.unpack_from(data, 0)
    if signature != b"DIRC" or version not in (2, 3):
        return set()
    wanted = {p.encode("utf-8", "surrogateescape"): (p, w) for p, w in written.items()}
    done: set[str] = set()
    pos = _HEADER.size
    end = len(data) - width
    for _ in range(count):
        fixed = 40 + width + 2
        if pos + fixed > end:
            raise ValueError("index entry runs past the end")
        (flags,) = _FLAGS.unpack_from(data, pos + 40 + width)
        if flags & _EXTENDED:
            if version < 3:
                raise ValueError("extended flags in a version 2 index")
            fixed += 2
        name_len = flags & _NAME_MASK
        name_at = pos + fixed
        if name_len == _NAME_MASK:
            name_len = data.index(b"\0", name_at) - name_at
        if name_at + name_len > end:
            raise ValueError("index entry name runs past the end")
        name = bytes(data[name_at : name_at + name_len])
        fields = _STAT.unpack_from(data, pos)
        hit = wanted.get(name)
        if hit is not None and _ours(data, pos, width, flags, fields, hit[1]):
            _STAT.pack_into(data, pos, *stat_fields(hit[1].stat, fields[_MODE]))
            done.add(hit[0])
        elif _racy(fields, old_mtime):
            # as git's write_index: an entry racily clean against the old index keeps its
            # protection only if its size tells git to look at the content
            _STAT.pack_into(data, pos, *fields[:_SIZE], 0)
        pos += (fixed + name_len + 8) & ~7
    if pos > end:
        raise ValueError("index entries run past the end")
    while pos + 8 <= end:
        signature, size = struct.unpack_from(">4sI", data, pos)
        if signature == b"link":  # a split index: entries live in two files, git's job
            return set()
        pos += 8 + size
    return done


def _ours(
    data: bytearray, pos: int, width: int, flags: int, fields: tuple[int, ...], w: Written
) -> bool:
    """A stage-0 regular file whose blob is the manifest git-theta wrote out."""
    if flags & _STAGE or fields[_MODE] & _TYPE_MASK != _REGULAR:
        return False
    return bytes(data[pos + 40 : pos + 40 + width]).hex() == w.blob


def _racy(fields: tuple[int, ...], old_mtime: int) -> bool:
    """Changed no earlier than the second the index was written (git's is_racy_timestamp,
    to the second), for the entries git stats: files and symlinks."""
    kind = fields[_MODE] & _TYPE_MASK
    return kind in (_REGULAR, _SYMLINK) and fields[_MTIME_S] >= old_mtime and fields[_SIZE] != 0
