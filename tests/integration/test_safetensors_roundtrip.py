"""A safetensors checkpoint through real git add / commit / checkout."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from tests.conftest import git, store_objects


def test_minilm_comes_back_byte_identical(repo: Path, minilm: Path) -> None:
    target = repo / "model.safetensors"
    shutil.copyfile(minilm, target)
    git("add", "model.safetensors", cwd=repo)
    git("commit", "-qm", "base", cwd=repo)
    stored = git("cat-file", "-p", "HEAD:model.safetensors", cwd=repo).stdout
    assert stored.startswith("git-theta-manifest 1\nformat safetensors\n")
    target.unlink()
    git("checkout", "--", "model.safetensors", cwd=repo)
    assert target.read_bytes() == minilm.read_bytes()
    assert git("status", "--porcelain", cwd=repo).stdout == ""


def test_unchanged_parameters_are_not_stored_again(repo: Path) -> None:
    rng = np.random.default_rng(0)
    tensors = {
        f"layer{i}.weight": rng.standard_normal((64, 64)).astype(np.float32) for i in range(10)
    }
    save_file(tensors, str(repo / "m.safetensors"))
    git("add", "m.safetensors", cwd=repo)
    git("commit", "-qm", "v1", cwd=repo)
    before = store_objects(repo)
    original = tensors["layer3.weight"].copy()
    tensors["layer3.weight"] = tensors["layer3.weight"] + 1
    save_file(tensors, str(repo / "m.safetensors"))
    git("commit", "-qam", "v2", cwd=repo)
    added = store_objects(repo) - before
    # the header is unchanged, so the changed tensor is the only new object
    assert len(added) == 1
    git("checkout", "-q", "HEAD~1", cwd=repo)
    back = load_file(str(repo / "m.safetensors"))
    np.testing.assert_array_equal(back["layer3.weight"], original)
