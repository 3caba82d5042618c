"""gc and fsck through real git commands."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from tests.conftest import git, store_objects, theta


def tensors(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    # 16 KB each: above the sizes stored whole or kept out of the raw-value map
    return {f"layer{i}.weight": rng.standard_normal((64, 64)).astype(np.float32) for i in range(4)}


def oid_of(repo: Path, spec: str, name: str) -> str:
    for line in git("cat-file", "-p", spec, cwd=repo).stdout.splitlines()[3:]:
        e = json.loads(line)
        if e["name"] == name:
            return str(e["record"]["oid"])
    raise KeyError(name)


def object_path(repo: Path, oid: str) -> Path:
    return repo / ".git/theta/objects" / oid[:2] / oid[2:4] / oid


def test_fsck_reports_corrupt_and_missing_objects_by_file_and_parameter(repo: Path) -> None:
    t = tensors()
    save_file(t, str(repo / "m.safetensors"))
    git("add", "m.safetensors", cwd=repo)
    git("commit", "-qm", "v0", cwd=repo)
    ok = theta("fsck", cwd=repo)
    assert ok.stdout.splitlines()[-1] == "checked 5 objects, 1 manifests, 4 values: ok"

    corrupt = oid_of(repo, "HEAD:m.safetensors", "layer2.weight")
    p = object_path(repo, corrupt)
    os.chmod(p, 0o644)
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x01
    p.write_bytes(bytes(data))
    missing = oid_of(repo, "HEAD:m.safetensors", "layer3.weight")
    object_path(repo, missing).unlink()

    bad = theta("fsck", cwd=repo, check=False)
    assert bad.returncode == 1
    lines = bad.stdout.splitlines()
    blob = git("rev-parse", "HEAD:m.safetensors", cwd=repo).stdout.strip()[:10]
    assert (
        f"m.safetensors (blob {blob}): parameter layer2.weight: object {corrupt[:12]}: "
        "corrupt: content hashes to"
    ) in lines[0]
    assert lines[1] == (
        f"m.safetensors (blob {blob}): parameter layer3.weight: object {missing[:12]}: missing"
    )
    assert lines[-1] == "checked 4 objects, 1 manifests, 2 values: 2 problems"


def test_fsck_finds_a_value_that_rebuilds_wrong(repo: Path) -> None:
    """An object that is sound on its own but holds another value than the manifest says."""
    t = tensors()
    save_file(t, str(repo / "m.safetensors"))
    git("add", "m.safetensors", cwd=repo)
    git("commit", "-qm", "v0", cwd=repo)
    text = git("cat-file", "-p", "HEAD:m.safetensors", cwd=repo).stdout
    a = oid_of(repo, "HEAD:m.safetensors", "layer0.weight")
    b = oid_of(repo, "HEAD:m.safetensors", "layer1.weight")
    swapped = text.replace(a, "X").replace(b, a).replace("X", b)
    blob = git("hash-object", "-w", "--stdin", cwd=repo, input=swapped.encode()).stdout.strip()
    git("update-index", "--cacheinfo", f"100644,{blob},m.safetensors", cwd=repo)
    bad = theta("fsck", cwd=repo, check=False)
    assert bad.returncode == 1
    problems = bad.stdout.splitlines()[:-1]
    assert problems == [
        f"m.safetensors (blob {blob[:10]}): parameter layer{i}.weight: "
        "rebuilds to a value whose hash differs from the manifest"
        for i in (0, 1)
    ]


def test_gc_keeps_stash_and_index_and_drops_what_an_amend_left_behind(repo: Path) -> None:
    t = tensors()
    save_file(t, str(repo / "m.safetensors"))
    git("add", "m.safetensors", cwd=repo)
    git("commit", "-qm", "v0", cwd=repo)
    # v1 sets layer1 to X; amending it to Y leaves X only in the reflog
    t["layer1.weight"] = t["layer1.weight"] + 1
    save_file(t, str(repo / "m.safetensors"))
    git("commit", "-qam", "v1", cwd=repo)
    dropped = oid_of(repo, "HEAD:m.safetensors", "layer1.weight")
    t["layer1.weight"] = t["layer1.weight"] + 1
    save_file(t, str(repo / "m.safetensors"))
    git("commit", "-q", "--amend", "-am", "v1 amended", cwd=repo)
    # a stash holds layer2 = S; the index holds layer3 = I
    s = dict(t, **{"layer2.weight": t["layer2.weight"] * 3})
    save_file(s, str(repo / "m.safetensors"))
    git("stash", "-q", cwd=repo)
    stashed = oid_of(repo, "stash@{0}:m.safetensors", "layer2.weight")
    i = dict(t, **{"layer3.weight": t["layer3.weight"] * 5})
    save_file(i, str(repo / "m.safetensors"))
    git("add", "m.safetensors", cwd=repo)
    indexed = oid_of(repo, ":m.safetensors", "layer3.weight")
    # a value only `git diff` of the working tree ever saw: no manifest needs it
    w = dict(i, **{"layer0.weight": t["layer0.weight"] * 7})
    save_file(w, str(repo / "m.safetensors"))
    git("diff", "--quiet", cwd=repo, check=False)
    everything = store_objects(repo)

    young = theta("gc", cwd=repo).stdout.splitlines()
    assert young[1] == "kept 1 unreferenced objects younger than an hour (use --now)"
    assert store_objects(repo) == everything

    dry = theta("gc", "--now", "--dry-run", cwd=repo).stdout
    assert "would remove 1 objects" in dry
    assert store_objects(repo) == everything
    theta("gc", "--now", cwd=repo)
    kept = store_objects(repo)
    assert {dropped, stashed, indexed} <= kept
    assert len(everything - kept) == 1  # the working-tree-only value

    size = object_path(repo, dropped).stat().st_size
    git("reflog", "expire", "--expire=now", "--all", cwd=repo)
    out = theta("gc", "--now", cwd=repo).stdout.splitlines()[0]
    assert out.endswith(f"removed 1 objects ({size / 1000:.1f} KB)")
    after = store_objects(repo)
    assert after == kept - {dropped}
    assert theta("fsck", cwd=repo).stdout.endswith(": ok\n")
    # what the stash and the index need still checks out
    git("checkout", "--", "m.safetensors", cwd=repo)
    # the merge driver applies the stash's layer2 on top of the indexed layer3
    git("stash", "pop", "-q", cwd=repo)
    from safetensors.numpy import load_file

    popped = load_file(str(repo / "m.safetensors"))
    np.testing.assert_array_equal(popped["layer2.weight"], s["layer2.weight"])
    np.testing.assert_array_equal(popped["layer3.weight"], i["layer3.weight"])


def test_gc_removes_stale_temp_files_and_prunes_the_rawmap(repo: Path) -> None:
    t = tensors()
    save_file(t, str(repo / "m.safetensors"))
    git("add", "m.safetensors", cwd=repo)
    git("commit", "-qm", "v0", cwd=repo)
    # fresh random values: no patch against the old ones is smaller, so a dense object
    # (with its raw-map line) is stored
    t["layer0.weight"] = tensors(seed=7)["layer0.weight"]
    save_file(t, str(repo / "m.safetensors"))
    git("commit", "-qam", "v1", cwd=repo)
    (line,) = [
        x
        for x in git("cat-file", "-p", "HEAD:m.safetensors", cwd=repo).stdout.splitlines()
        if x.startswith('{"name":"layer0.weight"')
    ]
    assert json.loads(line)["record"]["type"] == "dense"
    needed = oid_of(repo, "HEAD~1:m.safetensors", "layer0.weight")
    gone = oid_of(repo, "HEAD:m.safetensors", "layer0.weight")
    git("reset", "-q", "--hard", "HEAD~1", cwd=repo)
    # ORIG_HEAD (set by reset) keeps v1 alive, as do the reflogs: drop both
    assert theta("gc", "--now", "--dry-run", cwd=repo).stdout.endswith(
        "would remove 0 objects (0 B)\n"
    )
    git("update-ref", "-d", "ORIG_HEAD", cwd=repo)
    git("reflog", "expire", "--expire=now", "--all", cwd=repo)
    theta_tmp = repo / ".git/theta/tmp"
    stale, fresh = theta_tmp / "obj-stale", theta_tmp / "obj-fresh"
    stale.write_bytes(b"x" * 100)
    fresh.write_bytes(b"y")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    rawmap_before = sum(
        len(p.read_text().splitlines())
        for p in (repo / ".git/theta/rawmap").rglob("*")
        if p.is_file()
    )
    out = theta("gc", "--now", cwd=repo).stdout.splitlines()
    assert out[1] == "removed 1 stale temporary files (100 B) and 1 raw-map entries"
    assert not stale.exists() and fresh.exists()
    rawmap_after = sum(
        len(p.read_text().splitlines())
        for p in (repo / ".git/theta/rawmap").rglob("*")
        if p.is_file()
    )
    assert rawmap_after == rawmap_before - 1
    assert needed in store_objects(repo) and gone not in store_objects(repo)


def test_gc_and_fsck_follow_nested_chain_bases(repo: Path) -> None:
    """A value stored as a patch against a base keeps the base alive once nothing else
    names it, and fsck reports the base missing by file and parameter."""
    from git_theta import codec
    from git_theta.store import Store

    save_file(tensors(), str(repo / "m.safetensors"))
    git("add", "m.safetensors", cwd=repo)
    git("commit", "-qm", "v0", cwd=repo)
    base = oid_of(repo, "HEAD:m.safetensors", "layer1.weight")
    v0_blob = git("rev-parse", "HEAD:m.safetensors", cwd=repo).stdout.strip()
    # a patch record (as an incremental update type writes it), its base nested by content
    store = Store(repo / ".git/theta")
    indices = store.put(codec.encode(b"\x00" * 8, 8)).oid
    values = store.put(codec.encode(b"\x01" * 4, 4)).oid
    lines = git("cat-file", "-p", "HEAD:m.safetensors", cwd=repo).stdout.splitlines()
    out = []
    for line in lines:
        if line.startswith('{"name":"layer1.weight"'):
            e = json.loads(line)
            e["record"] = {
                "type": "sparse",
                "indices_oid": indices,
                "values_oid": values,
                "base": e["record"],
            }
            line = json.dumps(e, separators=(",", ":"), sort_keys=False)
        out.append(line)
    blob = git(
        "hash-object", "-w", "--stdin", cwd=repo, input=("\n".join(out) + "\n").encode()
    ).stdout.strip()
    git("update-index", "--cacheinfo", f"100644,{blob},m.safetensors", cwd=repo)
    # history now holds only the patched manifest: v0 is gone from every ref and reflog
    git("checkout", "-q", "--orphan", "patched", cwd=repo)
    git("commit", "-qm", "patched only", cwd=repo)
    git("branch", "-D", "main", cwd=repo)
    git("reflog", "expire", "--expire=now", "--all", cwd=repo)
    reachable = git("rev-list", "--objects", "--all", "--reflog", "--indexed-objects", cwd=repo)
    assert v0_blob not in reachable.stdout  # only the nested record names `base` now
    before = store_objects(repo)
    theta("gc", "--now", cwd=repo)
    assert store_objects(repo) == before  # every object is still needed, the base included
    assert {base, indices, values} <= store_objects(repo)
    assert theta("fsck", "--no-values", cwd=repo).stdout.endswith(": ok\n")

    object_path(repo, base).unlink()
    bad = theta("fsck", "--no-values", cwd=repo, check=False)
    assert bad.returncode == 1
    assert bad.stdout.splitlines()[0] == (
        f"m.safetensors (blob {blob[:10]}): parameter layer1.weight: object {base[:12]}: missing"
    )


def test_gc_keeps_what_another_worktrees_index_needs(repo: Path) -> None:
    t = tensors()
    save_file(t, str(repo / "m.safetensors"))
    git("add", "m.safetensors", cwd=repo)
    git("commit", "-qm", "v0", cwd=repo)
    other = repo.parent / "other"
    git("worktree", "add", "-q", str(other), "-b", "other", cwd=repo)
    save_file(dict(t, **{"layer2.weight": t["layer2.weight"] * 3}), str(other / "m.safetensors"))
    git("add", "m.safetensors", cwd=other)
    staged = oid_of(other, ":m.safetensors", "layer2.weight")
    theta("gc", "--now", cwd=repo)
    assert staged in store_objects(repo)
    assert theta("fsck", cwd=other).stdout.endswith(": ok\n")


def test_reachability_api_for_push(repo: Path) -> None:
    """The walk the transfer code reuses: manifests in a range of commits."""
    from git_theta import reachability

    t = tensors()
    save_file(t, str(repo / "m.safetensors"))
    git("add", "m.safetensors", cwd=repo)
    git("commit", "-qm", "v0", cwd=repo)
    git("tag", "v0", cwd=repo)
    save_file(dict(t, **{"layer0.weight": t["layer0.weight"] * 2}), str(repo / "m.safetensors"))
    git("commit", "-qam", "v1", cwd=repo)
    blob0 = git("rev-parse", "v0:m.safetensors", cwd=repo).stdout.strip()
    blob1 = git("rev-parse", "HEAD:m.safetensors", cwd=repo).stdout.strip()
    everything = list(reachability.manifest_blobs(["HEAD"], cwd=repo))
    assert sorted(f.blob for f in everything) == sorted([blob0, blob1])
    assert {f.path for f in everything} == {"m.safetensors"}
    (new,) = reachability.manifest_blobs(["HEAD", "^v0"], cwd=repo)
    assert new.blob == blob1 and new.manifest is not None
    head = git("rev-parse", "HEAD", cwd=repo).stdout.strip()
    v0 = git("rev-parse", "v0", cwd=repo).stdout.strip()
    found = list(reachability.manifests_in_commits([head, v0], cwd=repo))
    assert [(c, p) for c, p, _ in found] == [(head, "m.safetensors"), (v0, "m.safetensors")]
    assert oid_of(repo, "HEAD:m.safetensors", "layer0.weight") in found[0][2].oids()


def test_gc_keeps_the_base_of_a_real_patch_chain_after_history_is_squashed(repo: Path) -> None:
    """clean stores `layer3 * 2` as a patch on the old value; squash the history so only
    the patched manifest remains, and gc must still keep the base it is built on."""
    from safetensors.numpy import load_file

    t = tensors()
    save_file(t, str(repo / "m.safetensors"))
    git("add", "m.safetensors", cwd=repo)
    git("commit", "-qm", "v0", cwd=repo)
    base = oid_of(repo, "HEAD:m.safetensors", "layer3.weight")
    t["layer3.weight"] = t["layer3.weight"] * 2
    save_file(t, str(repo / "m.safetensors"))
    git("commit", "-qam", "v1", cwd=repo)
    entries = {
        e["name"]: e
        for e in map(
            json.loads,
            git("cat-file", "-p", "HEAD:m.safetensors", cwd=repo).stdout.splitlines()[3:],
        )
    }
    patch = entries["layer3.weight"]["record"]
    assert patch["type"] != "dense" and patch["base"] == {
        "type": "dense",
        "oid": base,
        "size": object_path(repo, base).stat().st_size,
    }
    git("checkout", "-q", "--orphan", "squashed", cwd=repo)
    git("commit", "-qm", "v1 alone", cwd=repo)
    git("branch", "-D", "main", cwd=repo)
    git("reflog", "expire", "--expire=now", "--all", cwd=repo)
    theta("gc", "--now", cwd=repo)
    assert base in store_objects(repo)
    assert theta("fsck", cwd=repo).stdout.endswith(": ok\n")
    (repo / "m.safetensors").unlink()
    git("checkout", "--", "m.safetensors", cwd=repo)
    np.testing.assert_array_equal(
        load_file(str(repo / "m.safetensors"))["layer3.weight"], t["layer3.weight"]
    )
