"""The index refresh after a direct checkout answers files just written from a record."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from git_theta import filters, materialize
from git_theta.store import Store
from git_theta.streams import ByteSource


@pytest.fixture
def written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, bytes, Store]]:
    """A checkpoint on disk, its manifest, and a fresh-record naming it (as finish() makes)."""
    monkeypatch.chdir(tmp_path)
    store = Store(tmp_path / "theta")
    path = tmp_path / "model.safetensors"
    save_file({"w": np.arange(4096, dtype=np.float32).reshape(64, 64)}, str(path))
    with open(path, "rb") as f:
        text = filters.clean(ByteSource(f), path.name, store)
    fresh = {os.path.abspath(path.name): materialize.Fresh(materialize.stat_key(path.stat()), text)}
    ctx = materialize._fresh_record(store, fresh)
    env = ctx.__enter__()
    monkeypatch.setenv(materialize.FRESH_ENV, env[materialize.FRESH_ENV])
    materialize._fresh_files.cache_clear()
    yield path, text, store
    ctx.__exit__(None, None, None)
    materialize._fresh_files.cache_clear()


def test_a_file_as_written_is_answered_from_the_record(written: tuple[Path, bytes, Store]) -> None:
    path, text, _ = written
    src = ByteSource(io.BytesIO(path.read_bytes()))
    assert materialize.clean_fresh(src, path.name) == text
    assert src.at_eof()  # git's copy of the content was consumed


def test_a_rewritten_file_is_cleaned_again(written: tuple[Path, bytes, Store]) -> None:
    path, _, _ = written
    data = bytearray(path.read_bytes())
    data[-1] ^= 1  # same size, new content: only ctime/mtime/inode can tell
    path.write_bytes(bytes(data))
    src = ByteSource(io.BytesIO(bytes(data)))
    assert materialize.clean_fresh(src, path.name) is None
    assert src.position == 0  # left for the ordinary clean


def test_other_paths_and_no_record_are_cleaned(
    written: tuple[Path, bytes, Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _, _ = written
    assert materialize.clean_fresh(ByteSource(io.BytesIO(b"")), "other.safetensors") is None
    monkeypatch.delenv(materialize.FRESH_ENV)
    materialize._fresh_files.cache_clear()
    assert materialize.clean_fresh(ByteSource(io.BytesIO(b"")), path.name) is None


def test_an_unreadable_record_is_ignored(
    written: tuple[Path, bytes, Store], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path, _, _ = written
    bad = tmp_path / "bad.json"
    bad.write_text('{"x": ')
    monkeypatch.setenv(materialize.FRESH_ENV, str(bad))
    materialize._fresh_files.cache_clear()
    assert materialize.clean_fresh(ByteSource(io.BytesIO(b"")), path.name) is None


def test_the_record_is_removed_after_the_refresh(tmp_path: Path) -> None:
    store = Store(tmp_path / "theta")
    fresh = {"/x": materialize.Fresh([1, 2, 3, 4, 5], b"git-theta-manifest 1\n")}
    with materialize._fresh_record(store, fresh) as env:
        name = env[materialize.FRESH_ENV]
        assert Path(name).is_file()
    assert not Path(name).exists()
