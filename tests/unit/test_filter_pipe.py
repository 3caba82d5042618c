"""The filter process asks for a 1 MiB pipe buffer, and shrugs off anything that is no pipe."""

from __future__ import annotations

import fcntl
import os
import tempfile

from git_theta.filter_process import PIPE_SIZE, widen_pipe


def test_a_pipe_gets_the_larger_buffer() -> None:
    r, w = os.pipe()
    try:
        widen_pipe(w)
        assert fcntl.fcntl(r, fcntl.F_GETPIPE_SZ) == PIPE_SIZE == 1 << 20
    finally:
        os.close(r)
        os.close(w)


def test_a_regular_file_is_left_alone() -> None:
    with tempfile.TemporaryFile() as f:
        widen_pipe(f.fileno())  # EBADF/EINVAL from the kernel is not an error for us
        f.write(b"still writable")
        f.seek(0)
        assert f.read() == b"still writable"
