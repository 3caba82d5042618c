"""diff / log / show / ls-files / status through real git commands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from git_theta import plugins
from tests.conftest import git, store_objects, theta


def fmt(x: float) -> str:
    return f"{x:.4g}"


def base_tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    t = {f"layer{i}.weight": rng.standard_normal((64, 32)).astype(np.float32) for i in range(4)}
    t["bias"] = np.zeros(32, np.float32)
    return t


def figures_line(name: str, old: np.ndarray, new: np.ndarray) -> str:
    """The line the diff must print for `name`, with figures computed here by numpy."""
    d = new.astype(np.float64) - old.astype(np.float64)
    l2 = float(np.linalg.norm(d))
    rel = l2 / float(np.linalg.norm(old.astype(np.float64)))
    changed = int(np.count_nonzero(d))
    shape = ",".join(map(str, new.shape))
    return (
        f"  M {name}  F32 [{shape}]  |d|={fmt(l2)}  rel={fmt(rel)}  "
        f"max|d|={fmt(float(np.abs(d).max()))}  changed={100 * changed / d.size:.2f}% "
        f"({changed}/{d.size})"
    )


@pytest.fixture
def two_versions(repo: Path) -> tuple[Path, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """v0 committed; v1 (layer1 rows 0-7 + 0.25*noise, bias removed, new.bias added) in the
    working tree, not added."""
    v0 = base_tensors()
    save_file(v0, str(repo / "m.safetensors"))
    git("add", "m.safetensors", cwd=repo)
    git("commit", "-qm", "v0", cwd=repo)
    v1 = {k: v.copy() for k, v in v0.items() if k != "bias"}
    rng = np.random.default_rng(1)
    v1["layer1.weight"][:8] += 0.25 * rng.standard_normal((8, 32)).astype(np.float32)
    v1["new.bias"] = np.ones(8, np.float32)
    save_file(v1, str(repo / "m.safetensors"))
    return repo, v0, v1


def test_git_diff_prints_figures_in_all_four_commands(two_versions) -> None:
    repo, v0, v1 = two_versions
    expected = figures_line("layer1.weight", v0["layer1.weight"], v1["layer1.weight"])
    header = "theta diff m.safetensors: 1 changed, 1 added, 1 removed, 3 unchanged"
    worktree = git("diff", cwd=repo).stdout
    assert worktree.splitlines()[:5] == [
        header,
        "  D bias  F32 [32]",
        expected,
        "  A new.bias  F32 [8]",
        worktree.splitlines()[4],
    ]
    assert worktree.splitlines()[4].startswith("  total: 3 of 6 parameters differ; 256 of 2048")
    assert theta("diff", cwd=repo).stdout == worktree
    git("add", "m.safetensors", cwd=repo)
    assert git("diff", "--cached", cwd=repo).stdout == worktree
    assert theta("diff", "--cached", cwd=repo).stdout == worktree
    assert theta("diff", "HEAD", cwd=repo).stdout == worktree
    git("commit", "-qm", "v1", cwd=repo)
    show = git("show", "--ext-diff", "--format=%s", cwd=repo).stdout
    assert expected in show.splitlines()
    log = git("log", "-p", "--ext-diff", "-1", "--format=%s", cwd=repo).stdout
    assert log == show
    # without --ext-diff, git log -p / git show use the textconv: one line per parameter
    plain = git("show", "--format=%s", cwd=repo).stdout.splitlines()
    assert any(line.startswith("-bias  F32 [32]  ") for line in plain)
    assert any(line.startswith("-layer1.weight  F32 [64,32]  ") for line in plain)
    assert any(line.startswith("+layer1.weight  F32 [64,32]  ") for line in plain)
    assert any(line.startswith("+new.bias  F32 [8]  ") for line in plain)
    assert not any(line.startswith(("+layer0", "-layer0")) for line in plain)
    # with a real smudge (as without /proc), git hands over whole checkpoints: same output
    smudged = {"GIT_THETA_DIFF_SMUDGE": "1"}
    assert git("show", "--ext-diff", "--format=%s", cwd=repo, env=smudged).stdout == show
    assert git("show", "--format=%s", cwd=repo, env=smudged).stdout.splitlines() == plain


def test_git_diff_of_added_and_deleted_checkpoints(repo: Path) -> None:
    save_file({"w": np.ones((2, 3), np.float32)}, str(repo / "a.safetensors"))
    git("add", "a.safetensors", cwd=repo)
    assert git("diff", "--cached", cwd=repo).stdout == (
        "theta diff a.safetensors (new file): 0 changed, 1 added, 0 removed, 0 unchanged\n"
        "  A w  F32 [2,3]\n"
        "  total: 1 of 1 parameters differ; 0 of 0 compared elements changed; |d|=0\n"
    )
    git("commit", "-qm", "a", cwd=repo)
    git("rm", "-q", "a.safetensors", cwd=repo)
    out = git("diff", "--cached", cwd=repo).stdout.splitlines()
    assert out[:2] == [
        "theta diff a.safetensors (deleted): 0 changed, 0 added, 1 removed, 0 unchanged",
        "  D w  F32 [2,3]",
    ]


def test_theta_diff_json_revisions_patterns_and_dtype_change(two_versions) -> None:
    repo, v0, v1 = two_versions
    git("commit", "-qam", "v1", cwd=repo)
    v2 = {k: v.copy() for k, v in v1.items()}
    v2["layer2.weight"] = v1["layer2.weight"].astype(np.float16)
    v2["layer3.weight"] = v1["layer3.weight"][:16]
    save_file(v2, str(repo / "m.safetensors"))
    git("commit", "-qam", "v2", cwd=repo)

    out = json.loads(theta("diff", "HEAD~2", "HEAD", "--json", cwd=repo).stdout)
    assert json.loads(theta("diff", "HEAD~2..HEAD", "--json", cwd=repo).stdout) == out
    (f,) = out["files"]
    by = {p["name"]: p for p in f["params"]}
    assert sorted(by) == ["bias", "layer1.weight", "layer2.weight", "layer3.weight", "new.bias"]
    assert f["totals"]["unchanged"] == 1
    p = by["layer1.weight"]
    d = v1["layer1.weight"].astype(np.float64) - v0["layer1.weight"].astype(np.float64)
    assert p["l2"] == pytest.approx(np.linalg.norm(d), rel=1e-12)
    assert p["max_abs"] == pytest.approx(np.abs(d).max(), rel=1e-12)
    assert p["changed"] == np.count_nonzero(d) == 256
    q = by["layer2.weight"]
    assert q["dtype_changed"] and q["old"]["dtype"] == "F32" and q["new"]["dtype"] == "F16"
    d2 = v2["layer2.weight"].astype(np.float64) - v0["layer2.weight"].astype(np.float64)
    assert q["l2"] == pytest.approx(np.linalg.norm(d2), rel=1e-12)
    assert q["changed"] == np.count_nonzero(d2)
    r = by["layer3.weight"]
    assert r["shape_changed"] and r["new"]["shape"] == [16, 32] and "l2" not in r

    only = json.loads(
        theta("diff", "HEAD~2", "HEAD", "--json", "--params", "layer[12]*", cwd=repo).stdout
    )
    assert [p["name"] for p in only["files"][0]["params"]] == ["layer1.weight", "layer2.weight"]
    # one revision: REV vs the working tree (clean here); paths after --
    assert theta("diff", "HEAD", cwd=repo).stdout == ""
    assert theta("diff", "HEAD~1", "--", "other.safetensors", cwd=repo).stdout == ""
    one = theta("diff", "HEAD~1", "--", "m.safetensors", cwd=repo).stdout
    assert theta("diff", "HEAD~1", "m.safetensors", cwd=repo).stdout == one
    assert theta("diff", "HEAD~1", "nothing.safetensors", cwd=repo).stdout == ""
    assert one.startswith("theta diff m.safetensors: 2 changed, 0 added, 0 removed, 3 unchanged")


def test_diff_reports_missing_objects_per_parameter(two_versions) -> None:
    repo, _, _ = two_versions
    git("commit", "-qam", "v1", cwd=repo)
    entry = next(
        json.loads(line)
        for line in git("cat-file", "-p", "HEAD:m.safetensors", cwd=repo).stdout.splitlines()
        if line.startswith('{"name":"layer1.weight"')
    )
    oid = entry["record"]["oid"]
    (repo / ".git/theta/objects" / oid[:2] / oid[2:4] / oid).unlink()
    out = git("diff", "HEAD~1", "HEAD", cwd=repo).stdout.splitlines()
    assert out[0] == "theta diff m.safetensors: 1 changed, 1 added, 1 removed, 3 unchanged"
    line = next(x for x in out if x.startswith("  M layer1.weight"))
    assert f"object {oid[:12]} is missing from the local store" in line
    assert "git theta fetch" in line
    assert out[-1].endswith("1 could not be compared")


def test_status_lists_changes_and_writes_nothing(two_versions) -> None:
    repo, _, _ = two_versions
    save_file({"x": np.ones(3, np.float32)}, str(repo / "extra.safetensors"))
    before = store_objects(repo)
    out = theta("status", cwd=repo).stdout
    assert out.splitlines() == [
        "new:      extra.safetensors  (not added yet)",
        "modified: m.safetensors  (1 changed, 1 added, 1 removed of 5 parameters)",
        "0 tracked checkpoints unchanged",
    ]
    assert store_objects(repo) == before
    assert list((repo / ".git/theta/tmp").iterdir()) == []
    (repo / "m.safetensors").unlink()
    assert theta("status", cwd=repo).stdout.splitlines()[1] == "deleted:  m.safetensors"
    git("checkout", "--", "m.safetensors", cwd=repo)
    assert theta("status", "m.safetensors", cwd=repo).stdout == ("1 tracked checkpoint unchanged\n")


def stored_size(repo: Path, oid: str) -> int:
    return (repo / ".git/theta/objects" / oid[:2] / oid[2:4] / oid).stat().st_size


def manifest_entries(repo: Path, spec: str) -> dict[str, dict]:
    lines = git("cat-file", "-p", spec, cwd=repo).stdout.splitlines()[3:]
    return {e["name"]: e for e in map(json.loads, lines)}


def own_oids(record: dict) -> list[str]:
    return [v for k, v in record.items() if k == "oid" or k.endswith("_oid")]


def test_log_counts_storage_and_bytes(two_versions) -> None:
    repo, _, v1 = two_versions
    git("commit", "-qam", "v1", cwd=repo)
    v2 = {k: v.copy() for k, v in v1.items()}
    v2["layer3.weight"] *= 2
    save_file(v2, str(repo / "m.safetensors"))
    (repo / "notes.txt").write_text("not a checkpoint\n")
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "v2", cwd=repo)
    log = json.loads(theta("log", "--json", cwd=repo).stdout)
    assert [c["subject"] for c in log] == ["v2", "v1", "v0"]
    (v2_files,), (v1_files,), (v0_files,) = (c["files"] for c in log)
    assert (v2_files["changed"], v2_files["added"], v2_files["removed"]) == (1, 0, 0)
    rec = manifest_entries(repo, "HEAD:m.safetensors")["layer3.weight"]["record"]
    # clean chose a patch against the previous value (x2 is a cheap XOR delta): a chain
    assert rec["type"] != "dense" and rec["base"]["type"] == "dense"
    assert v2_files["stored_as"] == {rec["type"]: 1}
    # same names, shapes and dtypes: the skeleton is unchanged; the base is not new either
    new = own_oids(rec)
    assert v2_files["new_objects"] == len(new)
    assert v2_files["new_bytes"] == sum(stored_size(repo, o) for o in new)
    assert (v1_files["changed"], v1_files["added"], v1_files["removed"]) == (1, 1, 1)
    v1_entries = manifest_entries(repo, "HEAD~1:m.safetensors")
    kinds: dict[str, int] = {}
    for name in ("layer1.weight", "new.bias"):
        kind = v1_entries[name]["record"]["type"]
        kinds[kind] = kinds.get(kind, 0) + 1
    assert v1_files["stored_as"] == dict(sorted(kinds.items()))
    v1_new = own_oids(v1_entries["layer1.weight"]["record"]) + own_oids(
        v1_entries["new.bias"]["record"]
    )
    assert v1_files["new_objects"] == len(v1_new) + 1  # and the new skeleton
    assert (v0_files["added"], v0_files["new_objects"]) == (5, 6)
    text = theta("log", "-n", "1", cwd=repo).stdout.splitlines()
    size = sum(stored_size(repo, o) for o in new)
    shown = f"{size} B" if size < 1000 else f"{size / 1000:.1f} KB"
    assert text[1] == (
        f"    m.safetensors: 1 changed, 0 added, 0 removed; stored as {rec['type']} 1; "
        f"{shown} in {len(new)} new objects"
    )
    row = next(
        line
        for line in theta("show", "HEAD:m.safetensors", cwd=repo).stdout.splitlines()
        if line.split()[0] == "layer3.weight"
    )
    assert row.split()[3:6] == [rec["type"], "(chain", "1)"]


def test_ls_files_and_show(two_versions) -> None:
    repo, v0, _ = two_versions
    rows = json.loads(theta("ls-files", "--json", cwd=repo).stdout)
    assert [r["path"] for r in rows] == ["m.safetensors"]
    (r,) = rows
    assert r["params"] == 5 and r["missing"] == 0
    assert r["raw_bytes"] == sum(v.nbytes for v in v0.values())
    m = git("cat-file", "-p", ":m.safetensors", cwd=repo).stdout.splitlines()
    skeleton = m[2].split()[1]
    oids = [e["record"]["oid"] for e in map(json.loads, m[3:])] + [skeleton]
    assert r["stored_bytes"] == sum(stored_size(repo, o) for o in oids)
    show = theta("show", "HEAD:m.safetensors", cwd=repo).stdout.splitlines()
    assert show[0] == "HEAD:m.safetensors: safetensors, 5 parameters, 32.9 KB raw"
    assert [line.split()[:4] for line in show[1:]] == [
        ["bias", "F32", "[32]", "dense"],
        *[[f"layer{i}.weight", "F32", "[64,32]", "dense"] for i in range(4)],
    ]
    shown = json.loads(theta("show", "--json", ":m.safetensors", cwd=repo).stdout)
    sizes = {p["name"]: p["stored_bytes"] for p in shown["params"]}
    entries = manifest_entries(repo, ":m.safetensors")
    assert sizes == {n: stored_size(repo, e["record"]["oid"]) for n, e in entries.items()}
    bad = theta("show", "HEAD:.gitattributes", cwd=repo, check=False)
    assert bad.returncode == 1 and "is not a git-theta manifest" in bad.stderr


def test_log_of_a_merge_counts_only_objects_no_parent_had(two_versions) -> None:
    repo, _, v1 = two_versions
    git("commit", "-qam", "v1", cwd=repo)
    git("checkout", "-qb", "side", cwd=repo)
    v2 = dict(v1, **{"layer3.weight": v1["layer3.weight"] * 2})
    save_file(v2, str(repo / "m.safetensors"))
    git("commit", "-qam", "side", cwd=repo)
    git("checkout", "-q", "main", cwd=repo)
    (repo / "notes.txt").write_text("x\n")
    git("add", "notes.txt", cwd=repo)
    git("commit", "-qm", "notes", cwd=repo)
    git("merge", "-q", "--no-edit", "side", cwd=repo)
    merge, side = json.loads(theta("log", "-n", "2", "--json", cwd=repo).stdout)
    assert merge["subject"].startswith("Merge branch 'side'")
    (mf,) = merge["files"]
    assert (mf["changed"], mf["new_objects"], mf["new_bytes"]) == (1, 0, 0)
    (sf,) = side["files"]
    assert (sf["changed"], sf["new_objects"]) == (1, 1)


def test_index_stat_vouches_only_for_untouched_files(repo: Path) -> None:
    from git_theta.versions import IndexStat

    save_file(base_tensors(), str(repo / "m.safetensors"))
    git("add", "m.safetensors", cwd=repo)
    git("commit", "-qm", "v0", cwd=repo)
    assert IndexStat(repo, ["m.safetensors"]).clean("m.safetensors")
    save_file(base_tensors(), str(repo / "m.safetensors"))  # same bytes, new mtime
    assert not IndexStat(repo, ["m.safetensors"]).clean("m.safetensors")
    assert theta("status", cwd=repo).stdout == "1 tracked checkpoint unchanged\n"
    git("update-index", "--refresh", cwd=repo, check=False)
    assert IndexStat(repo, ["m.safetensors"]).clean("m.safetensors")


def test_a_tracked_file_that_is_no_checkpoint_does_not_stop_the_diff(repo: Path) -> None:
    """Raw text committed under a tracked pattern (e.g. before it was tracked)."""

    def commit(text: bytes, value: float, message: str) -> None:
        blob = git("hash-object", "-w", "--stdin", cwd=repo, input=text).stdout.strip()
        git("update-index", "--add", "--cacheinfo", f"100644,{blob},notes.bin", cwd=repo)
        save_file({"w": np.full(2, value, np.float32)}, str(repo / "a.safetensors"))
        git("add", "a.safetensors", cwd=repo)
        git("commit", "-qm", message, cwd=repo)

    commit(b"plain text\n", 1.0, "one")
    commit(b"changed text\n", 0.0, "two")
    out = git("diff", "HEAD~1", "HEAD", cwd=repo).stdout.splitlines()
    assert out[0] == "theta diff a.safetensors: 1 changed, 0 added, 0 removed, 0 unchanged"
    assert out[1].startswith("  M w  F32 [2]  |d|=1.414  rel=1  max|d|=1  changed=100.00% (2/2)")
    assert out[3].startswith(
        "theta diff notes.bin: cannot compare: notes.bin: is not a checkpoint in any installed"
    )
    shown = git("show", "--format=%s", cwd=repo).stdout
    assert "-plain text\n+changed text\n" in shown
    (repo / "notes.bin").write_bytes(b"changed text\n")  # the working tree, as committed
    status = theta("status", cwd=repo).stdout.splitlines()
    installed = ", ".join(plugins.available(plugins.CHECKPOINTS))
    assert status[0] == "unreadable: notes.bin  (notes.bin: is not a checkpoint in any " + (
        f"installed format; formats installed: {installed}; or untrack it with `git theta untrack`)"
    )
    assert theta("diff", cwd=repo).stdout.startswith("theta diff notes.bin: cannot compare: ")
