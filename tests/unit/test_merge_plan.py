"""The three-way rules of the merge driver, the rules file, and safetensors header rebuilds."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load, save

from git_theta import codec, manifest
from git_theta.checkpoints.base import SkeletonPart, TensorPart, TensorSpec, decode_splice
from git_theta.checkpoints.safetensors_format import SafetensorsFormat
from git_theta.errors import MergeConflictError, MergeError
from git_theta.manifest import Entry, Manifest
from git_theta.merge_driver import Choice, merge, plan
from git_theta.merge_rules import Automatic, fallback_choice, parse_rules
from git_theta.store import Store
from git_theta.streams import ByteSource

SKEL = "0" * 64


def e(
    name: str, v: int, shape: tuple[int, ...] = (2,), dtype: str = "F32", **extra: object
) -> Entry:
    h = f"blake3:{v:064x}"
    return Entry(name, dtype, shape, h, {"type": "dense", "oid": f"{v:064x}", "size": 1}, extra)


def m(*entries: Entry, skel: str = SKEL) -> Manifest:
    return manifest.build("safetensors", skel, 10, entries)


def test_one_sided_changes_and_same_changes_need_no_decision() -> None:
    base = m(e("a", 1), e("b", 2), e("c", 3))
    ours = m(e("a", 10), e("b", 2), e("c", 30))
    theirs = m(e("a", 1), e("b", 20), e("c", 30))
    p = plan(base, ours, theirs)
    assert p.conflicts == ()
    assert {k: v.hash[-2:] for k, v in p.decided.items() if v} == {"a": "0a", "b": "14", "c": "1e"}


def test_additions_and_removals_follow_the_side_that_made_them() -> None:
    base = m(e("a", 1), e("b", 2), e("gone", 3))
    ours = m(e("a", 1), e("new_ours", 4), e("gone", 3))
    theirs = m(e("a", 1), e("b", 2), e("new_theirs", 5))
    p = plan(base, ours, theirs)
    assert p.conflicts == ()
    kept = sorted(k for k, v in p.decided.items() if v is not None)
    assert kept == ["a", "new_ours", "new_theirs"]


def test_dtype_or_shape_changes_count_as_changes() -> None:
    base = m(e("a", 1), e("b", 2))
    ours = m(e("a", 1, dtype="BF16"), e("b", 2))
    theirs = m(e("a", 1), e("b", 2, shape=(4,)))
    p = plan(base, ours, theirs)
    assert p.conflicts == ()
    assert p.decided["a"] is not None and p.decided["a"].dtype == "BF16"
    assert p.decided["b"] is not None and p.decided["b"].shape == (4,)


def test_true_conflicts() -> None:
    base = m(e("both", 1), e("rm_ours", 2), e("rm_theirs", 3))
    ours = m(e("both", 10), e("rm_theirs", 30), e("added", 7))
    theirs = m(e("both", 11), e("rm_ours", 20), e("added", 8))
    kinds = {c.name: c.kind for c in plan(base, ours, theirs).conflicts}
    assert kinds == {
        "added": "added differently on both sides",
        "both": "changed differently on both sides",
        "rm_ours": "removed by ours, changed by theirs",
        "rm_theirs": "changed by ours, removed by theirs",
    }


def test_extras_changed_on_one_side_follow_it() -> None:
    base = m(e("a", 1))
    theirs = m(e("a", 1, fisher={"type": "dense", "oid": "f" * 64, "size": 3}))
    p = plan(base, base, theirs)
    assert p.decided["a"] is not None and "fisher" in p.decided["a"].extra


def test_unresolved_conflicts_are_listed_with_the_fix(tmp_path: Path) -> None:
    base, ours, theirs = m(e("a", 1), e("b", 1)), m(e("a", 2), e("b", 2)), m(e("a", 3), e("b", 3))
    with pytest.raises(MergeConflictError) as info:
        merge(base, ours, theirs, Store(tmp_path), path="m.safetensors", choose=lambda cs: {})
    assert info.value.params == ["a", "b"]
    assert "git theta resolve m.safetensors --strategy NAME" in str(info.value)


def test_take_sides_resolve_removals_without_reading_values(tmp_path: Path) -> None:
    store = Store(tmp_path)
    _p, skel = _split(save({"a": np.zeros(2, np.float32), "b": np.zeros(2, np.float32)}))
    obj = store.put(codec.encode(skel, 1))
    base = m(e("a", 1), e("b", 1), skel=obj.oid)
    ours = m(e("a", 2), skel=obj.oid)
    theirs = m(e("a", 1), e("b", 3), skel=obj.oid)
    got = merge(
        base,
        ours,
        theirs,
        store,
        path="m.safetensors",
        choose=lambda cs: {c.name: Choice("take-ours") for c in cs},
    )
    assert [x.name for x in got.entries] == ["a"]
    # the skeleton was rebuilt without "b"
    segments, _ = decode_splice(codec.decode(store.read(got.skeleton_oid)))
    assert segments[1:] == ["a"]
    with pytest.raises(MergeError, match="take-ours or take-theirs"):
        merge(
            base,
            ours,
            theirs,
            Store(tmp_path),
            path="m.safetensors",
            choose=lambda cs: {c.name: Choice("average") for c in cs},
        )


def test_rules_first_match_wins_then_config() -> None:
    rules = parse_rules(
        "# comment\n\nclassifier.* take-theirs\n*.safetensors:*.bias\taverage weights=1,3\n"
        "*.pt:* take-base\n"
    )
    auto = Automatic("model.safetensors", rules, fallback_choice("task-arithmetic scale=0.5", {}))
    assert auto.choice("classifier.weight") == (Choice("take-theirs"), ".thetamerge")
    assert auto.choice("encoder.bias") == (Choice("average", {"weights": "1,3"}), ".thetamerge")
    assert auto.choice("encoder.weight") == (
        Choice("task-arithmetic", {"scale": "0.5"}),
        "config",
    )
    assert Automatic("x.pt", rules, None).choice("encoder.weight") == (
        Choice("take-base"),
        ".thetamerge",
    )
    assert Automatic("m.safetensors", [], None).choice("anything") is None


def test_environment_is_the_last_source() -> None:
    env = {"GIT_THETA_MERGE_STRATEGY": "average"}
    assert fallback_choice(None, env) == Choice("average")
    assert fallback_choice("take-ours", env) == Choice("take-ours")
    assert fallback_choice(None, {}) is None


def test_bad_rules_name_the_line() -> None:
    with pytest.raises(MergeError, match=r"\.thetamerge:2"):
        parse_rules("a average\nb\n")
    with pytest.raises(Exception, match="mean"):
        parse_rules("* mean\n")


def _split(data: bytes) -> tuple[list[TensorPart], bytes]:
    parts, skel = [], b""
    for p in SafetensorsFormat().split(ByteSource(io.BytesIO(data)), "x"):
        if isinstance(p, SkeletonPart):
            skel = p.data
        else:
            parts.append(TensorPart(p.spec, memoryview(bytes(p.data))))
    return parts, skel


class _Payloads:
    def __init__(self, values: dict[str, bytes]) -> None:
        self.values = values

    def prefetch(self, names: object) -> None:
        pass

    def write(self, name: str, out: io.BytesIO) -> None:
        out.write(self.values[name])

    def read(self, name: str) -> bytes:
        return self.values[name]


def test_safetensors_respec_rebuilds_a_valid_header_that_splits_back_the_same() -> None:
    fmt = SafetensorsFormat()
    data = save(
        {"b": np.ones(3, np.float32), "a": np.zeros((2, 2), np.float16)},
        metadata={"format": "pt"},
    )
    _parts, skel = _split(data)
    specs = {
        "a": TensorSpec("a", "F32", (2, 2)),  # dtype changed
        "c": TensorSpec("c", "I64", (1,)),  # added ("b" removed)
    }
    new = fmt.respec(skel, specs)
    values = {
        "a": np.arange(4, dtype=np.float32).tobytes(),
        "c": np.array([7], np.int64).tobytes(),
    }
    out = io.BytesIO()
    fmt.join(new, specs, _Payloads(values), out)
    loaded = load(out.getvalue())
    assert sorted(loaded) == ["a", "c"]
    assert loaded["a"].dtype == np.float32 and loaded["a"].tolist() == [[0, 1], [2, 3]]
    assert loaded["c"].tolist() == [7]
    _p, skel_again = _split(out.getvalue())
    assert skel_again == new
    segments, _ = decode_splice(new)
    head = segments[0]
    assert isinstance(head, bytes) and b'"__metadata__":{"format":"pt"}' in head
    assert (len(head) - 8) % 8 == 0
