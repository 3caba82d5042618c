"""Each merge strategy on small arrays, with exact expected values."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from git_theta import plugins
from git_theta.errors import MergeError, PluginNotFoundError
from git_theta.merges.base import MergeInput, MergeStrategy


def strategy(name: str) -> MergeStrategy:
    return plugins.load(plugins.MERGES, name)  # type: ignore[no-any-return]


def arr(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float64)


def run(name: str, **kw: object) -> np.ndarray:
    options = kw.pop("options", {})
    inp = MergeInput(name="layer.weight", options=options, **kw)  # type: ignore[arg-type]
    return strategy(name).merge(inp)


def test_the_exact_names_are_installed() -> None:
    assert set(plugins.available(plugins.MERGES)) == {
        "take-ours",
        "take-theirs",
        "take-base",
        "average",
        "fisher",
        "task-arithmetic",
        "ties",
        "dare",
    }


def test_unknown_strategy_lists_the_installed_ones() -> None:
    with pytest.raises(PluginNotFoundError, match="average"):
        strategy("mean")


def test_take_sides() -> None:
    base, ours, theirs = arr(0, 0), arr(1, 2), arr(3, 4)
    assert run("take-ours", base=base, ours=ours, theirs=theirs).tolist() == [1, 2]
    assert run("take-theirs", base=base, ours=ours, theirs=theirs).tolist() == [3, 4]
    assert run("take-base", base=base, ours=ours, theirs=theirs).tolist() == [0, 0]
    assert strategy("take-ours").picks == "ours"
    assert strategy("take-theirs").picks == "theirs"
    assert strategy("take-base").picks == "base"
    with pytest.raises(MergeError, match="both sides added it"):
        run("take-base", ours=ours, theirs=theirs)


def test_average_equal_and_weighted() -> None:
    ours, theirs = arr(1, 2, 3), arr(3, 6, 9)
    assert run("average", ours=ours, theirs=theirs).tolist() == [2, 4, 6]
    got = run("average", ours=ours, theirs=theirs, options={"weights": "1,3"})
    assert got.tolist() == [2.5, 5, 7.5]
    with pytest.raises(MergeError, match="weights"):
        run("average", ours=ours, theirs=theirs, options={"weights": "1"})
    with pytest.raises(MergeError, match="non-negative"):
        run("average", ours=ours, theirs=theirs, options={"weights": "nan,1"})
    with pytest.raises(MergeError, match="finite"):
        run("task-arithmetic", base=ours, ours=ours, theirs=theirs, options={"scale": "inf"})


def test_fisher_weighted_average() -> None:
    ours, theirs = arr(1, 2), arr(3, 4)
    fo, ft = arr(1, 0), arr(3, 0)
    got = run("fisher", ours=ours, theirs=theirs, fisher_ours=fo, fisher_theirs=ft)
    # (1*1 + 3*3) / (1 + 3) = 2.5; where both Fishers are 0, the plain mean 3
    assert got.tolist() == [2.5, 3.0]
    got = run(
        "fisher",
        ours=ours,
        theirs=theirs,
        fisher_ours=fo,
        fisher_theirs=ft,
        options={"weights": "2,1"},
    )
    # (2*1*1 + 1*3*3) / (2*1 + 1*3) = 11/5; plain weighted mean (2*2 + 4) / 3
    assert got.tolist() == pytest.approx([2.2, 8 / 3], abs=0, rel=1e-15)


def test_fisher_without_fisher_names_the_parameter() -> None:
    with pytest.raises(MergeError, match=r"layer\.weight: theirs has no Fisher"):
        run("fisher", ours=arr(1), theirs=arr(2), fisher_ours=arr(1))


def test_task_arithmetic() -> None:
    base, ours, theirs = arr(1, 1), arr(2, 1), arr(1, 4)
    assert run("task-arithmetic", base=base, ours=ours, theirs=theirs).tolist() == [2, 4]
    got = run("task-arithmetic", base=base, ours=ours, theirs=theirs, options={"scale": "0.5"})
    assert got.tolist() == [1.5, 2.5]
    with pytest.raises(MergeError, match="common ancestor"):
        run("task-arithmetic", ours=ours, theirs=theirs)


def test_ties_without_trimming_elects_signs_and_averages_agreeing_deltas() -> None:
    base = arr(0, 0, 0, 0)
    ours, theirs = arr(1, -2, 0.1, 3), arr(-3, 1, 0.2, 1)
    got = run("ties", base=base, ours=ours, theirs=theirs, options={"density": "1"})
    assert got.tolist() == pytest.approx([-3, -2, 0.15, 2], abs=1e-15)


def test_ties_trims_each_delta_to_its_largest_magnitudes() -> None:
    base = arr(10, 10, 10, 10)
    ours, theirs = base + arr(1, -2, 0.1, 3), base + arr(-3, 1, 0.2, 1)
    got = run("ties", base=base, ours=ours, theirs=theirs, options={"density": "0.5"})
    # ours keeps -2, 3; theirs keeps -3, 1, 1 (ties at the threshold); signs - - 0 +
    assert got.tolist() == [7, 8, 10, 12]
    got = run("ties", base=base, ours=ours, theirs=theirs, options={"density": "0.5", "scale": "2"})
    assert got.tolist() == [4, 6, 10, 14]


def test_dare_with_density_one_is_task_arithmetic() -> None:
    base, ours, theirs = arr(1, 1), arr(2, 1), arr(1, 4)
    got = run("dare", base=base, ours=ours, theirs=theirs, options={"density": "1"})
    assert got.tolist() == [2, 4]


def _expected_dare(base: np.ndarray, ours: np.ndarray, theirs: np.ndarray, seed: int) -> np.ndarray:
    # the documented procedure: PCG64 seeded by sha256("<seed>:<name>"), ours' mask first
    digest = hashlib.sha256(f"{seed}:layer.weight".encode()).digest()
    rng = np.random.Generator(np.random.PCG64(int.from_bytes(digest[:8], "little")))
    keep_o = rng.random(base.shape) < 0.5
    keep_t = rng.random(base.shape) < 0.5
    total = np.where(keep_o, (ours - base) / 0.5, 0.0)
    total = total + np.where(keep_t, (theirs - base) / 0.5, 0.0)
    return base + 1.0 * total


def test_dare_is_seeded_and_reproducible() -> None:
    rng = np.random.default_rng(0)
    base, ours, theirs = (rng.standard_normal(64) for _ in range(3))
    a = run("dare", base=base, ours=ours, theirs=theirs, options={"seed": "7"})
    b = run("dare", base=base, ours=ours, theirs=theirs, options={"seed": "7"})
    c = run("dare", base=base, ours=ours, theirs=theirs, options={"seed": "8"})
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, _expected_dare(base, ours, theirs, 7))
    assert not np.array_equal(a, c)
    # every element is the base plus a subset of the rescaled deltas
    do, dt = (ours - base) * 2, (theirs - base) * 2
    options = np.stack([base, base + do, base + dt, base + do + dt])
    assert np.all(np.isclose(options, a, rtol=0, atol=1e-12).any(axis=0))


def test_unknown_options_are_refused() -> None:
    from git_theta.merge_driver import parse_choice

    with pytest.raises(MergeError, match="has no option density"):
        parse_choice("average density=0.3")
    choice = parse_choice("ties density=0.3 scale=2")
    assert choice.strategy == "ties"
    assert dict(choice.options) == {"density": "0.3", "scale": "2"}
    assert choice.render() == "ties density=0.3 scale=2"
