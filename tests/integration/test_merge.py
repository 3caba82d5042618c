"""`git merge`, rebase, cherry-pick and `git theta resolve` on checkpoints, through real git."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from git_theta.transfer import hooks
from tests.conftest import git, theta

F = "m.safetensors"


@pytest.fixture(autouse=True)
def no_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's terminal must not be used by these tests: they set their strategy."""
    monkeypatch.setenv("GIT_THETA_NO_TTY", "1")
    monkeypatch.delenv("GIT_THETA_MERGE_STRATEGY", raising=False)


def write(repo: Path, tensors: dict[str, np.ndarray], name: str = F) -> None:
    save_file({k: np.asarray(v) for k, v in tensors.items()}, str(repo / name))


def f32(*v: float) -> np.ndarray:
    return np.array(v, dtype=np.float32)


def commit(repo: Path, tensors: dict[str, np.ndarray], msg: str) -> None:
    write(repo, tensors)
    git("add", F, cwd=repo)
    git("commit", "-qm", msg, cwd=repo)


def three_way(
    repo: Path,
    base: dict[str, np.ndarray],
    ours: dict[str, np.ndarray],
    theirs: dict[str, np.ndarray],
) -> None:
    """main: base -> ours; branch `theirs`: base -> theirs; main checked out."""
    commit(repo, base, "base")
    git("switch", "-qc", "theirs", cwd=repo)
    commit(repo, theirs, "theirs")
    git("switch", "-q", "main", cwd=repo)
    commit(repo, ours, "ours")


def merge(repo: Path, *config: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    args = [a for c in config for a in ("-c", c)]
    return git(*args, "merge", "--no-edit", "theirs", cwd=repo, check=check)


def loaded(repo: Path, name: str = F) -> dict[str, list[float]]:
    return {k: v.tolist() for k, v in load_file(str(repo / name)).items()}


def clean_status(repo: Path) -> None:
    assert git("status", "--porcelain", cwd=repo).stdout == ""


BASE = {"a": f32(1, 1), "b": f32(10, 20)}


def test_one_sided_changes_merge_without_a_strategy(repo: Path) -> None:
    three_way(repo, BASE, {**BASE, "a": f32(2, 3)}, {**BASE, "b": f32(11, 21)})
    merge(repo)
    assert loaded(repo) == {"a": [2, 3], "b": [11, 21]}
    clean_status(repo)


def test_the_same_change_on_both_sides_is_no_conflict(repo: Path) -> None:
    same = {**BASE, "a": f32(5, 5)}
    three_way(repo, BASE, same, {**same, "b": f32(0, 0)})
    merge(repo)
    assert loaded(repo) == {"a": [5, 5], "b": [0, 0]}


# base a = [1, 1]; ours a = [2, 1]; theirs a = [1, 4]  (b untouched)
EXPECTED = {
    "take-ours": [2, 1],
    "take-theirs": [1, 4],
    "take-base": [1, 1],
    "average": [1.5, 2.5],
    "average weights=1,3": [1.25, 3.25],
    "task-arithmetic": [2, 4],
    "task-arithmetic scale=0.5": [1.5, 2.5],
    "ties density=1": [2, 4],
    "dare density=1": [2, 4],
}


@pytest.mark.parametrize("strategy", sorted(EXPECTED))
def test_each_strategy_through_git_config(repo: Path, strategy: str) -> None:
    three_way(repo, BASE, {**BASE, "a": f32(2, 1)}, {**BASE, "a": f32(1, 4)})
    proc = merge(repo, f"theta.merge.strategy={strategy}")
    assert loaded(repo) == {"a": EXPECTED[strategy], "b": [10, 20]}
    clean_status(repo)
    assert "merged 1 conflicting parameter" in proc.stderr
    assert len(git("log", "--format=%H", "-1", "--merges", cwd=repo).stdout.split()) == 1


def test_dare_through_git_is_reproducible(repo: Path) -> None:
    rng = np.random.default_rng(1)
    base = rng.standard_normal(256).astype(np.float32)
    ours, theirs = base + 1, base - 2
    three_way(repo, {"w": base}, {"w": ours}, {"w": theirs})
    merge(repo, "theta.merge.strategy=dare density=0.5 seed=3")
    first = load_file(str(repo / F))["w"]
    git("reset", "-q", "--hard", "HEAD~1", cwd=repo)
    merge(repo, "theta.merge.strategy=dare density=0.5 seed=3")
    np.testing.assert_array_equal(load_file(str(repo / F))["w"], first)
    # each element: base, +2, -4 or -2 (deltas +1 and -2, rescaled by 1/0.5)
    moved = np.round(first - base, 4)
    assert set(moved.tolist()) <= {0.0, 2.0, -4.0, -2.0}
    assert len(set(moved.tolist())) == 4


def test_arithmetic_keeps_the_dtype(repo: Path) -> None:
    import torch
    from safetensors.torch import load_file as tload
    from safetensors.torch import save_file as tsave

    def put(v: list[float], msg: str) -> None:
        tsave({"w": torch.tensor(v, dtype=torch.bfloat16)}, str(repo / F))
        git("add", F, cwd=repo)
        git("commit", "-qm", msg, cwd=repo)

    put([1.0, 1.0, 1.0], "base")
    git("switch", "-qc", "theirs", cwd=repo)
    put([1.0, 3.0, 1.0], "theirs")
    git("switch", "-q", "main", cwd=repo)
    put([2.0, 1.0, 1.0078125], "ours")
    merge(repo, "theta.merge.strategy=average")
    w = tload(str(repo / F))["w"]
    assert w.dtype == torch.bfloat16
    # (1.0078125 + 1) / 2 = 1.00390625 is not a bf16: rounds to nearest even, 1.0
    assert w.tolist() == [1.5, 2.0, 1.0]
    clean_status(repo)


def test_added_and_removed_parameters_follow_their_side(repo: Path) -> None:
    base = {"a": f32(1), "b": f32(2), "c": f32(3)}
    ours = {"a": f32(1), "b": f32(2), "c": f32(3), "new": np.arange(6, dtype=np.int64)}
    theirs = {"a": f32(1), "c": f32(30), "z": np.ones((2, 2), np.float16)}
    three_way(repo, base, ours, theirs)
    merge(repo)
    got = load_file(str(repo / F))
    assert sorted(got) == ["a", "c", "new", "z"]
    assert got["new"].dtype == np.int64 and got["new"].tolist() == list(range(6))
    assert got["z"].dtype == np.float16 and got["z"].tolist() == [[1, 1], [1, 1]]
    assert got["c"].tolist() == [30]
    clean_status(repo)
    # the merged manifest is what a fresh clean of the merged file gives
    (repo / F).unlink()
    git("checkout", "--", F, cwd=repo)
    clean_status(repo)


def test_shape_change_on_one_side_is_taken(repo: Path) -> None:
    three_way(repo, BASE, {**BASE, "b": f32(7, 7)}, {**BASE, "a": f32(1, 2, 3)})
    merge(repo)
    assert loaded(repo) == {"a": [1, 2, 3], "b": [7, 7]}
    clean_status(repo)


def test_changed_versus_removed_needs_a_side(repo: Path) -> None:
    three_way(repo, BASE, {"a": f32(1, 1)}, {**BASE, "b": f32(0, 0)})
    proc = merge(repo, "theta.merge.strategy=average", check=False)
    assert proc.returncode != 0
    assert "b was removed by ours, changed by theirs" in proc.stderr
    assert "take-ours or take-theirs" in proc.stderr
    git("merge", "--abort", cwd=repo)
    merge(repo, "theta.merge.strategy=take-theirs")
    assert loaded(repo) == {"a": [1, 1], "b": [0, 0]}
    git("reset", "-q", "--hard", "HEAD~1", cwd=repo)
    merge(repo, "theta.merge.strategy=take-ours")
    assert loaded(repo) == {"a": [1, 1]}
    clean_status(repo)


def test_rules_file_first_match_wins(repo: Path) -> None:
    (repo / ".thetamerge").write_text("# committed rules\nhead.* take-theirs\n* average\n")
    git("add", ".thetamerge", cwd=repo)
    base = {"head.w": f32(0, 0), "body.w": f32(0, 0)}
    three_way(
        repo,
        base,
        {"head.w": f32(1, 1), "body.w": f32(2, 2)},
        {"head.w": f32(3, 3), "body.w": f32(4, 4)},
    )
    merge(repo, "theta.merge.strategy=take-ours")  # the rules come before git config
    assert loaded(repo) == {"head.w": [3, 3], "body.w": [3, 3]}
    clean_status(repo)


def test_environment_variable_is_the_last_resort(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    three_way(repo, BASE, {**BASE, "a": f32(2, 1)}, {**BASE, "a": f32(1, 4)})
    monkeypatch.setenv("GIT_THETA_MERGE_STRATEGY", "task-arithmetic")
    merge(repo)
    assert loaded(repo)["a"] == [2, 4]


def test_no_terminal_and_no_rule_fails_with_the_fix(repo: Path) -> None:
    base = {"a": f32(1, 1), "b": f32(1, 1), "c": f32(0)}
    three_way(
        repo,
        base,
        {"a": f32(2, 2), "b": f32(3, 3), "c": f32(0)},
        {"a": f32(4, 4), "b": f32(5, 5), "c": f32(9)},
    )
    proc = subprocess.run(
        ["git", "merge", "--no-edit", "theirs"],
        cwd=repo,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "2 conflicting parameter(s): a, b" in proc.stderr
    assert f"git theta resolve {F} --strategy NAME" in proc.stderr
    assert f"CONFLICT (content): Merge conflict in {F}" in proc.stdout
    assert git("ls-files", "-u", cwd=repo).stdout.count(F) == 3
    # the working tree keeps our checkpoint, loadable
    assert loaded(repo) == {"a": [2, 2], "b": [3, 3], "c": [0]}

    out = theta("resolve", F, "--strategy", "average", "-o", "weights=3,1", cwd=repo)
    assert "merged 2 conflicting parameter(s)" in out.stdout
    assert loaded(repo) == {"a": [2.5, 2.5], "b": [3.5, 3.5], "c": [9]}
    assert git("ls-files", "-u", cwd=repo).stdout == ""
    git("commit", "-qm", "merged", cwd=repo)
    clean_status(repo)


def test_export_for_a_manual_merge(repo: Path, tmp_path: Path) -> None:
    three_way(repo, BASE, {**BASE, "a": f32(2, 1)}, {**BASE, "a": f32(1, 4)})
    merge(repo, check=False)
    out = tmp_path / "export"
    theta("resolve", F, "--export", str(out), cwd=repo)
    versions = {p.name: load_file(str(p))["a"].tolist() for p in sorted(out.iterdir())}
    assert versions == {
        "m.base.safetensors": [1, 1],
        "m.ours.safetensors": [2, 1],
        "m.theirs.safetensors": [1, 4],
    }
    # the user's own merge, then plain git concludes
    o, t = (load_file(str(out / f"m.{s}.safetensors")) for s in ("ours", "theirs"))
    write(repo, {"a": np.maximum(o["a"], t["a"]), "b": o["b"]})
    git("add", F, cwd=repo)
    git("commit", "-qm", "manual merge", cwd=repo)
    clean_status(repo)
    git("checkout", "-q", "HEAD~1", cwd=repo)
    git("checkout", "-q", "main", cwd=repo)
    assert loaded(repo) == {"a": [2, 4], "b": [10, 20]}


def test_rebase_and_cherry_pick_of_commits_touching_different_parameters(repo: Path) -> None:
    base = {"a": f32(0), "b": f32(0), "c": f32(0)}
    commit(repo, base, "base")
    git("switch", "-qc", "side", cwd=repo)
    commit(repo, {**base, "b": f32(2)}, "side b")
    commit(repo, {**base, "b": f32(2), "c": f32(3)}, "side c")
    git("switch", "-q", "main", cwd=repo)
    commit(repo, {**base, "a": f32(1)}, "main a")

    git("switch", "-qc", "picked", cwd=repo)
    git("cherry-pick", "side~1", cwd=repo)
    assert loaded(repo) == {"a": [1], "b": [2], "c": [0]}
    clean_status(repo)

    git("switch", "-q", "side", cwd=repo)
    git("rebase", "-q", "main", cwd=repo)
    assert loaded(repo) == {"a": [1], "b": [2], "c": [3]}
    clean_status(repo)
    subjects = git("log", "--format=%s", cwd=repo).stdout.split("\n")[:3]
    assert subjects == ["side c", "side b", "main a"]

    git("revert", "--no-edit", "HEAD~1", cwd=repo)  # revert "side b" under "side c"
    assert loaded(repo) == {"a": [1], "b": [0], "c": [3]}


def test_fisher_merge_with_fisher_added_on_both_sides(repo: Path) -> None:
    commit(repo, {"w": f32(0, 0, 0), "bias": f32(1)}, "base")
    git("switch", "-qc", "theirs", cwd=repo)
    write(repo, {"w": f32(4, 4, 4), "bias": f32(1)})
    save_file({"w": f32(3, 1, 0)}, str(repo / "fisher_theirs.st"))
    out = theta("add", F, "--fisher", "fisher_theirs.st", cwd=repo)
    assert "Fisher information for 1 parameter" in out.stdout
    # staged; the working tree file is not seen as modified (second column blank)
    status = git("status", "--porcelain", cwd=repo).stdout.splitlines()
    assert sorted(status) == ["?? fisher_theirs.st", f"M  {F}"]
    git("commit", "-qm", "theirs", cwd=repo)
    git("switch", "-q", "main", cwd=repo)
    write(repo, {"w": f32(2, 2, 2), "bias": f32(1)})
    save_file({"w": f32(1, 1, 0)}, str(repo / "fisher_ours.st"))
    theta("add", F, "--fisher", "fisher_ours.st", cwd=repo)
    git("commit", "-qm", "ours", cwd=repo)
    assert '"fisher":{' in git("show", f"HEAD:{F}", cwd=repo).stdout
    merge(repo, "theta.merge.strategy=fisher")
    # (1*2 + 3*4) / 4 = 3.5; (1*2 + 1*4) / 2 = 3; both Fishers 0 -> mean 3
    assert loaded(repo) == {"bias": [1], "w": [3.5, 3, 3]}


def test_fisher_merge_without_fisher_names_the_parameter(repo: Path) -> None:
    three_way(repo, BASE, {**BASE, "a": f32(2, 1)}, {**BASE, "a": f32(1, 4)})
    proc = merge(repo, "theta.merge.strategy=fisher", check=False)
    assert proc.returncode == 1
    assert "fisher merge of a: ours has no Fisher information" in proc.stderr


def test_install_registers_the_merge_driver(repo: Path) -> None:
    driver = git("config", "merge.theta.driver", cwd=repo).stdout.strip()
    assert driver == f"{hooks.hook_command(sys.executable)} merge-driver %O %A %B %P"
    assert " -P -m git_theta" in driver or sys.version_info < (3, 11)
    assert git("config", "merge.theta.name", cwd=repo).stdout.strip()


def test_fisher_file_must_match_the_checkpoint(repo: Path) -> None:
    commit(repo, BASE, "base")
    save_file({"nope": f32(1, 1)}, str(repo / "f1.st"))
    proc = theta("add", F, "--fisher", "f1.st", cwd=repo, check=False)
    assert proc.returncode == 1
    assert "tensor nope is not a parameter of m.safetensors" in proc.stderr
    save_file({"a": f32(1, 1, 1)}, str(repo / "f2.st"))
    proc = theta("add", F, "--fisher", "f2.st", cwd=repo, check=False)
    assert "tensor a has shape [3] but the parameter has [2]" in proc.stderr
    save_file({"a": f32(1, -1)}, str(repo / "f3.st"))
    proc = theta("add", F, "--fisher", "f3.st", cwd=repo, check=False)
    assert "negative or non-finite" in proc.stderr
    assert '"fisher"' not in git("show", f":{F}", cwd=repo).stdout


def test_resolve_refuses_a_file_that_is_not_conflicted(repo: Path) -> None:
    commit(repo, BASE, "base")
    proc = theta("resolve", F, "--strategy", "average", cwd=repo, check=False)
    assert proc.returncode == 1
    assert "m.safetensors is not in conflict" in proc.stderr


def test_the_driver_merges_one_parameter_at_a_time(repo: Path, tmp_path: Path) -> None:
    """Peak memory of the driver stays far below what three whole models would need."""
    n, size = 24, 1 << 20  # 24 parameters of 1M float32 (4 MB raw, 8 MB as float64)
    rng = np.random.default_rng(0)
    base = {f"p{i}": rng.standard_normal(size).astype(np.float32) for i in range(n)}
    three_way(
        repo,
        base,
        {k: v + 1 for k, v in base.items()},
        {k: v - 1 for k, v in base.items()},
    )
    sides = {}
    for label, rev in (("O", "main~1"), ("A", "main"), ("B", "theirs")):
        sides[label] = tmp_path / label
        sides[label].write_text(git("show", f"{rev}:{F}", cwd=repo).stdout)
    rss_file = tmp_path / "rss"
    # VmHWM: this process's own peak (ru_maxrss would start from pytest's size at the fork)
    code = (
        "from git_theta.cli import main\n"
        "try:\n"
        "    main()\n"
        "finally:\n"
        "    hwm = [x for x in open('/proc/self/status') if x.startswith('VmHWM')][0]\n"
        f"    open({str(rss_file)!r}, 'w').write(hwm.split()[1])\n"
    )
    args = ["merge-driver", str(sides["O"]), str(sides["A"]), str(sides["B"]), F]
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=repo,
        capture_output=True,
        text=True,
        env={**os.environ, "GIT_THETA_MERGE_STRATEGY": "average"},
    )
    assert proc.returncode == 0, proc.stderr
    peak_mb = int(rss_file.read_text()) / 1024
    # all three models as float64 would be 3 * 24 * 8 MB = 576 MB on their own
    assert peak_mb < 200, f"merge driver peaked at {peak_mb:.0f} MB"
    merged = manifest_values(repo, sides["A"].read_bytes())
    ours3, theirs3 = (base["p3"] + 1).astype(np.float64), (base["p3"] - 1).astype(np.float64)
    np.testing.assert_array_equal(merged["p3"], ((ours3 + theirs3) / 2).astype(np.float32))


def manifest_values(repo: Path, data: bytes) -> dict[str, np.ndarray]:
    from git_theta import manifest
    from git_theta.merge_driver import load_value
    from git_theta.store import Store

    store = Store(repo / ".git" / "theta")
    return {e.name: load_value(store, e, F) for e in manifest.parse(data).entries}


def test_file_added_on_both_branches(repo: Path) -> None:
    git("switch", "-qc", "theirs", cwd=repo)
    commit(repo, {"a": f32(1, 3), "only_theirs": f32(7)}, "theirs adds")
    git("switch", "-q", "main", cwd=repo)
    commit(repo, {"a": f32(3, 5), "only_ours": f32(9)}, "ours adds")
    proc = merge(repo, "theta.merge.strategy=task-arithmetic", check=False)
    assert "task-arithmetic needs the common ancestor of a" in proc.stderr
    git("merge", "--abort", cwd=repo)
    merge(repo, "theta.merge.strategy=average")
    assert loaded(repo) == {"a": [2, 4], "only_ours": [9], "only_theirs": [7]}
    clean_status(repo)


def test_resolve_without_strategy_uses_the_rules(repo: Path) -> None:
    three_way(repo, BASE, {**BASE, "a": f32(2, 1)}, {**BASE, "a": f32(1, 4)})
    assert merge(repo, check=False).returncode == 1
    proc = theta("resolve", F, cwd=repo, check=False)
    assert proc.returncode == 1 and "no merge strategy chosen for 1" in proc.stderr
    (repo / ".thetamerge").write_text("a take-theirs\n")
    theta("resolve", F, cwd=repo)
    assert loaded(repo) == {"a": [1, 4], "b": [10, 20]}
    git("commit", "-qm", "merged", cwd=repo)
    assert git("status", "--porcelain", cwd=repo).stdout == "?? .thetamerge\n"


def test_two_fine_tunes_of_minilm(repo: Path, minilm: Path) -> None:
    """Real weights: ours and theirs both retune layer 0; theirs also layer 5."""
    base = load_file(str(minilm))
    rng = np.random.default_rng(0)

    def tuned(prefixes: tuple[str, ...], scale: float) -> dict[str, np.ndarray]:
        out = dict(base)
        for k, v in base.items():
            if k.startswith(prefixes) and v.dtype == np.float32:
                noise = rng.standard_normal(v.shape).astype(np.float32)
                out[k] = (v + scale * noise).astype(np.float32)
        return out

    ours = tuned(("encoder.layer.0.",), 1e-3)
    theirs = tuned(("encoder.layer.0.", "encoder.layer.5."), 2e-3)
    three_way(repo, base, ours, theirs)
    merge(repo, "theta.merge.strategy=average")
    got = load_file(str(repo / F))
    assert sorted(got) == sorted(base)
    for k in base:
        if k.startswith("encoder.layer.0."):
            want = ((ours[k].astype(np.float64) + theirs[k]) / 2).astype(np.float32)
        elif k.startswith("encoder.layer.5."):
            want = theirs[k]
        else:
            want = base[k]
        np.testing.assert_array_equal(got[k], want, err_msg=k)
    clean_status(repo)
