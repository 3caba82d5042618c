"""filters.detect picks the right installed format for each kind of checkpoint."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from safetensors.numpy import save as save_safetensors

from git_theta import filters
from git_theta.errors import UnknownFormatError


def torch_bytes(**kwargs: object) -> bytes:
    buf = io.BytesIO()
    torch.save({"w": torch.ones(3), "b": {"c": torch.zeros(2)}}, buf, **kwargs)  # type: ignore[arg-type]
    return buf.getvalue()


def npz_bytes(compressed: bool, **arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (torch_bytes(), "torch"),
        (torch_bytes(_use_new_zipfile_serialization=False), "torch"),
        (npz_bytes(False, w=np.ones(2)), "npz"),
        (npz_bytes(True, w=np.ones(2)), "npz"),
        # an npz key that looks like a torch record path is still an npz
        (npz_bytes(False, **{"archive/data/0": np.ones(2)}), "npz"),
        (save_safetensors({"w": np.ones(2, np.float32)}), "safetensors"),
    ],
    ids=["torch", "torch-legacy", "npz", "npz-compressed", "npz-torchlike-key", "safetensors"],
)
def test_detect(data: bytes, expected: str) -> None:
    assert filters.detect(data[: filters.SNIFF_BYTES], "f").name == expected


def test_a_plain_zip_is_no_checkpoint() -> None:
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("notes.txt", "hello")
    with pytest.raises(UnknownFormatError):
        filters.detect(buf.getvalue(), "f.zip")
