"""numpy .npz archives through real git add / commit / rm / checkout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import git


@pytest.mark.parametrize("saver", [np.savez, np.savez_compressed], ids=["savez", "compressed"])
def test_npz_comes_back_byte_identical(repo: Path, saver: object) -> None:
    rng = np.random.default_rng(0)
    arrays = {
        "emb": rng.standard_normal((100, 16)).astype(np.float32),
        "bias": np.arange(16, dtype=np.int64),
        "mask": rng.integers(0, 2, 50).astype(bool),
        "fortran": np.asfortranarray(rng.standard_normal((4, 5))),
        "scalar": np.float16(1.5),
    }
    saver(repo / "w.npz", **arrays)  # type: ignore[operator]
    original = (repo / "w.npz").read_bytes()
    git("add", "w.npz", cwd=repo)
    git("commit", "-qm", "npz", cwd=repo)
    stored = git("cat-file", "-p", "HEAD:w.npz", cwd=repo).stdout
    assert stored.startswith("git-theta-manifest 1\nformat npz\n")
    (repo / "w.npz").unlink()
    git("checkout", "--", "w.npz", cwd=repo)
    assert (repo / "w.npz").read_bytes() == original
    assert git("status", "--porcelain", cwd=repo).stdout == ""
    with np.load(repo / "w.npz") as back:
        assert sorted(back.files) == sorted(arrays)
        for k, v in arrays.items():
            assert back[k].dtype == v.dtype and back[k].shape == v.shape
            np.testing.assert_array_equal(back[k], v)


def test_legacy_torch_file_is_refused_with_the_fix(repo: Path) -> None:
    torch.save({"w": torch.ones(2)}, repo / "old.pt", _use_new_zipfile_serialization=False)
    proc = git("add", "old.pt", cwd=repo, check=False)
    assert proc.returncode != 0
    assert "legacy torch.save file" in proc.stderr and "re-save" in proc.stderr
