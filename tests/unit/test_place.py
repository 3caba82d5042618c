"""Putting a written checkpoint in place, and the allocator settings of long runs."""

from __future__ import annotations

import os
import platform
import stat
from pathlib import Path

import pytest

from git_theta import allocator, materialize


@pytest.mark.parametrize("atomic", [True, False])
def test_place_replaces_the_file_and_keeps_its_mode(tmp_path: Path, atomic: bool) -> None:
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"git-theta-manifest 1\n")
    target.chmod(0o640)
    tmp = tmp_path / ".model.tmp"
    tmp.write_bytes(b"weights" * 1000)
    tmp.chmod(0o600)
    materialize.place(tmp, target, atomic=atomic)
    assert target.read_bytes() == b"weights" * 1000
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert not tmp.exists()


def test_place_without_atomic_needs_no_file_to_replace(tmp_path: Path) -> None:
    tmp = tmp_path / ".new.tmp"
    tmp.write_bytes(b"x")
    materialize.place(tmp, tmp_path / "new.pt", atomic=False)
    assert (tmp_path / "new.pt").read_bytes() == b"x"
    assert os.listdir(tmp_path) == ["new.pt"]


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_allocator_settings_are_taken_by_glibc() -> None:
    assert allocator.tune() is True
