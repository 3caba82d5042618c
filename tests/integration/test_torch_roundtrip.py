"""torch.save checkpoints through real git add / commit / rm / checkout."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from tests.conftest import git


def manifest_entries(repo: Path, rev_path: str) -> dict[str, dict[str, object]]:
    text = git("cat-file", "-p", rev_path, cwd=repo).stdout
    lines = text.splitlines()
    assert lines[0] == "git-theta-manifest 1"
    assert lines[1] == "format torch"
    return {e["name"]: e for e in map(json.loads, lines[3:])}


def commit_remove_checkout(repo: Path, name: str) -> bytes:
    """Commit `name`, delete it, check it out again; return the bytes that came back."""
    git("add", name, cwd=repo)
    git("commit", "-qm", f"add {name}", cwd=repo)
    (repo / name).unlink()
    git("checkout", "--", name, cwd=repo)
    assert git("status", "--porcelain", cwd=repo).stdout == ""
    return (repo / name).read_bytes()


def assert_same(a: object, b: object) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor)
        assert a.dtype == b.dtype and a.shape == b.shape
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b)
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    else:
        assert type(a) is type(b) and a == b


def small_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Embedding(50, 16),
        torch.nn.Linear(16, 32),
        torch.nn.LayerNorm(32),
        torch.nn.Linear(32, 8),
    )


def test_state_dict_comes_back_byte_identical(repo: Path) -> None:
    sd = small_model().state_dict()
    torch.save(sd, repo / "model.pt")
    original = (repo / "model.pt").read_bytes()
    assert commit_remove_checkout(repo, "model.pt") == original
    entries = manifest_entries(repo, "HEAD:model.pt")
    assert set(entries) == set(sd)
    assert entries["1.weight"]["shape"] == [32, 16] and entries["1.weight"]["dtype"] == "F32"
    assert_same(sd, torch.load(repo / "model.pt", weights_only=True))


def test_nested_checkpoint_with_optimizer_and_plain_values(repo: Path) -> None:
    model = small_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.tensor([1, 2, 3])).sum().backward()
    opt.step()
    ckpt = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "epoch": 3,
        "name": "x",
        "flag": True,
        "none": None,
    }
    torch.save(ckpt, repo / "ckpt.bin")
    original = (repo / "ckpt.bin").read_bytes()
    assert commit_remove_checkout(repo, "ckpt.bin") == original
    back = torch.load(repo / "ckpt.bin", weights_only=True)
    assert_same(ckpt, back)
    assert (back["epoch"], back["name"], back["flag"], back["none"]) == (3, "x", True, None)
    entries = manifest_entries(repo, "HEAD:ckpt.bin")
    assert "model.0.weight" in entries and "optimizer.state.0.exp_avg" in entries


def test_changing_one_tensor_stores_only_that_tensor_again(repo: Path) -> None:
    sd = small_model().state_dict()
    torch.save(sd, repo / "model.pt")
    git("add", "model.pt", cwd=repo)
    git("commit", "-qm", "v1", cwd=repo)
    before = manifest_entries(repo, "HEAD:model.pt")
    old_weight = sd["3.weight"].clone()
    sd["3.weight"] += 1
    torch.save(sd, repo / "model.pt")
    git("commit", "-qam", "v2", cwd=repo)
    after = manifest_entries(repo, "HEAD:model.pt")
    changed = {n for n in before if before[n] != after[n]}
    assert changed == {"3.weight"}
    git("checkout", "-q", "HEAD~1", cwd=repo)
    assert torch.equal(torch.load(repo / "model.pt", weights_only=True)["3.weight"], old_weight)
    assert git("status", "--porcelain", cwd=repo).stdout == ""


def test_real_minilm_weights_saved_by_torch(repo: Path, minilm: Path) -> None:
    sd = load_file(str(minilm))
    torch.save(sd, repo / "pytorch_model.bin")
    original = (repo / "pytorch_model.bin").read_bytes()
    assert commit_remove_checkout(repo, "pytorch_model.bin") == original
    back = torch.load(repo / "pytorch_model.bin", weights_only=True)
    assert_same(sd, back)
    entries = manifest_entries(repo, "HEAD:pytorch_model.bin")
    assert len(entries) == len(sd)
    for name, t in sd.items():
        assert entries[name]["shape"] == list(t.shape)


def test_pickle_that_runs_code_fails_the_add_and_runs_nothing(repo: Path) -> None:
    marker = repo.parent / "pwned"
    torch.save({"w": torch.zeros(2), "evil": _Evil(str(marker))}, repo / "evil.pt")
    proc = git("add", "evil.pt", cwd=repo, check=False)
    assert proc.returncode != 0
    assert "refuses to load code" in proc.stderr
    assert not marker.exists()


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return (os.system, (f"touch {self.marker}",))


def test_bf16_tied_weights_stay_tied(repo: Path) -> None:
    emb = torch.nn.Embedding(64, 8).to(torch.bfloat16)
    head = torch.nn.Linear(8, 64, bias=False).to(torch.bfloat16)
    head.weight = emb.weight
    sd = torch.nn.ModuleDict({"emb": emb, "head": head}).state_dict()
    torch.save(sd, repo / "tied.pt")
    original = (repo / "tied.pt").read_bytes()
    assert commit_remove_checkout(repo, "tied.pt") == original
    entries = manifest_entries(repo, "HEAD:tied.pt")
    assert list(entries) == ["emb.weight"]
    assert (entries["emb.weight"]["dtype"], entries["emb.weight"]["shape"]) == ("BF16", [64, 8])
    back = torch.load(repo / "tied.pt", weights_only=True)
    assert_same(sd, back)
    assert back["emb.weight"].data_ptr() == back["head.weight"].data_ptr()
