"""Reading side-loaded update files: PEFT and plain names, scales, shapes, errors (no git)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from git_theta import arrays
from git_theta.checkpoints.base import TensorSpec
from git_theta.errors import UpdateError
from git_theta.sideload import Tensor, ia3_patches, low_rank_patches, parse_update, peft_scale

SPECS = {
    "layers.0.q_proj.weight": TensorSpec("layers.0.q_proj.weight", "F32", (16, 8)),
    "layers.0.fc.weight": TensorSpec("layers.0.fc.weight", "BF16", (16, 8)),
    "embed.weight": TensorSpec("embed.weight", "F32", (100, 8)),
    "h.0.attn.c_attn.weight": TensorSpec("h.0.attn.c_attn.weight", "F32", (8, 24)),
    "ids": TensorSpec("ids", "I64", (16, 8)),
    "norm.weight": TensorSpec("norm.weight", "F32", (8,)),
}


def t(shape: tuple[int, ...], dtype: str = "F32") -> Tensor:
    return Tensor(dtype, shape, arrays.from_float(np.ones(shape), dtype))


def test_peft_lora_names_and_scale() -> None:
    tensors = {
        "base_model.model.layers.0.q_proj.lora_A.weight": t((4, 8)),
        "base_model.model.layers.0.q_proj.lora_B.weight": t((16, 4)),
    }
    (p,) = low_rank_patches(tensors, SPECS, {"r": 4, "lora_alpha": 16})
    assert (p.param, p.rank, p.scale, p.transpose) == ("layers.0.q_proj.weight", 4, 4.0, False)
    (p,) = low_rank_patches(tensors, SPECS, None)
    assert p.scale == 1.0


def test_peft_scale_honours_rslora_and_patterns() -> None:
    assert peft_scale({"r": 4, "lora_alpha": 8, "use_rslora": True}, "q_proj", 4) == 4.0
    cfg = {"r": 8, "lora_alpha": 8, "rank_pattern": {"q_proj": 4}, "alpha_pattern": {"q_proj": 2}}
    assert peft_scale(cfg, "layers.0.q_proj", 4) == 0.5
    assert peft_scale(cfg, "layers.0.v_proj", 8) == 1.0
    with pytest.raises(UpdateError, match=re.escape("rank 4 but adapter_config.json says r = 8")):
        peft_scale({"r": 8, "lora_alpha": 8}, "v_proj", 4)


def test_embeddings_and_fan_in_fan_out_take_the_transposed_product() -> None:
    (p,) = low_rank_patches(
        {
            "base_model.model.embed.lora_embedding_A": t((2, 100)),
            "base_model.model.embed.lora_embedding_B": t((8, 2)),
        },
        SPECS,
        None,
    )
    assert (p.param, p.transpose) == ("embed.weight", True)
    (p,) = low_rank_patches(
        {
            "base_model.model.h.0.attn.c_attn.lora_A.default.weight": t((2, 8)),
            "base_model.model.h.0.attn.c_attn.lora_B.default.weight": t((24, 2)),
        },
        SPECS,
        {"r": 2, "lora_alpha": 2, "fan_in_fan_out": True},
    )
    assert (p.param, p.transpose) == ("h.0.attn.c_attn.weight", True)


def test_plain_low_rank_with_scale() -> None:
    scale = Tensor("F32", (1,), np.array([0.25], np.float32).tobytes())
    tensors = {
        "layers.0.fc.weight.A": t((3, 8), "BF16"),
        "layers.0.fc.weight.B": t((16, 3), "BF16"),
        "layers.0.fc.weight.scale": scale,
    }
    (p,) = low_rank_patches(tensors, SPECS, None)
    assert (p.param, p.rank, p.scale) == ("layers.0.fc.weight", 3, 0.25)


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ({"layers.0.q_proj.weight.B": t((16, 4))}, "no matching A factor"),
        (
            {"layers.0.q_proj.weight.A": t((4, 8)), "layers.0.q_proj.weight.B": t((16, 5))},
            "factors must be A [4, 8] and B [16, 4]",
        ),
        (
            {"layers.0.q_proj.weight.A": t((4, 8)), "layers.0.q_proj.weight.B": t((16, 4), "F16")},
            "of one dtype",
        ),
        ({"ids.A": t((4, 8)), "ids.B": t((16, 4))}, "needs a float parameter"),
        ({"norm.weight.A": t((4, 8)), "norm.weight.B": t((8, 4))}, "low-rank needs a matrix"),
        ({"something.else": t((4, 8))}, "match no parameter: something.else"),
        (
            {
                "base_model.model.nowhere.lora_A.weight": t((4, 8)),
                "base_model.model.nowhere.lora_B.weight": t((16, 4)),
            },
            "names no parameter of the checkpoint (no nowhere.weight)",
        ),
    ],
)
def test_bad_low_rank_updates_are_refused(tensors: dict[str, Tensor], message: str) -> None:
    with pytest.raises(UpdateError) as err:
        low_rank_patches(tensors, SPECS, None)
    assert message in str(err.value)


def test_ia3_directions() -> None:
    patches = ia3_patches(
        {
            "base_model.model.layers.0.q_proj.ia3_l": t((16, 1)),
            "layers.0.fc.weight.ia3": t((1, 8)),
            "embed.weight": t((8,)),
            "norm.weight": t((8,)),
        },
        SPECS,
    )
    axes = {p.param: p.axis for p in patches}
    assert axes == {
        "layers.0.q_proj.weight": 0,
        "layers.0.fc.weight": 1,
        "embed.weight": 1,
        "norm.weight": 0,
    }


def test_ia3_refuses_vectors_that_fit_no_axis() -> None:
    with pytest.raises(UpdateError, match="scales neither the rows nor the columns"):
        ia3_patches({"layers.0.q_proj.weight.ia3": t((8, 1))}, SPECS)
    with pytest.raises(UpdateError, match=re.escape("two tensors scale layers.0.q_proj.weight")):
        ia3_patches(
            {
                "layers.0.q_proj.weight.ia3": t((16,)),
                "base_model.model.layers.0.q_proj.ia3_l": t((16, 1)),
            },
            SPECS,
        )


def test_parse_update_reads_the_adapter_config_beside_the_file(tmp_path: Path) -> None:
    save_file(
        {
            "base_model.model.layers.0.q_proj.lora_A.weight": np.ones((4, 8), np.float32),
            "base_model.model.layers.0.q_proj.lora_B.weight": np.ones((16, 4), np.float32),
        },
        str(tmp_path / "adapter_model.safetensors"),
    )
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 4, "lora_alpha": 12}))
    (p,) = parse_update("low-rank", tmp_path / "adapter_model.safetensors", SPECS)
    assert math.isclose(p.scale, 3.0)
    (tmp_path / "adapter_config.json").write_text("{not json")
    with pytest.raises(UpdateError, match=re.escape("adapter_config.json is not valid JSON")):
        parse_update("low-rank", tmp_path / "adapter_model.safetensors", SPECS)
    save_file({}, str(tmp_path / "empty.safetensors"))
    with pytest.raises(UpdateError, match="holds no tensors"):
        parse_update("ia3", tmp_path / "empty.safetensors", SPECS)
