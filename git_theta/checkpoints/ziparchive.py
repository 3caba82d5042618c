"""Zip archives as checkpoint containers (torch.save files, .npz): exact member byte ranges.

The input stream is spooled to an unlinked temporary file, because a zip is described by
its central directory at the end. `zipfile` reads that directory; each member's local
header is then parsed here, so every byte of the file is attributed to exactly one member
record (local header, data, data descriptor), the central directory, or a literal gap.
Formats splice member payloads out of the file and keep every other byte verbatim.
"""

from __future__ import annotations

import struct
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO

from git_theta.errors import CheckpointError
from git_theta.streams import ByteSource, spool_file

_LOCAL = struct.Struct("<IHHHHHIIIHH")  # local file header, 30 bytes
_LOCAL_SIG = 0x04034B50
STORED = zipfile.ZIP_STORED
DEFLATED = zipfile.ZIP_DEFLATED
ZIP_MAGIC = b"PK\x03\x04"


@dataclass(frozen=True)
class Member:
    """One archive member: its local header at `header_offset`, payload [data_start, data_end),
    and `end`, where the next record (member or central directory) begins."""

    name: str
    header_offset: int
    data_start: int
    data_end: int
    end: int
    compress_type: int
    file_size: int
    crc: int

    @property
    def compress_size(self) -> int:
        return self.data_end - self.data_start


def first_member_name(head: bytes) -> str | None:
    """The name in the first local header of `head`, if `head` starts like a zip."""
    if len(head) < _LOCAL.size or not head.startswith(ZIP_MAGIC):
        return None
    fields = _LOCAL.unpack_from(head)
    flags, name_len = fields[2], fields[9]
    raw = head[_LOCAL.size : _LOCAL.size + name_len]
    if len(raw) != name_len:
        return None
    return raw.decode("utf-8" if flags & 0x800 else "cp437", "replace")


class Archive:
    """A spooled zip archive: its members in file order and reads of any byte range."""

    def __init__(self, file: IO[bytes], size: int, path: str | None) -> None:
        self.file = file
        self.size = size
        self.path = path
        try:
            self._zip = zipfile.ZipFile(file)
        except Exception as exc:  # zipfile raises many kinds on a damaged directory
            raise CheckpointError(
                path,
                f"not a readable zip archive ({exc})",
                hint="the file may be truncated or corrupt; restore it from its source",
            ) from None
        self.cd_start: int = int(getattr(self._zip, "start_dir", size))
        self.members = self._layout()
        self.by_name = {m.name: m for m in self.members}

    def _layout(self) -> list[Member]:
        infos = sorted(self._zip.infolist(), key=lambda i: i.header_offset)
        names = [i.filename for i in infos]
        if len(set(names)) != len(names):
            raise CheckpointError(self.path, "zip archive names one member twice")
        out: list[Member] = []
        for k, info in enumerate(infos):
            end = infos[k + 1].header_offset if k + 1 < len(infos) else self.cd_start
            out.append(self._member(info, end))
        pos = 0
        for m in out:
            if m.header_offset < pos:
                raise CheckpointError(self.path, f"zip member {m.name} overlaps the one before it")
            pos = m.end
        return out

    def _member(self, info: zipfile.ZipInfo, end: int) -> Member:
        h = info.header_offset
        if not 0 <= h <= self.size - _LOCAL.size or end > self.cd_start:
            raise CheckpointError(self.path, f"zip member {info.filename} lies outside the file")
        fields = _LOCAL.unpack(self.read(h, h + _LOCAL.size))
        sig, flags, name_len, extra_len = fields[0], fields[2], fields[9], fields[10]
        if sig != _LOCAL_SIG:
            raise CheckpointError(self.path, f"zip member {info.filename}: bad local header")
        if flags & 0x1 or info.flag_bits & 0x1:
            raise CheckpointError(self.path, f"zip member {info.filename} is encrypted")
        raw_name = self.read(h + _LOCAL.size, h + _LOCAL.size + name_len)
        local_name = raw_name.decode("utf-8" if flags & 0x800 else "cp437", "replace")
        if local_name != info.orig_filename:
            raise CheckpointError(
                self.path, f"zip member {info.filename}: local header names {local_name!r}"
            )
        start = h + _LOCAL.size + name_len + extra_len
        stop = start + info.compress_size
        if stop > end:
            raise CheckpointError(
                self.path, f"zip member {info.filename}: data runs past the next record"
            )
        return Member(
            info.filename, h, start, stop, end, info.compress_type, info.file_size, info.CRC
        )

    def read(self, start: int, end: int) -> bytes:
        """Bytes [start, end) of the file (must lie inside it)."""
        if not 0 <= start <= end <= self.size:
            raise CheckpointError(self.path, f"byte range {start}..{end} lies outside the file")
        self.file.seek(start)
        data = self.file.read(end - start)
        if len(data) != end - start:
            raise CheckpointError(self.path, "file shrank while being read")
        return data

    def read_into(self, start: int, view: memoryview) -> None:
        if not 0 <= start <= start + len(view) <= self.size:
            raise CheckpointError(self.path, "byte range lies outside the file")
        self.file.seek(start)
        got = 0
        while got < len(view):
            k = self.file.readinto(view[got:])  # type: ignore[attr-defined]
            if not k:
                raise CheckpointError(self.path, "file shrank while being read")
            got += k

    def chunks(self, start: int, end: int, size: int = 1 << 20) -> Iterator[bytes]:
        """Bytes [start, end) in pieces of at most `size`."""
        pos = start
        while pos < end:
            piece = self.read(pos, min(end, pos + size))
            pos += len(piece)
            yield piece

    def read_member(self, name: str, limit: int) -> bytes:
        """The decompressed, CRC-checked content of a small member (at most `limit` bytes)."""
        info = self._zip.getinfo(name)
        if info.file_size > limit:
            raise CheckpointError(
                self.path, f"zip member {name} is {info.file_size} bytes, over {limit}"
            )
        try:
            with self._zip.open(info) as f:
                data = f.read(limit + 1)
        except Exception as exc:  # bad CRC, unknown method, damaged header, ...
            raise CheckpointError(self.path, f"zip member {name} is unreadable ({exc})") from None
        if len(data) > limit:
            raise CheckpointError(self.path, f"zip member {name} is larger than {limit} bytes")
        return data


@contextmanager
def spooled(src: ByteSource, path: str | None) -> Iterator[Archive]:
    """The rest of `src` copied to an unlinked spool file and opened as a zip archive."""
    with spool_file() as tmp:
        size = _copy(src, tmp)
        tmp.flush()
        yield Archive(tmp, size, path)


def _copy(src: ByteSource, out: IO[bytes]) -> int:
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    n = 0
    while True:
        k = src.readinto(view)
        if not k:
            return n
        out.write(view[:k])
        n += k
