"""git's long-running filter protocol (pkt-line, version 2): one process per git command.

See gitattributes(5) "Long Running Filter Process" and gitprotocol-common(5). The process
serves every file git asks for, so torch and the store are set up once, not per file.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from typing import BinaryIO, Protocol, cast

from git_theta.errors import GitThetaError
from git_theta.streams import ByteSource, RawReader

MAX_DATA = 65516  # largest pkt-line payload
FLUSH = b"0000"


class ProtocolError(GitThetaError):
    """git said something the protocol does not allow."""


class PktReader:
    def __init__(self, stream: BinaryIO) -> None:
        # a binary file object: it has readinto, which typing.BinaryIO does not declare
        self.stream: RawReader = cast(RawReader, stream)
        self._hdr = bytearray(4)

    def _length(self) -> int | None:
        """Payload length of the next packet; None for a flush; EOFError at end of stream."""
        view = memoryview(self._hdr)
        got = 0
        while got < 4:
            k = self.stream.readinto(view[got:])
            if not k:
                if got == 0:
                    raise EOFError
                raise ProtocolError("pkt-line: stream ended inside a packet header")
            got += k
        try:
            n = int(bytes(self._hdr), 16)
        except ValueError:
            raise ProtocolError(f"pkt-line: bad header {bytes(self._hdr)!r}") from None
        if n == 0:
            return None
        if n < 4 or n > MAX_DATA + 4:
            raise ProtocolError(f"pkt-line: bad length {n}")
        return n - 4

    def _exact(self, view: memoryview) -> None:
        got = 0
        while got < len(view):
            k = self.stream.readinto(view[got:])
            if not k:
                raise ProtocolError("pkt-line: stream ended inside a packet")
            got += k

    def packet(self) -> bytes | None:
        n = self._length()
        if n is None:
            return None
        buf = bytearray(n)
        self._exact(memoryview(buf))
        return bytes(buf)

    def text_list(self) -> list[str]:
        """Text packets up to the next flush, trailing newline removed."""
        out = []
        while (pkt := self.packet()) is not None:
            out.append(pkt.decode("utf-8", "surrogateescape").rstrip("\n"))
        return out

    def content(self) -> ContentReader:
        return ContentReader(self)


class ContentReader:
    """File content sent as packets up to a flush, readable like a file (readinto)."""

    def __init__(self, pkt: PktReader) -> None:
        self.pkt = pkt
        self.left = 0  # payload bytes of the current packet not yet read
        self.done = False

    def readinto(self, buf: memoryview) -> int:
        got = 0
        while got < len(buf) and not self.done:
            if self.left == 0:
                n = self.pkt._length()
                if n is None:
                    self.done = True
                    break
                self.left = n
                continue
            take = min(self.left, len(buf) - got)
            self.pkt._exact(buf[got : got + take])
            got += take
            self.left -= take
        return got

    def drain(self) -> None:
        scratch = memoryview(bytearray(1 << 16))
        while self.readinto(scratch):
            pass


class PktWriter:
    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream

    def packet(self, data: bytes | memoryview) -> None:
        self.stream.write(b"%04x" % (len(data) + 4))
        self.stream.write(data)

    def text(self, *lines: str) -> None:
        for line in lines:
            self.packet((line + "\n").encode())

    def flush(self) -> None:
        self.stream.write(FLUSH)
        self.stream.flush()

    def write(self, data: bytes | memoryview) -> None:
        """Content of any length, cut into packets."""
        view = memoryview(data).cast("B")
        for start in range(0, len(view), MAX_DATA):
            self.packet(view[start : start + MAX_DATA])


class LazyContent:
    """Sends `status=success` just before the first byte of content, so that a failure
    found before any output (a missing object) is reported as a plain `status=error`."""

    def __init__(self, out: PktWriter) -> None:
        self.out = out
        self.started = False

    def write(self, data: bytes | memoryview) -> None:
        if not self.started:
            self.out.text("status=success")
            self.out.flush()
            self.started = True
        if len(data):
            self.out.write(data)


# clean(source, path) -> manifest bytes; smudge(data, path, sink) -> None
CleanFn = Callable[[ByteSource, str], bytes]
SmudgeFn = Callable[[bytes, str, LazyContent], None]
ReportFn = Callable[[str], None]


class Delayer(Protocol):
    """Lets a git command's checkout batch its downloads (the protocol's `delay`
    capability): files whose objects are missing are put off, then all their objects are
    fetched at once when git asks which delayed files are ready (`list_available_blobs`)."""

    def defer(self, data: bytes, path: str) -> bool:
        """True to delay this file: its missing objects join the pending batch."""

    def fetch_pending(self) -> None:
        """Fetch every pending object (errors are kept for the files' smudges to report)."""


def serve(
    stdin: BinaryIO,
    stdout: BinaryIO,
    clean: CleanFn,
    smudge: SmudgeFn,
    report: ReportFn,
    delayer: Delayer | None = None,
) -> int:
    reader, writer = PktReader(stdin), PktWriter(stdout)
    try:
        hello = reader.text_list()
    except EOFError:
        return 0
    if "git-filter-client" not in hello or "version=2" not in hello:
        raise ProtocolError(f"unexpected handshake {hello!r}")
    writer.text("git-filter-server", "version=2")
    writer.flush()
    caps = reader.text_list()
    offered = {c.removeprefix("capability=") for c in caps}
    mine = [c for c in ("clean", "smudge", "delay") if c in offered]
    if delayer is None:
        mine = [c for c in mine if c != "delay"]
    delayed: dict[str, bytes] = {}  # path -> manifest, for files git will ask for again
    writer.text(*(f"capability={c}" for c in mine))
    writer.flush()
    while True:
        try:
            header = reader.text_list()
        except EOFError:
            return 0
        keys = dict(line.split("=", 1) for line in header if "=" in line)
        command, path = keys.get("command", ""), keys.get("pathname", "")
        content = reader.content()
        if command == "clean":
            _do_clean(content, path, writer, clean, report)
        elif command == "smudge":
            data = ByteSource(content).read_all()
            if path in delayed and not data:
                data = delayed.pop(path)  # git asks again, with empty content
            elif delayer is not None and keys.get("can-delay") == "1" and delayer.defer(data, path):
                delayed[path] = data
                writer.text("status=delayed")
                writer.flush()
                continue
            _do_smudge(data, path, writer, smudge, report)
        elif command == "list_available_blobs" and delayer is not None:
            # this command has no content section: nothing to read after the header
            _list_available(delayed, writer, delayer, report)
        else:
            content.drain()
            writer.text("status=error")
            writer.flush()


def _failed(exc: BaseException, report: ReportFn) -> None:
    if isinstance(exc, GitThetaError):
        report(f"git-theta: error: {exc}")
    else:
        report("git-theta: internal error (please report this):\n" + traceback.format_exc())


def _do_clean(
    content: ContentReader, path: str, writer: PktWriter, clean: CleanFn, report: ReportFn
) -> None:
    try:
        result = clean(ByteSource(content), path)
    except Exception as exc:  # reported to the user; git then fails the command for this file
        content.drain()
        _failed(exc, report)
        writer.text("status=error")
        writer.flush()
        return
    content.drain()
    writer.text("status=success")
    writer.flush()
    writer.write(result)
    writer.flush()
    writer.flush()  # empty list: status stays "success"


def _list_available(
    delayed: dict[str, bytes], writer: PktWriter, delayer: Delayer, report: ReportFn
) -> None:
    """All delayed files are ready once the pending batch is fetched (or failed: their
    smudges then report why); an empty list tells git nothing is delayed any more."""
    if delayed:
        try:
            delayer.fetch_pending()
        except GitThetaError:
            pass  # each delayed file's smudge reports it
        except Exception as exc:
            _failed(exc, report)
    writer.text(*(f"pathname={p}" for p in delayed))
    writer.flush()
    writer.text("status=success")
    writer.flush()


def _do_smudge(
    data: bytes, path: str, writer: PktWriter, smudge: SmudgeFn, report: ReportFn
) -> None:
    sink = LazyContent(writer)
    try:
        smudge(data, path, sink)
    except Exception as exc:
        _failed(exc, report)
        if sink.started:
            writer.flush()
        writer.text("status=error")
        writer.flush()
        return
    if not sink.started:
        sink.write(b"")
    writer.flush()
    writer.flush()


PIPE_SIZE = 1 << 20


def widen_pipe(fd: int, size: int = PIPE_SIZE) -> None:
    """Ask Linux for a larger pipe buffer on `fd`; silently keep the default elsewhere.

    git writes the file to us (and reads it back) in 64 KiB packets; with the default 64 KiB
    pipe every packet is a hand-off between the two processes, which on a busy machine means
    waiting for the other to be scheduled thousands of times per checkpoint.
    """
    try:
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)
    except (ImportError, AttributeError, OSError):
        pass  # not Linux, not a pipe, or over the per-user pipe quota: the default works


def main_loop(
    clean: CleanFn, smudge: SmudgeFn, report: ReportFn, delayer: Delayer | None = None
) -> int:
    widen_pipe(sys.stdin.fileno())
    widen_pipe(sys.stdout.fileno())
    stdin = open(sys.stdin.fileno(), "rb", buffering=1 << 20, closefd=False)  # noqa: SIM115
    stdout = open(sys.stdout.fileno(), "wb", buffering=1 << 20, closefd=False)  # noqa: SIM115
    return serve(stdin, stdout, clean, smudge, report, delayer)
