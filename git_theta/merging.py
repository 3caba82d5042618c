"""Merges as git runs them: the driver command, `git theta resolve` and its `--export`.

Glue between git (through git.py), the terminal menu, the rules, and the pure three-way
merge in merge_driver.py.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from git_theta import git, manifest, materialize
from git_theta.errors import MergeError, NotARepositoryError
from git_theta.manifest import Manifest
from git_theta.merge_driver import Choice, Chooser, Conflict, describe, merge
from git_theta.merge_rules import CONFIG_KEY, Automatic, fallback_choice, load_rules
from git_theta.store import Store


def parse_side(data: bytes, path: str, label: str) -> Manifest | None:
    """A side's manifest; None for an empty base (the sides added the file independently)."""
    if not data and label == "base":
        return None
    if not manifest.is_manifest(data):
        raise MergeError(
            f"{path}: the {label} version is not a git-theta manifest (committed before the "
            "file was tracked?)",
            hint=f"take one side with `git checkout --ours/--theirs {path}` and `git add` it",
        )
    return manifest.parse(data, f"{path} ({label})")


def make_chooser(
    store: Store,
    root: Path | None,
    path: str,
    *,
    forced: Choice | None = None,
    interactive: bool = True,
) -> Chooser:
    """The strategy source, first match wins: `forced` (resolve --strategy), the terminal
    menu, the rules file, `git config theta.merge.strategy`, GIT_THETA_MERGE_STRATEGY."""
    if forced is not None:

        def everything(conflicts: Sequence[Conflict]) -> Mapping[str, Choice]:
            return {c.name: forced for c in conflicts}

        return everything
    automatic = Automatic(
        path,
        load_rules(root) if root is not None else [],
        fallback_choice(git.config_get(CONFIG_KEY, cwd=root)),
    )
    from git_theta import merge_menu

    if not (interactive and merge_menu.interactive_allowed()):
        return automatic

    def menu(conflicts: Sequence[Conflict]) -> Mapping[str, Choice]:
        tty = merge_menu.open_tty()
        if tty is None:
            return automatic(conflicts)
        reader, writer = tty
        with reader, writer:
            m = merge_menu.Menu(
                tty, path=path, describe=lambda c: describe(store, c, path), automatic=automatic
            )
            return m(conflicts)

    return menu


def run_driver(base_file: str, ours_file: str, theirs_file: str, path: str, store: Store) -> int:
    """git's `merge.theta.driver %O %A %B %P`: write the merged manifest over %A.

    Returns the number of conflicts merged by a strategy. Raises (and leaves %A as ours)
    when the merge cannot be completed, which git reports as a conflict.
    """
    sides = [Path(f).read_bytes() for f in (base_file, ours_file, theirs_file)]
    base, ours, theirs = (
        parse_side(data, path, label)
        for data, label in zip(sides, ("base", "ours", "theirs"), strict=True)
    )
    assert ours is not None and theirs is not None
    try:
        root: Path | None = git.toplevel()
    except NotARepositoryError:  # a bare repository (`git merge-tree`): no rules file
        root = None
    counted: list[int] = []
    chooser = make_chooser(store, root, path)

    def counting(conflicts: Sequence[Conflict]) -> Mapping[str, Choice]:
        counted.append(len(conflicts))
        return chooser(conflicts)

    merged = merge(base, ours, theirs, store, path=path, choose=counting)
    _write_atomic(Path(ours_file), merged.render())
    return sum(counted)


def _write_atomic(target: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".theta-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, target)


# -- after a conflict: `git theta resolve` ----------------------------------------------------


def _repo_path(path: str) -> tuple[Path, str]:
    root = git.toplevel()
    rel = os.path.relpath(os.path.abspath(path), root)
    if rel.startswith(".."):
        raise MergeError(f"{path} is outside the repository at {root}")
    return root, Path(rel).as_posix()


def _stages(root: Path, rel: str) -> dict[int, tuple[str, bytes]]:
    entries = git.index_entries(rel, cwd=root)
    if not any(s in entries for s in (1, 2, 3)):
        raise MergeError(
            f"{rel} is not in conflict",
            hint="`git theta resolve` is for checkpoints a merge left conflicted",
        )
    out = {}
    for stage, (mode, oid) in entries.items():
        data = git.show_blob(oid, cwd=root)
        if data is None:
            raise MergeError(f"{rel}: blob {oid} of stage {stage} is missing")
        out[stage] = (mode, data)
    return out


def resolve(path: str, store: Store, *, forced: Choice | None) -> tuple[str, int]:
    """Merge the conflicted PATH from its index stages, write it, stage it.

    Returns (repository-relative path, number of conflicts merged by a strategy).
    """
    root, rel = _repo_path(path)
    stages = _stages(root, rel)
    for stage, label in ((2, "ours"), (3, "theirs")):
        if stage not in stages:
            raise MergeError(
                f"{rel}: {label} deleted the file, so there is nothing to merge",
                hint=f"keep it with `git add {rel}` or delete it with `git rm {rel}`",
            )
    base = parse_side(stages[1][1], rel, "base") if 1 in stages else None
    ours = parse_side(stages[2][1], rel, "ours")
    theirs = parse_side(stages[3][1], rel, "theirs")
    assert ours is not None and theirs is not None
    counted: list[int] = []
    chooser = make_chooser(store, root, rel, forced=forced)

    def counting(conflicts: Sequence[Conflict]) -> Mapping[str, Choice]:
        counted.append(len(conflicts))
        return chooser(conflicts)

    merged = merge(base, ours, theirs, store, path=rel, choose=counting).render()
    materialize.write_checkpoint(root / rel, merged, store, name=rel)
    oid = git.hash_object(merged, cwd=root)
    git.stage_blob(rel, oid, stages[2][0], cwd=root)
    return rel, sum(counted)


def export(path: str, store: Store, out_dir: Path) -> list[Path]:
    """Write the base, ours and theirs versions of conflicted PATH as real checkpoints.

    Files are named `<stem>.base<suffix>`, `.ours`, `.theirs` in `out_dir`; a side that
    does not exist (no common ancestor, or deleted) is skipped.
    """
    root, rel = _repo_path(path)
    stages = _stages(root, rel)
    name = Path(rel)
    written = []
    for stage, label in ((1, "base"), (2, "ours"), (3, "theirs")):
        if stage not in stages:
            continue
        target = out_dir / f"{name.stem}.{label}{name.suffix}"
        materialize.write_checkpoint(target, stages[stage][1], store, name=rel)
        written.append(target)
    return written
