"""Spool files (zip-based formats copy their input to disk) go where clean says."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from git_theta.streams import spool_dir, spool_file


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd")
def test_spool_files_go_to_the_spool_dir_and_leave_no_name(tmp_path: Path) -> None:
    where = tmp_path / "store" / "tmp"
    with spool_dir(where), spool_file() as f:
        target = os.readlink(f"/proc/self/fd/{f.fileno()}")
        assert target.startswith(str(where))
        assert list(where.iterdir()) == []  # unlinked: nothing left behind on a crash
    with spool_file() as f:
        assert not os.readlink(f"/proc/self/fd/{f.fileno()}").startswith(str(where))
