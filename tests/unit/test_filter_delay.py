"""The filter protocol's `delay` capability: files are put off, then released together."""

from __future__ import annotations

import io

from git_theta import filter_process as fp
from git_theta.streams import ByteSource


def pkt(text: str) -> bytes:
    data = text.encode()
    return b"%04x" % (len(data) + 4) + data


def packets(raw: bytes) -> list[bytes | None]:
    out: list[bytes | None] = []
    r = fp.PktReader(io.BytesIO(raw))
    while True:
        try:
            out.append(r.packet())
        except EOFError:
            return out


class Recorder:
    def __init__(self) -> None:
        self.pending: list[str] = []
        self.fetched: list[list[str]] = []

    def defer(self, data: bytes, path: str) -> bool:
        if data.startswith(b"remote"):
            self.pending.append(path)
            return True
        return False

    def fetch_pending(self) -> None:
        self.fetched.append(self.pending)
        self.pending = []


def test_delayed_files_are_fetched_once_and_smudged_from_their_kept_content() -> None:
    flush = b"0000"
    conversation = (
        pkt("git-filter-client\n") + pkt("version=2\n") + flush
        + pkt("capability=clean\n") + pkt("capability=smudge\n") + pkt("capability=delay\n") + flush
        + pkt("command=smudge\n") + pkt("pathname=a\n") + pkt("can-delay=1\n") + flush
        + pkt("remote-a") + flush
        + pkt("command=smudge\n") + pkt("pathname=b\n") + pkt("can-delay=1\n") + flush
        + pkt("local-b") + flush
        + pkt("command=smudge\n") + pkt("pathname=c\n") + pkt("can-delay=1\n") + flush
        + pkt("remote-c") + flush
        + pkt("command=list_available_blobs\n") + flush
        + pkt("command=smudge\n") + pkt("pathname=a\n") + flush + flush
        + pkt("command=smudge\n") + pkt("pathname=c\n") + flush + flush
        + pkt("command=list_available_blobs\n") + flush
    )  # fmt: skip
    out = io.BytesIO()
    rec = Recorder()
    smudged: list[tuple[str, bytes]] = []

    def smudge(data: bytes, path: str, sink: fp.LazyContent) -> None:
        smudged.append((path, data))
        sink.write(data.upper())

    def clean(src: ByteSource, path: str) -> bytes:
        raise AssertionError("no clean here")

    assert fp.serve(io.BytesIO(conversation), out, clean, smudge, lambda m: None, rec) == 0
    assert rec.fetched == [["a", "c"]]
    assert smudged == [("b", b"local-b"), ("a", b"remote-a"), ("c", b"remote-c")]
    texts = [p.decode() if p is not None else None for p in packets(out.getvalue())]
    assert texts[7:10] == ["status=delayed\n", None, "status=success\n"]  # a delayed, b served
    listing = texts.index("pathname=a\n")
    assert texts[listing : listing + 4] == [
        "pathname=a\n",
        "pathname=c\n",
        None,
        "status=success\n",
    ]
    assert texts[-3:] == [None, "status=success\n", None]  # the last list is empty
