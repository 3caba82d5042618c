"""invoker's git argv parsing; gc's live set includes nested (chain) objects."""

from __future__ import annotations

import pytest

from git_theta import invoker, maintenance
from git_theta.errors import GitThetaError
from git_theta.manifest import Entry, Manifest
from git_theta.reachability import FoundManifest


@pytest.mark.parametrize(
    ("argv", "sub"),
    [
        (["git", "diff", "HEAD"], "diff"),
        (["/usr/bin/git", "-c", "a.b=c", "--no-pager", "-C", "x", "log", "-p"], "log"),
        (["git", "--git-dir", "d", "show"], "show"),
        (["git", "checkout", "main"], "checkout"),
        (["/usr/lib/git-core/git-diff", "HEAD"], "diff"),
        (["python", "diff"], None),
        ([], None),
    ],
)
def test_git_subcommand(argv: list[str], sub: str | None) -> None:
    assert invoker.git_subcommand(argv) == sub


def test_external_diff_env_forces_a_real_smudge(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_EXTERNAL_DIFF", "git-difftool--helper")
    assert invoker.diff_context() is False


def oid(c: str) -> str:
    return c * 64


def test_live_oids_include_every_nested_base_and_extra() -> None:
    chain = {
        "type": "sparse",
        "indices_oid": oid("1"),
        "values_oid": oid("2"),
        "base": {"type": "low-rank", "a_oid": oid("3"), "base": {"type": "dense", "oid": oid("4")}},
    }
    e = Entry(
        "w",
        "F32",
        (2,),
        "blake3:" + "0" * 64,
        chain,
        {"fisher": {"type": "dense", "oid": oid("5")}},
    )
    m = Manifest("safetensors", oid("6"), 1, (e,))
    live, n = maintenance.live_oids([FoundManifest("b" * 40, "m.safetensors", m)])
    assert n == 1
    assert live == {oid(c) for c in "123456"}


def test_a_malformed_live_manifest_stops_gc() -> None:
    bad = FoundManifest("b" * 40, "m.safetensors", None, "version '2' is not supported")
    with pytest.raises(GitThetaError, match="gc removes nothing"):
        maintenance.live_oids([bad])
