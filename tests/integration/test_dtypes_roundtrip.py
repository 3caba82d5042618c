"""Every dtype safetensors carries, 0-d and empty tensors and __metadata__, through real git."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file
from safetensors.torch import save_file as torch_save_file

from tests.conftest import git


def numpy_tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    ints = {
        f"{np.dtype(t).name}": rng.integers(np.iinfo(t).min, np.iinfo(t).max, (3, 5), dtype=t)
        for t in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64)
    }
    return {
        "float64": rng.standard_normal((4, 3)),
        "float32": rng.standard_normal((7,)).astype(np.float32),
        "float16": rng.standard_normal((2, 3, 4)).astype(np.float16),
        **ints,
        "bool": rng.integers(0, 2, (9,)).astype(bool),
        "scalar.f32": np.array(-2.5, dtype=np.float32),
        "scalar.i64": np.array(42, dtype=np.int64),
        "empty.f32": np.zeros((0,), dtype=np.float32),
        "empty.2d": np.zeros((3, 0), dtype=np.int16),
        "specials": np.array([np.nan, np.inf, -np.inf, -0.0, 1e-45], dtype=np.float32),
    }


def torch_tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "bf16": torch.randn(16, 8, generator=g).to(torch.bfloat16),
        "f8_e4m3": torch.randn(32, generator=g).to(torch.float8_e4m3fn),
        "f8_e5m2": torch.randn(4, 8, generator=g).to(torch.float8_e5m2),
        "bf16.scalar": torch.tensor(1.5, dtype=torch.bfloat16),
        "bf16.empty": torch.zeros(0, 4, dtype=torch.bfloat16),
        "f16": torch.randn(5, generator=g).to(torch.float16),
    }


def header(path: Path) -> dict[str, dict[str, object]]:
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + n])  # type: ignore[no-any-return]


def round_trip(repo: Path, name: str) -> None:
    target = repo / name
    original = target.read_bytes()
    git("add", name, cwd=repo)
    git("commit", "-qm", f"add {name}", cwd=repo)
    stored = git("cat-file", "blob", f"HEAD:{name}", cwd=repo).stdout
    assert stored.startswith("git-theta-manifest 1\nformat safetensors\n")
    target.unlink()
    git("checkout", "--", name, cwd=repo)
    assert target.read_bytes() == original
    assert git("status", "--porcelain", cwd=repo).stdout == ""


def manifest_dtypes(repo: Path, name: str) -> dict[str, tuple[str, list[int]]]:
    text = git("cat-file", "blob", f"HEAD:{name}", cwd=repo).stdout
    entries = [json.loads(line) for line in text.splitlines()[3:]]
    return {e["name"]: (e["dtype"], e["shape"]) for e in entries}


def test_numpy_dtypes_zero_dim_empty_and_metadata(repo: Path) -> None:
    tensors = numpy_tensors()
    save_file(tensors, str(repo / "np.safetensors"), metadata={"framework": "np", "k": "ü"})
    assert header(repo / "np.safetensors")["__metadata__"] == {"framework": "np", "k": "ü"}
    round_trip(repo, "np.safetensors")
    got = manifest_dtypes(repo, "np.safetensors")
    assert {d for d, _ in got.values()} == {
        "F64", "F32", "F16", "I8", "I16", "I32", "I64", "U8", "U16", "U32", "U64", "BOOL",
    }  # fmt: skip
    assert got["scalar.i64"] == ("I64", [])
    assert got["empty.2d"] == ("I16", [3, 0])


def test_torch_bf16_and_fp8(repo: Path) -> None:
    tensors = torch_tensors()
    torch_save_file(tensors, str(repo / "pt.safetensors"), metadata={"format": "pt"})
    round_trip(repo, "pt.safetensors")
    got = manifest_dtypes(repo, "pt.safetensors")
    assert got["bf16"] == ("BF16", [16, 8])
    assert got["f8_e4m3"] == ("F8_E4M3", [32])
    assert got["f8_e5m2"] == ("F8_E5M2", [4, 8])
    assert got["bf16.scalar"] == ("BF16", [])
    assert got["bf16.empty"] == ("BF16", [0, 4])


def test_checkpoint_with_no_tensors(repo: Path) -> None:
    save_file({}, str(repo / "empty.safetensors"), metadata={"only": "metadata"})
    round_trip(repo, "empty.safetensors")
    assert manifest_dtypes(repo, "empty.safetensors") == {}
