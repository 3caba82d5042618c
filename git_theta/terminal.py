"""What git-theta writes to stderr: one-line reports and progress lines on a terminal."""

from __future__ import annotations

import os
import sys
import time


def report(message: str) -> None:
    sys.stderr.write(message.rstrip("\n") + "\n")
    sys.stderr.flush()


def progress_enabled() -> bool:
    if os.environ.get("GIT_THETA_PROGRESS") == "1":
        return True
    return sys.stderr.isatty() and not os.environ.get("GIT_THETA_NO_PROGRESS")


class _Line:
    """A progress line rewritten in place, at most 10 times a second."""

    def __init__(self) -> None:
        self.enabled = progress_enabled()
        self.last = 0.0

    def due(self, finished: bool) -> bool:
        if not self.enabled:
            return False
        now = time.monotonic()
        if not finished and now - self.last < 0.1:
            return False
        self.last = now
        return True

    def show(self, line: str, finished: bool) -> None:
        sys.stderr.write("\r\x1b[K" + line + ("\n" if finished else ""))
        sys.stderr.flush()


class TerminalProgress(_Line):
    """`git-theta: adding model.pt:  45% (120 / 260 MB)`: a file's progress."""

    def __init__(self, verb: str) -> None:
        super().__init__()
        self.verb = verb

    def __call__(self, path: str, done: int, total: int | None) -> None:
        finished = total is not None and done >= total
        if not self.due(finished):
            return
        mb = done / 1e6
        if total:
            pct = 100 * done // total
            line = f"git-theta: {self.verb} {path}: {pct:3d}% ({mb:.0f} / {total / 1e6:.0f} MB)"
        else:
            line = f"git-theta: {self.verb} {path}: {mb:.0f} MB"
        self.show(line, finished)


class TransferProgress(_Line):
    """`git-theta: uploading to origin: 12/40 objects, 120/300 MB`: a transfer's progress."""

    def __init__(self, verb: str) -> None:
        super().__init__()
        self.verb = verb

    def __call__(self, done: int, total: int, done_bytes: int, total_bytes: int) -> None:
        finished = done >= total
        if not self.due(finished):
            return
        line = (
            f"git-theta: {self.verb}: {done}/{total} objects, "
            f"{done_bytes / 1e6:.0f}/{total_bytes / 1e6:.0f} MB"
        )
        self.show(line, finished)
