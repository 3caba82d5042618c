"""The benchmark's own machinery: version generation and one measured step per tool."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from tests.conftest import ROOT


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "bench_store", ROOT / "benchmarks" / "bench_store.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_store"] = mod  # dataclasses look their module up by name
    spec.loader.exec_module(mod)
    return mod


def small_model(bench: ModuleType, dtype: str = "F32") -> object:
    rng = np.random.default_rng(0)
    tensors = {f"w{i}": rng.standard_normal((10 * (i + 1), 8), dtype=np.float32) for i in range(8)}
    tensors["ids"] = np.arange(5, dtype=np.int64)
    return bench.Model("tiny", tensors, dtype)


def test_changed_tensors_stay_within_ten_percent_and_are_reproducible(bench: ModuleType) -> None:
    model = small_model(bench)
    chosen = bench.pick_changed(model)
    assert chosen == bench.pick_changed(model)
    assert chosen and "ids" not in chosen
    assert sum(model.tensors[n].size for n in chosen) <= 0.10 * model.params


def test_bf16_rounding_matches_torch(bench: ModuleType) -> None:
    a = np.random.default_rng(1).standard_normal(10_000, dtype=np.float32) * 0.02
    want = torch.from_numpy(a).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(bench.to_bf16_bits(a), want)


@pytest.mark.parametrize("dtype", ["F32", "BF16"])
def test_versions_differ_as_described(bench: ModuleType, tmp_path: Path, dtype: str) -> None:
    from safetensors.torch import load_file

    model = small_model(bench, dtype)
    chosen = set(bench.pick_changed(model))
    paths, fraction = bench.write_versions(model, tmp_path)
    v1, v2, v3 = (load_file(str(p)) for p in paths)
    assert 0 < fraction <= 0.10
    for name in v1:
        assert torch.equal(v1[name], v2[name]) == (name not in chosen)
    # v3 moves every float tensor of v2; the integer buffer never changes
    assert all(not torch.equal(v2[n], v3[n]) for n in v2 if n != "ids")
    assert torch.equal(v1["ids"], v3["ids"])


def test_one_measured_add_per_tool(bench: ModuleType, tmp_path: Path) -> None:
    src = tmp_path / "v.safetensors"
    model = small_model(bench)
    bench.save(model, model.tensors, src)
    for tool in bench.TOOLS:
        run = bench.Run(tool, [src], tmp_path / "work")
        m = run.step(0)
        assert m.wall > 0 and m.cpu > 0 and m.tree_rss > 0
        assert m.git_growth is not None and m.git_growth > 0
        size = run.box.run("git", "cat-file", "-s", "HEAD:model.safetensors")
        if tool == "git":
            assert int(size) == src.stat().st_size
        else:
            stored = run.box.run("git", "cat-file", "-p", "HEAD:model.safetensors")
            pointer = {"theta": "git-theta-manifest 1", "lfs": "version https://git-lfs"}
            assert stored.startswith(pointer[tool])
        if tool == "theta":  # lives long enough (Python start-up) for the 20 ms sampling
            assert m.filter_rss > 0
        run.close()
