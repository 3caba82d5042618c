"""Patches through real git: automatic sparse / delta / rows records on commit, side-loaded
low-rank and ia3 updates with `git theta add`, chains, rebase."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load_file, save_file
from safetensors.torch import save_file as torch_save_file

from tests.conftest import git, store_objects, theta

LAYERS = 2
NAMES = [
    f"encoder.layer.{i}.attention.self.{m}.{p}"
    for i in range(LAYERS)
    for m in ("query", "key", "value")
    for p in ("weight", "bias")
] + ["embeddings.word_embeddings.weight", "pooler.dense.weight"]


def model(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for name in NAMES:
        if name.startswith("embeddings"):
            shape: tuple[int, ...] = (500, 32)
        elif name.endswith("bias"):
            shape = (32,)
        elif name.startswith("pooler"):
            shape = (48, 32)
        else:
            shape = (32, 32)
        out[name] = rng.standard_normal(shape).astype(np.float32) * 0.1
    return out


def records(repo: Path, rev: str = "HEAD", path: str = "m.safetensors") -> dict[str, Any]:
    text = git("cat-file", "blob", f"{rev}:{path}", cwd=repo).stdout
    lines = text.splitlines()[3:]
    return {(e := json.loads(line))["name"]: e["record"] for line in lines}


def index_records(repo: Path, path: str = "m.safetensors") -> dict[str, Any]:
    return records(repo, "", path)


def depth(record: dict[str, Any]) -> int:
    n = 0
    while "base" in record:
        n, record = n + 1, record["base"]
    return n


def commit_model(repo: Path, tensors: dict[str, np.ndarray], message: str) -> bytes:
    save_file(tensors, str(repo / "m.safetensors"))
    git("add", "m.safetensors", cwd=repo)
    git("commit", "-qm", message, cwd=repo)
    return (repo / "m.safetensors").read_bytes()


def checkout_bytes(repo: Path, rev: str) -> bytes:
    git("checkout", "-q", rev, cwd=repo)
    (repo / "m.safetensors").unlink()
    git("checkout", "-q", "--", "m.safetensors", cwd=repo)
    return (repo / "m.safetensors").read_bytes()


# -- automatic choice on commit -------------------------------------------------------------


def test_sparse_change_is_committed_as_indices_and_values(repo: Path) -> None:
    t = model()
    v1 = commit_model(repo, t, "v1")
    before = store_objects(repo)
    flat = t["pooler.dense.weight"].reshape(-1)
    flat[[3, 100, 1000]] += 1.0
    v2 = commit_model(repo, t, "v2")
    rec = records(repo)
    old = records(repo, "HEAD~1")
    assert rec["pooler.dense.weight"]["type"] == "sparse"
    assert rec["pooler.dense.weight"]["count"] == 3
    assert rec["pooler.dense.weight"]["base"] == old["pooler.dense.weight"]
    assert {k: v for k, v in rec.items() if k != "pooler.dense.weight"} == {
        k: v for k, v in old.items() if k != "pooler.dense.weight"
    }
    assert len(store_objects(repo) - before) == 2  # indices and values; same header
    assert checkout_bytes(repo, "HEAD~1") == v1
    assert checkout_bytes(repo, "main") == v2
    assert git("status", "--porcelain", cwd=repo).stdout == ""


def test_fine_tune_like_change_is_committed_as_xor_delta(repo: Path) -> None:
    rng = np.random.default_rng(1)
    base = {"w": torch.randn(256, 256), "v": torch.randn(128, 256)}
    for dtype, bound in ((torch.float32, 0.7), (torch.bfloat16, 0.3)):
        t = {k: v.to(dtype) for k, v in base.items()}
        torch_save_file(t, str(repo / "m.safetensors"))
        git("add", "m.safetensors", cwd=repo)
        git("commit", "-qm", f"base {dtype}", cwd=repo)
        before = store_objects(repo)
        sizes = {k: r["size"] for k, r in records(repo).items()}
        noise = {
            k: torch.from_numpy(1 + 1e-3 * rng.standard_normal(v.shape)) for k, v in base.items()
        }
        tuned = {k: (v * noise[k]).to(dtype) for k, v in base.items()}
        torch_save_file(tuned, str(repo / "m.safetensors"))
        expected = (repo / "m.safetensors").read_bytes()
        git("commit", "-qam", f"tune {dtype}", cwd=repo)
        rec = records(repo)
        for k in base:
            assert rec[k]["type"] == "delta", (dtype, rec[k]["type"])
            assert rec[k]["op"] == "xor"
            assert rec[k]["size"] < bound * sizes[k]
        assert len(store_objects(repo) - before) == 2
        assert checkout_bytes(repo, "main") == expected


def test_chain_longer_than_the_cap_gets_dense_keyframes(repo: Path) -> None:
    git("config", "theta.chain.max", "3", cwd=repo)
    t = model()
    versions = [commit_model(repo, t, "v0")]
    for i in range(6):
        t["pooler.dense.weight"][i, :4] += 1.0
        versions.append(commit_model(repo, t, f"v{i + 1}"))
    depths = [depth(records(repo, f"HEAD~{5 - i}")["pooler.dense.weight"]) for i in range(6)]
    assert depths == [1, 2, 3, 0, 1, 2]
    for i, want in enumerate(versions):
        assert checkout_bytes(repo, f"main~{6 - i}") == want
    git("checkout", "-q", "main", cwd=repo)


def test_removed_parameters_store_nothing_but_the_new_header(repo: Path) -> None:
    t = model()
    commit_model(repo, t, "v1")
    before = store_objects(repo)
    for name in ("pooler.dense.weight", "encoder.layer.1.attention.self.key.weight"):
        del t[name]
    v2 = commit_model(repo, t, "drop two")
    added = store_objects(repo) - before
    head = git("cat-file", "blob", "HEAD:m.safetensors", cwd=repo).stdout.splitlines()
    skeleton = head[2].split()[1]
    assert added == {skeleton}
    assert checkout_bytes(repo, "main") == v2


def test_trimmed_and_appended_embedding_rows(repo: Path) -> None:
    t = model()
    commit_model(repo, t, "v1")
    rng = np.random.default_rng(2)
    emb = t["embeddings.word_embeddings.weight"]
    drop = np.sort(rng.choice(len(emb), 100, replace=False))
    t["embeddings.word_embeddings.weight"] = np.delete(emb, drop, axis=0)
    trimmed = commit_model(repo, t, "trim 20% of the rows")
    rec = records(repo)["embeddings.word_embeddings.weight"]
    assert rec["type"] == "rows"
    assert (rec["dropped"], rec["appended"], rec["base_shape"]) == (100, 0, [500, 32])
    assert rec["dropped_size"] < 400  # 100 row indices, not 100 rows of 128 bytes
    new_rows = rng.standard_normal((7, 32)).astype(np.float32)
    t["embeddings.word_embeddings.weight"] = np.concatenate(
        [t["embeddings.word_embeddings.weight"], new_rows]
    )
    grown = commit_model(repo, t, "append 7 rows")
    rec = records(repo)["embeddings.word_embeddings.weight"]
    assert (rec["type"], rec["dropped"], rec["appended"]) == ("rows", 0, 7)
    assert rec["appended_size"] < 7 * 32 * 4 + 100  # the new rows and a header
    assert checkout_bytes(repo, "main~1") == trimmed
    assert checkout_bytes(repo, "main") == grown


# -- side-loaded low-rank and ia3 -------------------------------------------------------------

ATTN = [f"encoder.layer.{i}.attention.self.{m}" for i in range(LAYERS) for m in ("query", "value")]


def peft_lora(dir: Path, rank: int = 4, alpha: int = 8, seed: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    lora = {}
    for m in ATTN:
        lora[f"base_model.model.{m}.lora_A.weight"] = rng.standard_normal((rank, 32)).astype(
            np.float32
        )
        lora[f"base_model.model.{m}.lora_B.weight"] = (
            rng.standard_normal((32, rank)).astype(np.float32) * 0.01
        )
    dir.mkdir(parents=True, exist_ok=True)
    save_file(lora, str(dir / "adapter_model.safetensors"))
    (dir / "adapter_config.json").write_text(
        json.dumps(
            {
                "peft_type": "LORA",
                "r": rank,
                "lora_alpha": alpha,
                "target_modules": ["query", "value"],
            }
        )
    )
    return lora


def test_low_rank_add_with_peft_names(repo: Path, tmp_path: Path) -> None:
    t = model()
    commit_model(repo, t, "base")
    base_records = records(repo)
    lora = peft_lora(tmp_path / "adapter")
    before = store_objects(repo)
    out = theta(
        "add",
        "m.safetensors",
        "--update-type",
        "low-rank",
        "--update-path",
        str(tmp_path / "adapter" / "adapter_model.safetensors"),
        cwd=repo,
    )
    assert "4 parameter(s)" in out.stdout
    assert git("status", "--porcelain", cwd=repo).stdout == "M  m.safetensors\n"
    applied = load_file(str(repo / "m.safetensors"))
    for m in ATTN:
        a = lora[f"base_model.model.{m}.lora_A.weight"].astype(np.float64)
        b = lora[f"base_model.model.{m}.lora_B.weight"].astype(np.float64)
        want = t[f"{m}.weight"] + 2.0 * (b @ a)
        np.testing.assert_allclose(applied[f"{m}.weight"], want, rtol=1e-6, atol=1e-7)
        assert not np.array_equal(applied[f"{m}.weight"], t[f"{m}.weight"])
    np.testing.assert_array_equal(applied["pooler.dense.weight"], t["pooler.dense.weight"])
    staged = index_records(repo)
    for m in ATTN:
        rec = staged[f"{m}.weight"]
        assert (rec["type"], rec["rank"], rec["scale"], rec["transpose"]) == (
            "low-rank",
            4,
            2.0,
            False,
        )
        assert rec["base"] == base_records[f"{m}.weight"]
    assert len(store_objects(repo) - before) == 2 * len(ATTN)
    written = (repo / "m.safetensors").read_bytes()
    git("commit", "-qm", "lora", cwd=repo)
    assert git("status", "--porcelain", cwd=repo).stdout == ""
    assert checkout_bytes(repo, "main") == written


def test_ia3_add_with_plain_names_scales_rows_and_columns(repo: Path, tmp_path: Path) -> None:
    t = model()
    commit_model(repo, t, "base")
    rows = np.linspace(0.5, 1.5, 48, dtype=np.float32)  # pooler is (48, 32): 48 rows
    cols = np.linspace(0.9, 1.1, 32, dtype=np.float32).reshape(1, 32)
    peft_rows = np.linspace(1.0, 2.0, 32, dtype=np.float32).reshape(32, 1)
    save_file(
        {
            "pooler.dense.weight.ia3": rows,
            "encoder.layer.0.attention.self.key.weight": cols,
            "base_model.model.encoder.layer.1.attention.self.key.ia3_l": peft_rows,
        },
        str(tmp_path / "ia3.safetensors"),
    )
    theta(
        "add",
        "m.safetensors",
        "--update-type",
        "ia3",
        "--update-path",
        str(tmp_path / "ia3.safetensors"),
        cwd=repo,
    )
    applied = load_file(str(repo / "m.safetensors"))
    k0, k1 = (
        "encoder.layer.0.attention.self.key.weight",
        "encoder.layer.1.attention.self.key.weight",
    )
    np.testing.assert_array_equal(
        applied["pooler.dense.weight"], t["pooler.dense.weight"] * rows[:, None]
    )
    np.testing.assert_array_equal(applied[k0], t[k0] * cols)
    np.testing.assert_array_equal(applied[k1], t[k1] * peft_rows)
    staged = index_records(repo)
    assert [staged[n]["axis"] for n in ("pooler.dense.weight", k0, k1)] == [0, 1, 0]
    assert all(staged[n]["type"] == "ia3" for n in ("pooler.dense.weight", k0, k1))
    written = (repo / "m.safetensors").read_bytes()
    git("commit", "-qm", "ia3", cwd=repo)
    assert git("status", "--porcelain", cwd=repo).stdout == ""
    assert checkout_bytes(repo, "main~1") != written
    assert checkout_bytes(repo, "main") == written


def test_rebase_of_a_low_rank_commit_onto_a_new_base(repo: Path, tmp_path: Path) -> None:
    """A low-rank record names its base by content: after a rebase onto a commit that changed
    other parameters, the patched parameters keep exactly the values that were added (base +
    patch, as reviewed), and the new base's changes are kept too."""
    t = model()
    commit_model(repo, t, "base")
    git("switch", "-qc", "lora", cwd=repo)
    peft_lora(tmp_path / "adapter")
    theta(
        "add",
        "m.safetensors",
        "--update-type",
        "low-rank",
        "--update-path",
        str(tmp_path / "adapter" / "adapter_model.safetensors"),
        cwd=repo,
    )
    git("commit", "-qm", "lora", cwd=repo)
    patched = load_file(str(repo / "m.safetensors"))
    git("switch", "-q", "main", cwd=repo)
    t["embeddings.word_embeddings.weight"][:10] += 1.0  # upstream: another parameter moves
    upstream = commit_model(repo, t, "upstream")
    git("switch", "-q", "lora", cwd=repo)
    git("rebase", "-q", "main", cwd=repo)
    assert git("rev-parse", "HEAD~1", cwd=repo).stdout == git("rev-parse", "main", cwd=repo).stdout
    rec = records(repo)
    assert all(rec[f"{m}.weight"]["type"] == "low-rank" for m in ATTN)
    (repo / "m.safetensors").unlink()
    git("checkout", "-q", "--", "m.safetensors", cwd=repo)
    rebased = load_file(str(repo / "m.safetensors"))
    for m in ATTN:
        np.testing.assert_array_equal(rebased[f"{m}.weight"], patched[f"{m}.weight"])
    np.testing.assert_array_equal(
        rebased["embeddings.word_embeddings.weight"], t["embeddings.word_embeddings.weight"]
    )
    assert git("status", "--porcelain", cwd=repo).stdout == ""
    assert upstream != (repo / "m.safetensors").read_bytes()


def test_rebase_over_an_upstream_change_of_a_patched_parameter_stops(
    repo: Path, tmp_path: Path
) -> None:
    """The patch is a value, not a re-applied operation: when upstream changed the same
    parameter, rebase reports a conflict instead of silently dropping either change."""
    t = model()
    commit_model(repo, t, "base")
    git("switch", "-qc", "lora", cwd=repo)
    peft_lora(tmp_path / "adapter")
    theta(
        "add",
        "m.safetensors",
        "--update-type",
        "low-rank",
        "--update-path",
        str(tmp_path / "adapter" / "adapter_model.safetensors"),
        cwd=repo,
    )
    git("commit", "-qm", "lora", cwd=repo)
    git("switch", "-q", "main", cwd=repo)
    t[f"{ATTN[0]}.weight"] *= 2
    commit_model(repo, t, "upstream changes a patched matrix")
    git("switch", "-q", "lora", cwd=repo)
    assert git("rebase", "main", cwd=repo, check=False).returncode != 0
    git("rebase", "--abort", cwd=repo)


def _state(repo: Path) -> tuple[bytes, str, set[str]]:
    return (
        (repo / "m.safetensors").read_bytes(),
        git("ls-files", "--stage", cwd=repo).stdout,
        store_objects(repo),
    )


def test_bad_update_files_change_nothing(repo: Path, tmp_path: Path) -> None:
    t = model()
    commit_model(repo, t, "base")
    q = "encoder.layer.0.attention.self.query.weight"
    a, b = np.ones((4, 32), np.float32), np.ones((32, 4), np.float32)
    cases = {
        "missing-b": ({f"{q}.A": a}, "low-rank", "no matching B factor"),
        "wrong-shape": (
            {f"{q}.A": a, f"{q}.B": np.ones((31, 4), np.float32)},
            "low-rank",
            "factors must be A [4, 32] and B [32, 4]",
        ),
        "no-such-param": (
            {
                "base_model.model.decoder.q.lora_A.weight": a,
                "base_model.model.decoder.q.lora_B.weight": b,
            },
            "low-rank",
            "names no parameter",
        ),
        "stranger": (
            {f"{q}.A": a, f"{q}.B": b, "bogus": a},
            "low-rank",
            "match no parameter: bogus",
        ),
        "ia3-length": (
            {f"{q}.ia3": np.ones(7, np.float32)},
            "ia3",
            "scales neither the rows nor the columns",
        ),
        "ia3-int": ({f"{q}.ia3": np.ones(32, np.int32)}, "ia3", "must be a float vector"),
    }
    # a dirty file on disk must stay as it is too
    t["pooler.dense.weight"] += 1
    save_file(t, str(repo / "m.safetensors"))
    before = _state(repo)
    for name, (tensors, kind, message) in cases.items():
        path = tmp_path / f"{name}.safetensors"
        save_file(tensors, str(path))
        out = theta(
            "add",
            "m.safetensors",
            "--update-type",
            kind,
            "--update-path",
            str(path),
            cwd=repo,
            check=False,
        )
        assert out.returncode == 1, name
        assert message in out.stderr, (name, out.stderr)
        assert out.stderr.startswith("git-theta: error: "), name
        assert _state(repo) == before, name


def test_add_help_documents_each_flag(repo: Path) -> None:
    out = theta("add", "--help", cwd=repo).stdout
    for flag in (
        "--update-type",
        "--update-path",
        "low-rank",
        "ia3",
        "adapter_config.json",
        "<param>.A",
    ):
        assert flag in out


def test_add_refuses_untracked_files(repo: Path, tmp_path: Path) -> None:
    shutil.copyfile(Path(__file__), repo / "x.py")
    save_file({"x.A": np.ones((1, 1), np.float32)}, str(tmp_path / "u.safetensors"))
    out = theta(
        "add",
        "x.py",
        "--update-type",
        "ia3",
        "--update-path",
        str(tmp_path / "u.safetensors"),
        cwd=repo,
        check=False,
    )
    assert out.returncode == 1
    assert "is not tracked by git-theta" in out.stderr


def test_patches_stack_on_a_low_rank_record_and_respect_the_cap(repo: Path, tmp_path: Path) -> None:
    git("config", "theta.chain.max", "2", cwd=repo)
    t = model()
    commit_model(repo, t, "base")
    peft_lora(tmp_path / "adapter")
    update = str(tmp_path / "adapter" / "adapter_model.safetensors")
    theta("add", "m.safetensors", "--update-type", "low-rank", "--update-path", update, cwd=repo)
    git("commit", "-qm", "lora", cwd=repo)
    q = f"{ATTN[0]}.weight"
    # a later edit of a patched parameter is stored against the low-rank record
    current = load_file(str(repo / "m.safetensors"))
    current[q][0, :3] += 1.0
    after_edit = commit_model(repo, current, "edit")
    rec = records(repo)[q]
    assert (rec["type"], rec["base"]["type"], depth(rec)) == ("sparse", "low-rank", 2)
    # a second side-loaded patch would be 3 deep: its base becomes a dense keyframe
    theta("add", "m.safetensors", "--update-type", "low-rank", "--update-path", update, cwd=repo)
    git("commit", "-qm", "lora again", cwd=repo)
    rec = records(repo)[q]
    assert (rec["type"], rec["base"]["type"], depth(rec)) == ("low-rank", "dense", 1)
    twice = (repo / "m.safetensors").read_bytes()
    assert checkout_bytes(repo, "main~1") == after_edit
    assert checkout_bytes(repo, "main") == twice


def test_low_rank_on_bf16_weights_and_cherry_pick(repo: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    t = {n: torch.randn(32, 32).to(torch.bfloat16) for n in (f"{m}.weight" for m in ATTN)}
    torch_save_file(t, str(repo / "m.safetensors"))
    git("add", "m.safetensors", cwd=repo)
    git("commit", "-qm", "bf16 base", cwd=repo)
    git("switch", "-qc", "lora", cwd=repo)
    q = f"{ATTN[0]}.weight"
    a, b = torch.randn(2, 32), torch.randn(32, 2)
    torch_save_file(
        {f"{q}.A": a, f"{q}.B": b, f"{q}.scale": torch.tensor([0.5])},
        str(tmp_path / "u.safetensors"),
    )
    theta(
        "add",
        "m.safetensors",
        "--update-type",
        "low-rank",
        "--update-path",
        str(tmp_path / "u.safetensors"),
        cwd=repo,
    )
    git("commit", "-qm", "lora", cwd=repo)
    written = (repo / "m.safetensors").read_bytes()
    from safetensors.torch import load_file as torch_load

    got = torch_load(str(repo / "m.safetensors"))[q]
    want = (t[q].double() + 0.5 * (b.double() @ a.double())).float().to(torch.bfloat16)
    assert got.dtype == torch.bfloat16
    assert (got.float() - want.float()).abs().max().item() <= 0.01 * want.float().abs().max().item()
    assert records(repo)[q]["scale"] == 0.5
    git("switch", "-q", "main", cwd=repo)
    git("switch", "-qc", "other", cwd=repo)
    git("cherry-pick", "lora", cwd=repo)
    assert (repo / "m.safetensors").read_bytes() == written
    assert checkout_bytes(repo, "other") == written
