"""ByteSource: look-ahead, exact reads, short reads from the underlying stream."""

from __future__ import annotations

import io

import pytest

from git_theta.streams import ByteSource, ReusableBuffer


class Trickle:
    """A raw stream that returns at most `step` bytes per call, like a pipe."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.pos, self.step = data, 0, step

    def readinto(self, buf: memoryview) -> int:
        n = min(len(buf), self.step, len(self.data) - self.pos)
        buf[:n] = self.data[self.pos : self.pos + n]
        self.pos += n
        return n


DATA = bytes(range(256)) * 40


@pytest.mark.parametrize("step", [1, 7, 4096, 1 << 20])
def test_peek_does_not_consume(step: int) -> None:
    src = ByteSource(Trickle(DATA, step))
    assert src.peek(10) == DATA[:10]
    assert src.peek(300) == DATA[:300]
    assert src.position == 0
    assert src.read_exact(5) == DATA[:5]
    assert src.peek(3) == DATA[5:8]
    assert src.read_exact(1000) == DATA[5:1005]
    assert src.position == 1005
    assert src.read_all() == DATA[1005:]
    assert src.position == len(DATA)
    assert src.at_eof()


def test_peek_past_the_end_returns_what_there_is() -> None:
    src = ByteSource(io.BytesIO(b"abc"))
    assert src.peek(100) == b"abc"
    assert src.read_exact(3) == b"abc"
    assert src.peek(1) == b""


def test_read_exact_reports_how_much_was_missing() -> None:
    src = ByteSource(Trickle(b"0123456789", 3))
    src.peek(2)
    with pytest.raises(EOFError) as info:
        src.read_exact(25)
    assert info.value.args == (15,)


def test_readinto_is_short_only_at_eof() -> None:
    src = ByteSource(Trickle(DATA, 3))
    buf = bytearray(1000)
    assert src.readinto(memoryview(buf)) == 1000
    assert bytes(buf) == DATA[:1000]


def test_read_all_enforces_its_limit() -> None:
    src = ByteSource(io.BytesIO(b"x" * 5000))
    with pytest.raises(ValueError):
        src.read_all(limit=100)
    assert ByteSource(io.BytesIO(b"x" * 100)).read_all(limit=100) == b"x" * 100


def test_drain_counts_everything_left() -> None:
    src = ByteSource(Trickle(DATA, 100))
    src.peek(50)
    src.read_exact(10)
    assert src.drain() == len(DATA) - 10
    assert src.position == len(DATA)
    assert src.at_eof()


def test_reusable_buffer_grows_and_reuses() -> None:
    buf = ReusableBuffer()
    a = buf.view(100)
    assert len(a) == 100
    a.release()
    b = buf.view(50)
    assert len(b) == 50
    b.release()
    c = buf.view(1000)
    assert len(c) == 1000
