"""Byte sources the parsers read from: a file, a pipe, or git's pkt-line stream."""

from __future__ import annotations

import mmap
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import IO, BinaryIO, Protocol, cast


class RawReader(Protocol):
    def readinto(self, buffer: memoryview) -> int: ...


class ByteSource:
    """A forward-only reader with a small look-ahead and exact reads.

    Exact reads raise EOFError with the count that was missing, which the format parsers
    turn into a "truncated checkpoint" error.
    """

    def __init__(self, raw: RawReader | BinaryIO) -> None:
        # every binary file object has readinto; typing.BinaryIO just does not declare it
        self._raw: RawReader = cast(RawReader, raw)
        self._head = bytearray()
        self.position = 0  # bytes handed out so far

    def _fill(self, buf: memoryview) -> int:
        got = 0
        n = len(buf)
        while got < n:
            k = self._raw.readinto(buf[got:])
            if not k:
                break
            got += k
        return got

    def peek(self, n: int) -> bytes:
        """Up to `n` bytes from the current position without consuming them."""
        if len(self._head) < n:
            extra = bytearray(n - len(self._head))
            got = self._fill(memoryview(extra))
            self._head += extra[:got]
        return bytes(self._head[:n])

    def readinto(self, buf: memoryview) -> int:
        """Fill as much of `buf` as the source has; returns the count (short only at EOF)."""
        n = len(buf)
        got = 0
        if self._head:
            take = min(n, len(self._head))
            buf[:take] = self._head[:take]
            del self._head[:take]
            got = take
        if got < n:
            got += self._fill(buf[got:])
        self.position += got
        return got

    def read_exact_into(self, buf: memoryview) -> None:
        got = self.readinto(buf)
        if got != len(buf):
            raise EOFError(len(buf) - got)

    def read_exact(self, n: int) -> bytes:
        """Exactly `n` bytes. Memory follows what arrives, not `n`: a truncated file whose
        header claims a huge length costs what it holds."""
        if n <= 1 << 20:
            buf = bytearray(n)
            self.read_exact_into(memoryview(buf))
            return bytes(buf)
        out = bytearray()
        step = bytearray(1 << 20)
        while len(out) < n:
            view = memoryview(step)[: min(len(step), n - len(out))]
            got = self.readinto(view)
            out += view[:got]
            if got < len(view):
                raise EOFError(n - len(out))
        return bytes(out)

    def read_all(self, limit: int | None = None) -> bytes:
        """Everything left (at most `limit` bytes, else ValueError)."""
        out = bytearray(self._head)
        self.position += len(self._head)
        self._head.clear()
        chunk = bytearray(1 << 20)
        view = memoryview(chunk)
        while True:
            k = self._raw.readinto(view)
            if not k:
                break
            out += view[:k]
            self.position += k
            if limit is not None and len(out) > limit:
                raise ValueError(f"input larger than {limit} bytes")
        return bytes(out)

    def at_eof(self) -> bool:
        return self.peek(1) == b""

    def drain(self) -> int:
        """Consume and discard the rest; returns how many bytes that was."""
        n = len(self._head)
        self._head.clear()
        chunk = memoryview(bytearray(1 << 20))
        while True:
            k = self._raw.readinto(chunk)
            if not k:
                break
            n += k
        self.position += n
        return n


class ReusableBuffer:
    """Two growable buffers used in turn for successive tensors.

    Reusing them avoids fresh allocations (page faults cost ~1.5 GB/s); having two lets the
    caller keep working on one tensor while the next is read into the other: a view stays
    valid until the view after next is requested. Backed by anonymous memory maps, whose
    pages cost memory only once written: a header that claims a huge tensor costs what the
    file really holds, not the claim. A size the machine cannot map raises MemoryError.
    """

    def __init__(self) -> None:
        self._bufs: list[mmap.mmap | bytearray] = [bytearray(), bytearray()]
        self._turn = 0

    def view(self, n: int) -> memoryview:
        self._turn ^= 1
        buf = self._bufs[self._turn]
        if len(buf) < n:
            size = max(n, len(buf) * 5 // 4)
            try:
                buf = self._bufs[self._turn] = _anonymous_map(size)
            except (OSError, OverflowError):
                raise MemoryError(f"cannot map {size} bytes") from None
        return memoryview(buf)[:n]


def _anonymous_map(size: int) -> mmap.mmap:
    if hasattr(mmap, "MAP_PRIVATE"):
        # private, not Python's default shared mapping: shared anonymous pages live in shmem
        # and fault measurably slower (MiniLM split: 140 ms vs 90 ms)
        return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return mmap.mmap(-1, size)


# -- spooling: formats that must see the whole input first (zip archives) copy it to disk ----

_SPOOL_DIR: ContextVar[Path | None] = ContextVar("git_theta_spool_dir", default=None)


@contextmanager
def spool_dir(path: Path) -> Iterator[None]:
    """Spool files made inside this block go under `path` (clean passes the store's tmp
    dir: on the repository's disk, whereas /tmp is often RAM-backed)."""
    path.mkdir(parents=True, exist_ok=True)
    token = _SPOOL_DIR.set(path)
    try:
        yield
    finally:
        _SPOOL_DIR.reset(token)


def spool_file() -> IO[bytes]:
    """An unlinked temporary file in the spool directory (else the system's temp dir)."""
    return tempfile.TemporaryFile(prefix="git-theta-spool-", dir=_SPOOL_DIR.get())
