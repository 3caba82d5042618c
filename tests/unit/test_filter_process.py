"""filter_process.serve() driven with in-memory pkt-line streams, as git would drive it."""

from __future__ import annotations

import io

import pytest

from git_theta.errors import CheckpointError
from git_theta.filter_process import MAX_DATA, LazyContent, ProtocolError, serve
from git_theta.streams import ByteSource


def pkt(data: bytes) -> bytes:
    return b"%04x" % (len(data) + 4) + data


def text(*lines: str) -> bytes:
    return b"".join(pkt(line.encode() + b"\n") for line in lines)


FLUSH = b"0000"
HANDSHAKE = text("git-filter-client", "version=2") + FLUSH
CAPS = text("capability=clean", "capability=smudge", "capability=delay") + FLUSH


def request(command: str, path: str, content: bytes) -> bytes:
    body = b"".join(pkt(content[i : i + MAX_DATA]) for i in range(0, len(content), MAX_DATA))
    return text(f"command={command}", f"pathname={path}") + FLUSH + body + FLUSH


class Replies:
    """Parses what the filter wrote: a list of packets, None standing for a flush."""

    def __init__(self, out: bytes) -> None:
        self.items: list[bytes | None] = []
        pos = 0
        while pos < len(out):
            n = int(out[pos : pos + 4], 16)
            if n == 0:
                self.items.append(None)
                pos += 4
            else:
                self.items.append(out[pos + 4 : pos + n])
                pos += n
        self.pos = 0

    def until_flush(self) -> list[bytes]:
        got = []
        while (item := self.items[self.pos]) is not None:
            got.append(item)
            self.pos += 1
        self.pos += 1
        return got

    def at_end(self) -> bool:
        return self.pos == len(self.items)


def run(
    stdin: bytes,
    clean: object = None,
    smudge: object = None,
) -> tuple[Replies, list[str], int]:
    reports: list[str] = []

    def default_clean(src: ByteSource, path: str) -> bytes:
        return b"cleaned:" + src.read_all()

    def default_smudge(data: bytes, path: str, sink: LazyContent) -> None:
        sink.write(b"smudged:" + data)

    out = io.BytesIO()
    rc = serve(
        io.BytesIO(stdin),
        out,
        clean or default_clean,  # type: ignore[arg-type]
        smudge or default_smudge,  # type: ignore[arg-type]
        reports.append,
    )
    return Replies(out.getvalue()), reports, rc


def test_handshake_announces_only_clean_and_smudge() -> None:
    replies, reports, rc = run(HANDSHAKE + CAPS)
    assert rc == 0
    assert replies.until_flush() == [b"git-filter-server\n", b"version=2\n"]
    assert replies.until_flush() == [b"capability=clean\n", b"capability=smudge\n"]
    assert replies.at_end()
    assert reports == []


def test_bad_handshake_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        run(text("git-filter-client", "version=3") + FLUSH)


def test_no_input_at_all_is_a_clean_exit() -> None:
    assert run(b"")[2] == 0


def test_clean_and_smudge_of_many_files_in_one_session() -> None:
    big = bytes(range(256)) * 1000  # several packets
    stdin = (
        HANDSHAKE
        + CAPS
        + request("clean", "a.safetensors", big)
        + request("smudge", "b.safetensors", b"manifest")
        + request("clean", "c.safetensors", b"")
    )
    replies, reports, rc = run(stdin)
    assert rc == 0 and reports == []
    replies.until_flush()
    replies.until_flush()
    assert replies.until_flush() == [b"status=success\n"]
    assert b"".join(replies.until_flush()) == b"cleaned:" + big
    assert replies.until_flush() == []  # status unchanged
    assert replies.until_flush() == [b"status=success\n"]
    assert b"".join(replies.until_flush()) == b"smudged:manifest"
    assert replies.until_flush() == []
    assert replies.until_flush() == [b"status=success\n"]
    assert b"".join(replies.until_flush()) == b"cleaned:"
    assert replies.until_flush() == []
    assert replies.at_end()


def test_error_in_the_middle_of_a_clean_drains_and_keeps_the_protocol_in_sync() -> None:
    consumed: list[int] = []

    def failing_clean(src: ByteSource, path: str) -> bytes:
        if path == "bad.safetensors":
            src.read_exact(70_000)  # part of the way into the second packet
            consumed.append(src.position)
            raise CheckpointError(path, "truncated safetensors file")
        return b"ok:" + src.read_all()

    big = b"\xab" * 300_000
    stdin = (
        HANDSHAKE
        + CAPS
        + request("clean", "bad.safetensors", big)
        + request("clean", "good.safetensors", b"next file")
    )
    replies, reports, rc = run(stdin, clean=failing_clean)
    assert rc == 0
    assert consumed == [70_000]
    replies.until_flush()
    replies.until_flush()
    assert replies.until_flush() == [b"status=error\n"]
    assert replies.until_flush() == [b"status=success\n"]
    assert b"".join(replies.until_flush()) == b"ok:next file"
    assert replies.until_flush() == []
    assert replies.at_end()
    assert reports == ["git-theta: error: bad.safetensors: truncated safetensors file"]


def test_a_bug_is_reported_with_its_traceback_and_answers_error() -> None:
    def buggy(src: ByteSource, path: str) -> bytes:
        raise ZeroDivisionError("oops")

    replies, reports, _ = run(HANDSHAKE + CAPS + request("clean", "x", b"abc"), clean=buggy)
    replies.until_flush()
    replies.until_flush()
    assert replies.until_flush() == [b"status=error\n"]
    assert replies.at_end()
    assert reports[0].startswith("git-theta: internal error (please report this):\n")
    assert "ZeroDivisionError: oops" in reports[0]


def test_smudge_failing_before_output_is_a_plain_error() -> None:
    def missing(data: bytes, path: str, sink: LazyContent) -> None:
        raise CheckpointError(path, "object missing")

    stdin = HANDSHAKE + CAPS + request("smudge", "m", b"x") + request("clean", "n", b"y")
    replies, reports, _ = run(stdin, smudge=missing)
    replies.until_flush()
    replies.until_flush()
    assert replies.until_flush() == [b"status=error\n"]
    assert replies.until_flush() == [b"status=success\n"]
    assert b"".join(replies.until_flush()) == b"cleaned:y"
    assert replies.until_flush() == []
    assert replies.at_end()
    assert reports == ["git-theta: error: m: object missing"]


def test_smudge_failing_after_output_ends_the_content_then_reports_error() -> None:
    def half(data: bytes, path: str, sink: LazyContent) -> None:
        sink.write(b"first tensor")
        raise CheckpointError(path, "object corrupt")

    stdin = HANDSHAKE + CAPS + request("smudge", "m", b"x") + request("smudge", "n", b"y")
    calls = []

    def smudge(data: bytes, path: str, sink: LazyContent) -> None:
        calls.append(path)
        if path == "m":
            half(data, path, sink)
        else:
            sink.write(b"fine")

    replies, _reports, _ = run(stdin, smudge=smudge)
    replies.until_flush()
    replies.until_flush()
    assert replies.until_flush() == [b"status=success\n"]
    assert replies.until_flush() == [b"first tensor"]
    assert replies.until_flush() == [b"status=error\n"]
    assert replies.until_flush() == [b"status=success\n"]
    assert replies.until_flush() == [b"fine"]
    assert replies.until_flush() == []
    assert replies.at_end()
    assert calls == ["m", "n"]


def test_unknown_command_is_answered_with_error() -> None:
    stdin = HANDSHAKE + CAPS + request("frobnicate", "x", b"data") + request("clean", "y", b"z")
    replies, _, _ = run(stdin)
    replies.until_flush()
    replies.until_flush()
    assert replies.until_flush() == [b"status=error\n"]
    assert replies.until_flush() == [b"status=success\n"]
    assert b"".join(replies.until_flush()) == b"cleaned:z"


@pytest.mark.parametrize(
    "tail",
    [
        b"00",  # stream ends inside a header
        b"zzzz",  # not hex
        b"0002",  # lengths 1..3 are reserved
        b"0010abc",  # ends inside a packet
    ],
)
def test_broken_pkt_lines_are_protocol_errors(tail: bytes) -> None:
    with pytest.raises(ProtocolError):
        run(HANDSHAKE + CAPS + tail)
